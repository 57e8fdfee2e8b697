"""train-assistant / distill on a few real posts: the pipeline runs, saves scorable parts, resumes."""

import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from mulcot_batch.prompts import format_chain
from mulcot_batch.training.data import load_examples, short_chain
from mulcot_batch.training.loop import TrainConfig
from mulcot_batch.training.recipes import TrainOptions, train_nano

from .conftest import SAMPLE, read_output, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Train/dev splits and a few chains from the sample dump, with a bad row of each kind."""
    posts = pl.read_parquet(SAMPLE / "posts.parquet").rename({"gold_label": "label"}).drop("created_at")
    fields = {"text_analysis": "The text is calm.", "image_analysis": "The image is plain.",
              "conflict_resolution": "No conflict.", "final_conclusion": "Overall it is neutral."}
    chains = posts.head(4).with_columns(pl.lit(format_chain(fields, "neutral")).alias("rationale"))
    bad = pl.DataFrame({"post_id": [None, "dup", "dup", "odd"], "text": ["x"] * 4, "aspect": [None] * 4,
                        "image_path": [None] * 4, "label": ["neutral", "neutral", "neutral", "happy"]})
    train, dev, chain_file = tmp_path / "train.parquet", tmp_path / "dev.parquet", tmp_path / "chains.parquet"
    pl.concat([posts.slice(10, 12), bad], how="diagonal_relaxed").write_parquet(train)
    posts.slice(40, 6).write_parquet(dev)
    chains.write_parquet(chain_file)
    shutil.copytree(SAMPLE / "images", tmp_path / "images")
    return train, dev, chain_file


def test_training_rules_skip_bad_rows(labelled):
    from collections import Counter

    counts = Counter()
    examples = load_examples(labelled[0], counts=counts)
    assert len(examples) == 13 and counts["skipped: null id"] == 1
    assert sum(e.image is not None for e in examples) >= 10  # real images, resolved under the data folder
    assert counts["skipped: duplicate id"] == 1 and counts["skipped: unknown label"] == 1


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
    from mulcot_batch.training.batches import build_sequences
    from mulcot_batch.training.data import Example
    from mulcot_batch.training.recipes import COMPACT_TASKS, COMPACT_TEMPLATE
    from mulcot_batch.weights import smollm2_folder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    preparer = NanoPreparer(NanoConfig(template=COMPACT_TEMPLATE, tasks=COMPACT_TASKS), tokenizer)
    chain = format_chain({"text_analysis": "Bad.", "image_analysis": "Grey.", "conflict_resolution": "None.",
                          "final_conclusion": "Sad."}, "negative")
    seqs = build_sequences([Example("a", "rain again", "Monday", None, "negative", chain)], preparer, False, 64)
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
                        lora_r=4, chain_holdout=0.25, max_chain_tokens=48, chain_repeats=2, config=config)
    summary = train_nano(opts, log=lambda m: None)
    run = tmp_path / "run"
    assert summary["best_epoch"] == 1 and (run / "metrics.jsonl").is_file()
    assert {p.name for p in (run / "best").iterdir()} >= {"nano.json", "projector.safetensors", "adapter"}
    assert (run / "heldout_chains.parquet").is_file() and (run / "checkpoint.pt").is_file()
    adapter = load_file(run / "best" / "adapter" / "adapter_model.safetensors")
    assert {t.dtype for t in adapter.values()} == {torch.bfloat16}  # shipped at half the size of fp32
    result = run_cli("score", dev, "--out", tmp_path / "scored", "--model", run / "best", "--rationales", "all",
                     "--max-new-tokens", "4", "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.output
    scored = read_output(tmp_path / "scored")
    assert scored.height == 6 and scored["model"].unique().to_list() == ["nano:run/best"]
    assert scored["rationale"].null_count() == 0  # label-conditioned chain prompts, one per row
    again = train_nano(opts, log=lambda m: None)  # finished run: resumes from its checkpoint, trains nothing more
    assert again["best_epoch"] == 1 and len((run / "metrics.jsonl").read_text().splitlines()) == 1
