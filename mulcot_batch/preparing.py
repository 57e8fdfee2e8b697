"""CPU-side preparation in DataLoader worker processes: images, prompts, tokens.

Chunks are dealt out round-robin, first across accelerate ranks and then across the DataLoader
workers of a rank, so no chunk is prepared twice. Identical posts (same text, image and aspect,
e.g. retweets) are prepared once per chunk and scored once.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .errors import JobError
from .images import load_image
from .reading import ASPECT, ID, IMAGE, TEXT, Chunk, Columns, InputPlan, iter_chunks
from .students.base import Post, PreparedPost, Preparer


@dataclass
class PreparedChunk:
    """One input chunk, ready for the model: unique posts plus how rows map onto them."""

    key: str
    table: pa.Table
    posts: list[PreparedPost] = field(default_factory=list)
    post_of_row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # -1: error row
    image_status: list[str] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)


@dataclass
class ChunkSource:
    """Everything a worker needs to rebuild the chunk stream on its own (picklable)."""

    plan: InputPlan
    columns: Columns
    chunk_rows: int
    limit: int | None
    image_root: Path | None  # None: each input file's own folder
    image_size: int
    done: frozenset[str]
    rank: int = 0
    world_size: int = 1
    dedup: bool = True  # False: every row is prepared and scored, repeats included


class ChunkDataset(IterableDataset):
    """Yields `PreparedChunk`s owned by this rank and worker, skipping chunks already done."""

    def __init__(self, source: ChunkSource, preparer: Preparer) -> None:
        self.source = source
        self.preparer = preparer

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        src = self.source
        try:
            for ordinal, chunk in enumerate(iter_chunks(src.plan, src.columns, src.chunk_rows, src.limit)):
                if ordinal % src.world_size != src.rank or (ordinal // src.world_size) % workers != worker:
                    continue
                if chunk.key in src.done:
                    continue
                yield prepare_chunk(chunk, self.preparer, self._root(chunk), src.image_size, src.dedup)
        except JobError as exc:  # handed to the main process as an item: it stops the job with this one line
            yield exc

    def _root(self, chunk: Chunk) -> Path:
        return self.source.image_root or self.source.plan.files[chunk.file_index].parent


def prepare_chunk(chunk: Chunk, preparer: Preparer, image_root: Path, image_size: int, dedup: bool = True) -> PreparedChunk:
    """Decode, prompt and tokenize every distinct post of a chunk; mark rows that cannot be scored.

    With `dedup=False` every row is its own post (what a plain loop does with retweets).
    """
    out = PreparedChunk(key=chunk.key, table=chunk.table)
    ids = chunk.table[ID].to_pylist()
    texts = chunk.table[TEXT].to_pylist()
    images = chunk.table[IMAGE].to_pylist()
    aspects = chunk.table[ASPECT].to_pylist()
    seen: dict[tuple, int] = {}
    status_of: dict[tuple, tuple[str, str | None]] = {}
    post_of_row = np.full(len(ids), -1, dtype=np.int64)
    for row, (post_id, text, image, aspect) in enumerate(zip(ids, texts, images, aspects)):
        key = (_encodable(text or ""), _encodable(image or ""), _encodable(aspect or ""))
        if not dedup:
            key = (*key, row)  # the row number makes every row distinct
        if key not in status_of:
            status_of[key] = _prepare_one(key, preparer, image_root, image_size, out.posts, seen)
        image_status, error = status_of[key]
        if post_id is None:
            error = "post id is null"
        out.image_status.append(image_status)
        out.errors.append(error)
        if error is None:
            post_of_row[row] = seen[key]
    out.post_of_row = post_of_row
    return out


def _encodable(value: str) -> str:
    """Lone surrogates (possible in a Python str, never in Arrow data) become U+FFFD.

    Tokenizers refuse such strings outright; rows read from Parquet are already valid UTF-8
    (`reading` replaces undecodable bytes), so this only guards posts built in Python.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _prepare_one(
    key: tuple[str, str, str],
    preparer: Preparer,
    image_root: Path,
    image_size: int,
    posts: list[PreparedPost],
    seen: dict[tuple, int],
) -> tuple[str, str | None]:
    text, image_value, aspect = key[:3]
    loaded = load_image(image_value or None, image_root, image_size)
    if not text.strip() and loaded.image is None:
        reason = "empty text and no usable image" + (f" ({loaded.detail})" if loaded.detail else "")
        return loaded.status, reason
    try:
        prepared = preparer.prepare(Post(text=text, aspect=aspect or None, image=loaded.image))
    except Exception as exc:  # a post the preparer cannot handle is an error row, not a dead job
        return loaded.status, f"could not prepare post: {type(exc).__name__}: {exc}"
    seen[key] = len(posts)
    posts.append(prepared)
    return loaded.status, None


def _keep_chunk(item: PreparedChunk) -> PreparedChunk:
    return item


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)  # workers share the cores with the model; one each is plenty
    # Ctrl-C reaches the whole process group; the main process decides when to stop (after the
    # chunk in flight) and shuts the workers down itself, so a worker must not die of it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def chunk_loader(source: ChunkSource, preparer: Preparer, workers: int) -> DataLoader:
    """A DataLoader over prepared chunks; workers keep the next chunks ready while the model runs.

    Items are `PreparedChunk`s, or a `JobError` that a worker met (a damaged input file), which the
    consumer raises.
    """
    return DataLoader(
        ChunkDataset(source, preparer),
        batch_size=None,
        num_workers=workers,
        collate_fn=_keep_chunk,
        worker_init_fn=_init_worker if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
