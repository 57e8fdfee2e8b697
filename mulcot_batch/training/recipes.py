"""`train-assistant` and `distill` for the nano family: data, model, teacher logits, trainer.

The assistant is the same architecture with the whole LM fine-tuned (stronger, 540 MB, kept in
its work folder); the student trains only a LoRA adapter and the projector (small enough to ship
inside the package) on the same two tasks, plus distillation from the assistant's label logits.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl
import torch
from safetensors.torch import load_file, save_file

from .. import weights
from ..errors import JobError
from ..students.base import label_token_ids
from ..students.nano import NanoConfig, NanoModel, NanoPreparer, NanoStudent, load_encoder
from .batches import build_sequences, collate
from .data import Example, ImageFeatureCache, load_examples
from .loop import Trainer, TrainConfig, predict

COMPACT_TEMPLATE = "<|im_start|>user\n{task}\nText: {text}\nImage: {image}<|im_end|>\n<|im_start|>assistant\n"
COMPACT_TASKS = {
    "label_msc": "Sentiment of the post:",
    "label_masc": "Sentiment toward {aspect}:",
    "reason_msc": "Explain why the sentiment of the post is {label}.",
    "reason_masc": "Explain why the sentiment toward {aspect} is {label}.",
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainOptions:
    """Options of `train-assistant` and `distill`; a job file's tables use the same names."""

    train: str
    dev: str
    out: str
    chains: str | None = None
    image_root: str | None = None  # default: each data file's folder
    chain_holdout: float = 0.2
    use_images: bool = True
    lora_r: int = 0  # 0: fine-tune the whole LM
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    assistant: str | None = None  # a trained assistant folder (its `best/`) to distil from
    max_chain_tokens: int = 384
    chain_style: str = "full"  # or "short": the first sentence of each teacher field
    chain_repeats: int = 1  # chain sequences per chain and epoch
    dev_limit: int | None = None
    train_limit: int | None = None
    threads: int = 0
    config: TrainConfig = field(default_factory=TrainConfig)


def chain_split(post_id: str, holdout: float) -> bool:
    """True when a chain is kept aside for measuring: a hash of the id, the same in every stage."""
    digest = int(hashlib.sha1(post_id.encode()).hexdigest()[:8], 16)
    return digest % 10_000 < holdout * 10_000


def train_nano(opts: TrainOptions, log: Callable[[str], None] = print) -> dict:
    """Train one nano-family model end to end; returns the run summary (also written as run.json)."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.config.seed)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    train = _limit(load_examples(Path(opts.train), _root(opts), None, counts), opts.train_limit)
    chains = _chain_examples(opts, out, counts)
    dev = _limit(load_examples(Path(opts.dev), _root(opts), None, Counter()), opts.dev_limit)
    log(f"training data: {len(train)} labelled posts, {len(chains)} chains; rules applied: {dict(counts)}")

    model, tokenizer, peft_model = build_model(opts)
    preparer = NanoPreparer(model.config, tokenizer)
    features = ImageFeatureCache(out.parent / "image_features.pt")
    started = time.perf_counter()
    features.ensure([e.image for e in train + chains + dev] if opts.use_images else [], preparer.pixels, model.image_features)
    log(f"image features ready ({len(features.features)} images, {time.perf_counter() - started:.0f} s)")

    examples = train + chains
    label_ids = label_token_ids(tokenizer)
    sequences = build_sequences(train, preparer, opts.use_images, opts.max_chain_tokens, reasoning=False)
    offset = len(train)
    for seq in build_sequences(chains, preparer, opts.use_images, opts.max_chain_tokens):
        if seq.task == "reason":
            seq.example += offset
            sequences.extend([seq] * max(opts.chain_repeats, 1))
    teacher = _teacher_logits(opts, examples, out, log) if opts.config.w_kd > 0 else None
    pad = tokenizer.pad_token_id
    make_batch = lambda idx: collate(sequences, idx, examples, features, pad, teacher)  # noqa: E731
    dev_seqs = build_sequences(dev, preparer, opts.use_images, 0, reasoning=False)
    dev_batches = [collate(dev_seqs, idx, dev, features, pad) for idx in _in_order(dev_seqs, 32)]

    save = lambda folder: save_parts(model, peft_model, folder, opts)  # noqa: E731
    trainer = Trainer(model, sequences, make_batch, dev_batches, label_ids, opts.config, out, save, log)
    state = trainer.fit()
    summary = {
        "options": {k: v for k, v in asdict(opts).items() if k != "config"},
        "config": asdict(opts.config),
        "data": dict(counts),
        "best_epoch": state.best_epoch,
        "best_dev_score": state.best_score,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _root(opts: TrainOptions) -> Path | None:
    return Path(opts.image_root) if opts.image_root else None


def _limit(items: list, limit: int | None) -> list:
    return items[:limit] if limit else items


def _in_order(sequences, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, len(sequences)))) for i in range(0, len(sequences), size)]


def _chain_examples(opts: TrainOptions, out: Path, counts: Counter) -> list[Example]:
    """Training chains; the held-out share is written beside the model for measuring it later."""
    if not opts.chains:
        return []
    chain_counts: Counter = Counter()
    all_chains = load_examples(Path(opts.chains), _root(opts), "rationale", chain_counts, opts.chain_style)
    counts.update({f"chains {k}": v for k, v in chain_counts.items()})
    held = {e.post_id for e in all_chains if chain_split(e.post_id, opts.chain_holdout)}
    source = pl.read_parquet(opts.chains)
    source.filter(pl.col("post_id").is_in(list(held))).write_parquet(out / "heldout_chains.parquet")
    return [e for e in all_chains if e.post_id not in held]


def build_model(opts: TrainOptions) -> tuple[NanoModel, object, object | None]:
    """A fresh nano model: compact template, full-LM or LoRA training, projector always trained."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm_dir = weights.smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    kind = f"LoRA r={opts.lora_r}" if opts.lora_r else "full fine-tune"
    config = NanoConfig(
        template=COMPACT_TEMPLATE,
        tasks=COMPACT_TASKS,
        trained=True,
        notes=f"trained by mulcot-batch ({kind}, images {'on' if opts.use_images else 'off'}, "
        f"KD weight {opts.config.w_kd})",
    )
    model = NanoModel(config, load_encoder(), lm)
    peft_model = None
    if opts.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout, target_modules=LORA_TARGETS)
        peft_model = get_peft_model(lm, lora)  # injects LoRA layers into `lm` in place, freezes the rest
    model.encoder.requires_grad_(False)
    model.projector.requires_grad_(True)
    return model, tokenizer, peft_model


