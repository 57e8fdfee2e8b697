"""One pass over the scored parts into a compact digest that every table then reads.

A scored archive is often tens of thousands of small part files (`score` writes one per
`--chunk-rows` chunk, 256 rows by default), and opening them costs more than their rows: polars
spends about a millisecond per file per scan. So the parts are read exactly once, streamed into one
temporary Parquet file beside the report (never held in memory), with only what the tables need:
the light score columns, the error reason, the time, each `--by` key's value (hashtags and
mentions as lists: the costly regex also runs once), and each chain's text and image sentiment
(modality.py) instead of the chain itself. The rows keep their row index, so exemplars can fetch
their full text and chain from the parts afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .archive import ROW, ScoredArchive
from .keys import GROUP, GroupKey
from .measures import OK
from .modality import IMAGE_SENTIMENT, TEXT_SENTIMENT, field_sentiment
from .timeaxis import BUCKET, TimeAxis

LIGHT = ["status", "label", "p_positive", "p_neutral", "p_negative", "confidence"]
TIME = "__time"
HAS_CHAIN = "__has_chain"
DIGEST_FILE = "digest.parquet"


@dataclass(frozen=True)
class Digest:
    path: Path
    key_columns: dict[str, str]  # `--by` name -> its column in the digest
    every: str | None  # the time bucket; None without a time axis

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.path)

    def bucket_expr(self) -> pl.Expr:
        """The start of the `--every` bucket each post falls in (polars `dt.truncate` alignment)."""
        return pl.col(TIME).dt.truncate(self.every).alias(BUCKET)

    def key_frame(self, key: GroupKey) -> pl.LazyFrame:
        """`__row`, `group`, the light score columns and (with a time axis) `bucket`, one row per
        (post, group) pair: a post with two hashtags is in both groups."""
        columns = [pl.col(ROW), *(pl.col(c) for c in LIGHT), pl.col(self.key_columns[key.name]).alias(GROUP)]
        if self.every is not None:
            columns.append(self.bucket_expr())
        frame = self.scan().select(columns)
        return key.explode(frame) if key.multi else frame


def build_digest(archive: ScoredArchive, keys: list[GroupKey], axis: TimeAxis | None, workdir: Path) -> Digest:
    """Stream the parts once into `workdir/digest.parquet`."""
    key_columns = {key.name: f"__key{i}" for i, key in enumerate(keys)}
    columns = [
        pl.col(ROW),
        *(pl.col(c) for c in LIGHT),
        pl.when(~OK).then(pl.col("error")).alias("error"),
        pl.col("rationale").is_not_null().alias(HAS_CHAIN),
        field_sentiment("text_analysis").alias(TEXT_SENTIMENT),
        field_sentiment("image_analysis").alias(IMAGE_SENTIMENT),
        *(key.group_expr().alias(key_columns[key.name]) for key in keys),
    ]
    if axis is not None:
        columns.append(axis.timestamps.alias(TIME))
    path = workdir / DIGEST_FILE
    archive.scan(row_index=True).select(columns).sink_parquet(path, compression="lz4")
    return Digest(path, key_columns, axis.every if axis is not None else None)
