"""Per `--by` key, the rows the grouped tables read: (row, group, bucket, light score columns).

Each key is read three times (its groups, its per-group series, its exemplar picks). For a column
key that is three cheap column scans. Hashtags and mentions come from a regex over every text,
the most expensive step of a report, so their (post, tag) pairs are extracted once and spilled to
a temporary Parquet file beside the report (streamed, never held in memory) that the three reads
then scan instead.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .archive import ROW, ScoredArchive
from .keys import GROUP, GroupKey
from .timeaxis import TimeAxis

LIGHT = ["status", "label", "p_positive", "p_neutral", "p_negative", "confidence"]


def key_frame(archive: ScoredArchive, key: GroupKey, axis: TimeAxis | None, workdir: Path) -> pl.LazyFrame:
    """A lazy frame with `__row`, `group`, the light score columns and (with a time axis) `bucket`."""
    columns = [pl.col(ROW), *(pl.col(c) for c in LIGHT), key.group_expr()]
    if axis is not None:
        columns.append(axis.bucket_expr())
    frame = archive.scan(row_index=True).select(columns)
    if not key.multi:
        return frame
    spill = workdir / f"{key.file_stem}.parquet"
    frame.explode(GROUP).sink_parquet(spill, compression="lz4")
    return pl.scan_parquet(spill)