def save_parts(model: NanoModel, peft_model, folder: Path, opts: TrainOptions) -> None:
    """The deliverable: nano.json + projector, and a LoRA adapter or the whole LM's weights."""
    folder.mkdir(parents=True, exist_ok=True)
    projector = {k: v.detach().float().contiguous() for k, v in model.projector.state_dict().items()}
    save_file(projector, folder / "projector.safetensors")
    model.config.save(folder)
    if peft_model is not None:
        peft_model.save_pretrained(folder / "adapter")
        _adapter_to_bf16(folder / "adapter" / "adapter_model.safetensors")
    else:
        state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.lm.state_dict().items() if k != "lm_head.weight"}
        save_file(state, folder / "lm.safetensors")


def _adapter_to_bf16(path: Path) -> None:
    """Halve the shipped adapter: inference runs in bf16 anyway, and peft upcasts on load if needed."""
    tensors = load_file(path)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, path)


def _teacher_logits(opts: TrainOptions, examples: list[Example], out: Path, log) -> torch.Tensor:
    """The assistant's label logits for every training post, computed once and cached."""
    if not opts.assistant:
        raise JobError("distillation (w_kd > 0) needs --assistant, a trained assistant folder")
    cache = out / "teacher_logits.pt"
    ids = [e.post_id for e in examples]
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["ids"] == ids and saved["assistant"] == str(opts.assistant):
            return saved["logits"]
    started = time.perf_counter()
    assistant = NanoStudent.load(Path(opts.assistant), dtype=torch.float32)
    preparer = assistant.preparer()
    features = ImageFeatureCache(out.parent / "image_features.pt")
    features.ensure([e.image for e in examples] if opts.use_images else [], preparer.pixels, assistant.model.image_features)
    seqs = build_sequences(examples, preparer, opts.use_images, 0, reasoning=False)
    batches = [collate(seqs, idx, examples, features, assistant.tokenizer.pad_token_id) for idx in _in_order(seqs, 32)]
    logits, _ = predict(assistant.model, batches, assistant.label_ids, opts.config.bf16)
    logits = torch.from_numpy(logits)
    torch.save({"ids": ids, "assistant": str(opts.assistant), "logits": logits}, cache)
    log(f"assistant logits for {len(ids)} posts in {time.perf_counter() - started:.0f} s")
    return logits

