"""Representative posts: the most confident per label (overall and per top group), and the least
confident per label as a review queue.

Picking reads only light columns (row index, label, confidence, the key); the chains and texts of
the few picked rows are fetched in one more scan, so long rationale strings are never held for the
whole archive. Ties in confidence go to the earlier row, so the same archive gives the same picks.
"""

from __future__ import annotations

import polars as pl

from ..schema import CHAIN_FIELDS, LABELS
from .archive import ROW, ScoredArchive
from .keys import GROUP, GroupKey
from .measures import OK
from .tables import BY, collect, top_groups
from .timeaxis import TimeAxis

MOST, LEAST = "most_confident", "least_confident"
KIND_ORDER = {MOST: 0, LEAST: 1}
PICK_COLUMNS = ["kind", BY, GROUP, "label", ROW]


def exemplar_table(
    archive: ScoredArchive,
    keys: dict[GroupKey, pl.DataFrame],
    top: int,
    per_label: int,
    text_col: str,
    axis: TimeAxis | None,
) -> pl.DataFrame:
    """Picked posts with their text (when kept), scores and chain, ranked within their pick."""
    picks = _all_picks(archive, keys, top, per_label)
    rows = collect(
        archive.scan(row_index=True)
        .filter(pl.col(ROW).is_in(picks[ROW].unique().implode()))
        .select(ROW, *_display_columns(archive, text_col, axis))
    )
    table = picks.join(rows, on=ROW, how="left")
    confident_first = pl.when(pl.col("kind") == MOST).then(-pl.col("confidence")).otherwise(pl.col("confidence"))
    table = table.sort(
        [pl.col("kind").replace_strict(KIND_ORDER, return_dtype=pl.Int8), pl.col(BY), pl.col(GROUP),
         pl.col("label").replace_strict({l: i for i, l in enumerate(LABELS)}, return_dtype=pl.Int8),
         confident_first, pl.col(ROW)],
        nulls_last=False,
    )  # fmt: skip
    rank = pl.int_range(1, pl.len() + 1).over("kind", BY, GROUP, "label").cast(pl.Int32).alias("rank")
    return table.with_columns(rank).select(
        "kind", BY, GROUP, "label", "rank", *(c for c in table.columns if c not in PICK_COLUMNS)
    )


def _all_picks(archive: ScoredArchive, keys: dict[GroupKey, pl.DataFrame], top: int, k: int) -> pl.DataFrame:
    light = archive.scan(row_index=True).filter(OK).select(ROW, "label", "confidence")
    no_group = [pl.lit(None, pl.String).alias(BY), pl.lit(None, pl.String).alias(GROUP)]
    frames = [
        _picks(light, [], k, most=True).with_columns(pl.lit(MOST).alias("kind"), *no_group),
        _picks(light, [], k, most=False).with_columns(pl.lit(LEAST).alias("kind"), *no_group),
    ]
    for key, table in keys.items():
        named = [g for g in top_groups(table, top) if g is not None]
        if not named:
            continue
        framed = key.attach(
            archive.scan(row_index=True).filter(OK).select(ROW, "label", "confidence", key.column)
        ).filter(pl.col(GROUP).is_in(named))
        frames.append(_picks(framed, [GROUP], k, most=True).with_columns(pl.lit(MOST).alias("kind"), pl.lit(key.name).alias(BY)))
    return pl.concat([f.select(PICK_COLUMNS) for f in frames])


def _picks(frame: pl.LazyFrame, keys: list[str], k: int, most: bool) -> pl.DataFrame:
    """Row indices of the `k` most (or least) confident posts per label and key value."""
    row = pl.col(ROW).cast(pl.Int64)
    pick = pl.col(ROW).top_k_by([pl.col("confidence"), -row], k) if most else pl.col(ROW).bottom_k_by([pl.col("confidence"), row], k)
    picked = collect(frame.group_by(*keys, "label").agg(pick.alias(ROW)))
    picked = picked.explode(ROW).drop_nulls(ROW)
    return picked if keys else picked.with_columns(pl.lit(None, pl.String).alias(GROUP))


def _display_columns(archive: ScoredArchive, text_col: str, axis: TimeAxis | None) -> list[pl.Expr]:
    """What a reader needs to judge a post: its id, text, aspect, time, scores and chain."""
    text = pl.col(text_col) if text_col in archive.schema and archive.schema[text_col] == pl.String else pl.lit(None, pl.String)
    time = axis.timestamps if axis is not None else pl.lit(None, pl.Datetime("us"))
    return [
        pl.col(archive.id_col).alias("post_id"),
        text.alias("text"),
        pl.col("aspect"),
        time.alias("time"),
        pl.col("confidence"),
        *(pl.col(f"p_{lab}") for lab in LABELS),
        pl.col("rationale"),
        *(pl.col(f) for f in CHAIN_FIELDS),
        pl.col("rationale_label"),
        pl.col("image_status"),
    ]
