"""Representative posts: the most confident per label (overall and per top group), and the least
confident per label as a review queue.

Picks come from the digest (row index, label, confidence, the key); the text and chain of the few
picked rows are then read from only the part files that hold them, so long rationale strings are
never read for the whole archive a second time. Ties in confidence go to the earlier row, so the
same archive gives the same picks.
"""

from __future__ import annotations

import bisect
from itertools import accumulate

import polars as pl

from ..schema import CHAIN_FIELDS, LABELS
from .archive import ROW, ScoredArchive, collect
from .digest import Digest
from .keys import GROUP
from .measures import OK
from .tables import BY, Keyed, top_groups
from .timeaxis import TimeAxis

MOST, LEAST = "most_confident", "least_confident"
KIND_ORDER = {MOST: 0, LEAST: 1}
PICK_COLUMNS = ["kind", BY, GROUP, "label", ROW]
GROUP_RANK = "__group_rank"
PART_ROW = "__part_row"


def exemplar_table(
    archive: ScoredArchive, digest: Digest, keyed: Keyed, top: int, per_label: int, text_col: str, axis: TimeAxis | None
) -> pl.DataFrame:
    """Picked posts with their text (when kept), scores and chain, ranked within their pick."""
    picks = _all_picks(digest, keyed, top, per_label)
    rows = fetch_rows(archive, picks[ROW].unique().sort().to_list(), _display_columns(archive, text_col, axis))
    key_order = {name: i for i, name in enumerate(k.name for k in keyed)}
    table = picks.join(rows, on=ROW, how="left")
    confident_first = pl.when(pl.col("kind") == MOST).then(-pl.col("confidence")).otherwise(pl.col("confidence"))
    table = table.sort(
        [pl.col("kind").replace_strict(KIND_ORDER, return_dtype=pl.Int8),
         pl.col(BY).replace_strict(key_order, default=len(key_order), return_dtype=pl.Int32).fill_null(-1),
         pl.col(GROUP_RANK),
         pl.col("label").replace_strict({lab: i for i, lab in enumerate(LABELS)}, return_dtype=pl.Int8),
         confident_first, pl.col(ROW)],
    )  # fmt: skip
    rank = pl.int_range(1, pl.len() + 1).over("kind", BY, GROUP, "label").cast(pl.Int32).alias("rank")
    return table.with_columns(rank).select(
        "kind", BY, GROUP, "label", "rank", *(c for c in table.columns if c not in (*PICK_COLUMNS, GROUP_RANK))
    )


def _all_picks(digest: Digest, keyed: Keyed, top: int, k: int) -> pl.DataFrame:
    """Most and least confident per label over all posts (one pass), most per top group per key."""
    light = digest.scan().filter(OK).select(ROW, "label", "confidence")
    picked = collect(
        light.group_by("label").agg(
            pl.col(ROW).top_k_by(_order_key(most=True), k).alias(MOST),
            pl.col(ROW).bottom_k_by(_order_key(most=False), k).alias(LEAST),
        )
    )
    overall = picked.unpivot(index="label", on=[MOST, LEAST], variable_name="kind", value_name=ROW).explode(ROW)
    no_group = [
        pl.lit(None, pl.String).alias(BY),
        pl.lit(None, pl.String).alias(GROUP),
        pl.lit(-1, pl.Int32).alias(GROUP_RANK),
    ]
    frames = [overall.drop_nulls(ROW).with_columns(no_group)]
    for key, (frame, table) in keyed.items():
        named = [g for g in top_groups(table, top) if g is not None]
        if not named:
            continue
        mine = frame.filter(OK & pl.col(GROUP).is_in(named))
        best = collect(mine.group_by(GROUP, "label").agg(pl.col(ROW).top_k_by(_order_key(most=True), k)))
        order = {g: i for i, g in enumerate(named)}  # groups in the order of their group table
        frames.append(
            best.explode(ROW).with_columns(
                pl.lit(MOST).alias("kind"),
                pl.lit(key.name).alias(BY),
                pl.col(GROUP).replace_strict(order, return_dtype=pl.Int32).alias(GROUP_RANK),
            )
        )
    return pl.concat([f.select(*PICK_COLUMNS, GROUP_RANK) for f in frames])


def _order_key(most: bool) -> pl.Expr:
    """Confidence, ties to the earlier row, as one u64 (a single sort key is twice as fast as two).

    Every float32 in [1/4, 1] is a multiple of 2**-25, so `confidence * 2**25` is an exact integer
    under 2**25; the row index (u32) fills the low 32 bits, inverted for "most" so that the
    earlier row wins a tie both ways.
    """
    confidence = (pl.col("confidence").cast(pl.Float64) * 2**25).cast(pl.UInt64) * 2**32
    row = pl.col(ROW).cast(pl.UInt64)
    return confidence + (2**32 - 1 - row if most else row)


def fetch_rows(archive: ScoredArchive, rows: list[int], columns: list[pl.Expr]) -> pl.DataFrame:
    """`columns` of the archive rows `rows` (global row indices, sorted), reading only their parts.

    The global index of a row is its part's offset plus its index in the part, so the parts to
    read are found by bisecting the running row counts; in a scan of just those parts, a row's
    index is the rows of the chosen parts before it plus its index in its part.
    """
    if not rows:  # nothing scored: the right columns, no rows, one part's footer read
        return collect(archive.scan(row_index=True, parts=[0]).head(0).select(pl.col(ROW), *columns))
    starts = [0, *accumulate(archive.part_rows)]
    parts = sorted({bisect.bisect_right(starts, r) - 1 for r in rows})
    offset_in_scan, before = {}, 0
    for part in parts:
        offset_in_scan[part] = before - starts[part]
        before += archive.part_rows[part]
    wanted = [r + offset_in_scan[bisect.bisect_right(starts, r) - 1] for r in rows]
    mapping = pl.DataFrame({PART_ROW: wanted, ROW: rows}, schema={PART_ROW: pl.UInt32, ROW: pl.UInt32})
    found = collect(
        archive.scan(row_index=True, parts=parts)
        .filter(pl.col(ROW).is_in(wanted))
        .select(pl.col(ROW).alias(PART_ROW), *columns)
    )
    return mapping.join(found, on=PART_ROW, how="left").drop(PART_ROW)


def _display_columns(archive: ScoredArchive, text_col: str, axis: TimeAxis | None) -> list[pl.Expr]:
    """What a reader needs to judge a post: its id, text, aspect, time, scores and chain."""
    text = (
        pl.col(text_col)
        if text_col in archive.schema and archive.schema[text_col] == pl.String
        else pl.lit(None, pl.String)
    )
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
