"""Labelled posts for the teacher: read, checked up front, and bad rows skipped by rule.

A bad job (input missing, not Parquet, a required column absent) stops before any request. A bad
row never does: it is skipped with a reason that lands in the output's `error` column and is
counted in the summary. The rules, in order:

- null or empty id: skipped; a repeated id: every row after the first is skipped;
- a label that is not positive/neutral/negative (any case): skipped;
- an image path that is missing, outside the image root, unreadable or too large: skipped, since a
  chain must analyse the image the post really has (a null path is a text-only post, and is kept);
- neither text nor image: skipped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from PIL import Image

from ..errors import JobError, missing_column
from ..images import load_image, resolve_under
from ..metrics.labels import normalise_label
from ..reading import Columns

#: Canonical column names of the annotate output (those of rationales.parquet).
POST_ID, TEXT, ASPECT, IMAGE_PATH, LABEL = "post_id", "text", "aspect", "image_path", "label"
#: Formats every OpenAI-compatible server takes as a data URL; others are re-encoded as PNG.
SENDABLE = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class InputColumns(Columns):
    """The scoring roles plus the gold label the teacher is checked against."""

    label: str = "label"


@dataclass(frozen=True)
class Work:
    """A post the teacher is asked about."""

    row: int
    post_id: str
    text: str
    aspect: str | None
    image_file: Path | None
    label: str


@dataclass
class Triage:
    frame: pl.DataFrame  # every input row, canonical column names
    work: list[Work] = field(default_factory=list)
    skipped: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> (rule, reason)


def read_posts(path: Path, columns: InputColumns, limit: int | None) -> pl.DataFrame:
    """The input under canonical names; id, text and label columns are required."""
    if not path.is_file():
        raise JobError(f"input not found: {path}")
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several types for non-Parquet files
        raise JobError(f"not a readable Parquet file: {path} ({exc})") from None
    for role, name in (("id", columns.id), ("text", columns.text), ("label", columns.label)):
        if name not in names:
            raise missing_column(f"input {path}", name, names, f"name the right one with --{role}-col")
    frame = pl.read_parquet(path, n_rows=limit)

    def column(name: str) -> pl.Expr:
        return pl.col(name).cast(pl.String) if name in names else pl.lit(None, pl.String)

    return frame.select(
        column(columns.id).alias(POST_ID),
        column(columns.text).alias(TEXT),
        column(columns.aspect).alias(ASPECT),
        column(columns.image).alias(IMAGE_PATH),
        column(columns.label).alias(LABEL),
    )


def triage(frame: pl.DataFrame, image_root: Path) -> Triage:
    """Which rows are asked about, and why every other row is skipped."""
    result = Triage(frame)
    seen: dict[str, int] = {}
    for row, post in enumerate(frame.iter_rows(named=True)):
        post_id, label = post[POST_ID], normalise_label(post[LABEL])
        if not post_id or not post_id.strip():
            result.skipped[row] = ("null id", "skipped: null or empty id")
        elif post_id in seen:
            result.skipped[row] = ("duplicate id", f"skipped: duplicate id (row {seen[post_id]} kept)")
        elif label is None:
            result.skipped[row] = ("unknown label", f"skipped: label {post[LABEL]!r} is not positive/neutral/negative")
        else:
            seen[post_id] = row
            outcome = _check_post(row, post, label, image_root)
            if isinstance(outcome, Work):
                result.work.append(outcome)
            else:
                result.skipped[row] = outcome
    return result


def _check_post(row: int, post: dict, label: str, image_root: Path) -> Work | tuple[str, str]:
    text = (post[TEXT] or "").strip()
    image_file = None
    if post[IMAGE_PATH] and post[IMAGE_PATH].strip():
        loaded = load_image(post[IMAGE_PATH], image_root, target_size=64)
        if loaded.status != "ok":
            rule = "missing image" if loaded.status in ("missing", "outside_root") else "unreadable image"
            return rule, f"skipped: {loaded.detail or loaded.status}"
        image_file = resolve_under(image_root, post[IMAGE_PATH])
    if not text and image_file is None:
        return "empty post", "skipped: neither text nor image"
    return Work(row, post[POST_ID], text, post[ASPECT] or None, image_file, label)


def image_payload(path: Path) -> tuple[bytes, str]:
    """The file's own bytes when servers take its format, else a PNG of it; and the MIME type."""
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as image:
        if image.format in SENDABLE:
            return raw, SENDABLE[image.format]
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "PNG")
    return buffer.getvalue(), "image/png"
