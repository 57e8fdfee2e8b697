"""The aggregate tables: overall, over time, the confidence histogram, and by group.

All read the digest (digest.py), never the parts. Overall, the series and the histogram come from
one streaming pass: a small "cube" of additive sums per (time bucket, label, confidence bin), at
most buckets x 3 x 14 cells whatever the archive size, which the three tables are summed out of.
Each `--by` key costs one more pass for its groups and one for its per-group series.
"""

from __future__ import annotations

import polars as pl

from .archive import ScoredArchive, collect
from .digest import HAS_CHAIN, TIME, Digest
from .keys import GROUP, GroupKey
from .measures import MEASURE_COLUMNS, OK, OTHER, SUM_COLUMNS, add_sums, derive, fold_small, sum_exprs
from .timeaxis import BUCKET

Keyed = dict[GroupKey, tuple[pl.LazyFrame, pl.DataFrame]]  # key -> (its digest frame, its group table)

TOP_REASONS = 20
BY = "by"
BIN = "bin"
BIN_WIDTH = 0.05
FIRST_BIN = 6  # confidence is the largest of three probabilities, so never under 1/3 (bin 0.30)
BINS = 20
REASONS_DTYPE = pl.List(pl.Struct({"reason": pl.String, "posts": pl.Int64}))


def overview_cube(digest: Digest) -> pl.DataFrame:
    """Sums per (bucket, label, confidence bin): the one pass behind overall, series and histogram."""
    conf_bin = (pl.col("confidence") * BINS).floor().cast(pl.Int64).clip(FIRST_BIN, BINS - 1)
    dims = [pl.when(OK).then(pl.col("label")).alias("label"), pl.when(OK).then(conf_bin).alias(BIN)]
    extra = [pl.col(HAS_CHAIN).sum().cast(pl.Int64).alias("with_rationale")]
    if digest.every is not None:
        dims.append(digest.bucket_expr())
        extra += [pl.col(TIME).min().alias("time_min"), pl.col(TIME).max().alias("time_max")]
    return collect(digest.scan().group_by(dims).agg(*sum_exprs(), *extra))


def overall_table(cube: pl.DataFrame, digest: Digest, archive: ScoredArchive) -> pl.DataFrame:
    """One row: the measures over every post, plus errors by reason and what the report read."""
    extra = [pl.col("with_rationale").sum()]
    if digest.every is not None:
        extra += [
            pl.col("time_min").min(),
            pl.col("time_max").max(),
            pl.col("posts").filter(pl.col(BUCKET).is_null()).sum().cast(pl.Int64).alias("posts_without_time"),
        ]
    sums = cube.select(*add_sums(), *extra)
    table = derive(sums).with_columns(
        pl.lit(pl.Series([errors_by_reason(digest).to_dicts()], dtype=REASONS_DTYPE)).alias("errors_by_reason"),
        pl.lit(pl.Series([archive.models], dtype=pl.List(pl.String))).alias("models"),
        pl.lit(pl.Series([[str(f) for f in archive.folders]], dtype=pl.List(pl.String))).alias("sources"),
    )
    front = [*MEASURE_COLUMNS, "with_rationale", "errors_by_reason"]
    return table.select(*front, *(c for c in table.columns if c not in front))


def errors_by_reason(digest: Digest) -> pl.DataFrame:
    """Error rows per reason, most frequent first; rare reasons past the top 20 summed as (other)."""
    counts = collect(
        digest.scan()
        .filter(~OK)
        .group_by(pl.col("error").fill_null("(no reason given)").alias("reason"))
        .agg(pl.len().cast(pl.Int64).alias("posts"))
    ).sort(["posts", "reason"], descending=[True, False])
    if counts.height <= TOP_REASONS:
        return counts
    rest = counts.slice(TOP_REASONS).select(pl.lit(OTHER).alias("reason"), pl.col("posts").sum())
    return pl.concat([counts.head(TOP_REASONS), rest])


def confidence_table(cube: pl.DataFrame) -> pl.DataFrame:
    """Scored posts per label and confidence bin of width 0.05 (0.30-0.35 ... 0.95-1.00), zeros kept."""
    counts = (
        cube.filter(pl.col("label").is_not_null()).group_by("label", BIN).agg(pl.col("scored").sum().alias("posts"))
    )
    grid = pl.DataFrame({"label": ["positive", "neutral", "negative"]}).join(
        pl.DataFrame({BIN: list(range(FIRST_BIN, BINS))}), how="cross"
    )
    table = grid.join(counts, on=["label", BIN], how="left").with_columns(pl.col("posts").fill_null(0).cast(pl.Int64))
    return table.select(
        "label",
        (pl.col(BIN) * BIN_WIDTH).round(2).alias("bin_low"),
        ((pl.col(BIN) + 1) * BIN_WIDTH).round(2).alias("bin_high"),
        "posts",
    )


def group_table(frame: pl.LazyFrame, min_posts: int, total_posts: int) -> pl.DataFrame:
    """The measures per value of one `--by` key, small groups folded, sorted by volume."""
    sums = collect(frame.group_by(GROUP).agg(sum_exprs()))
    table = derive(fold_small(sums, min_posts, GROUP))
    share = pl.col("posts") / total_posts if total_posts else pl.lit(None, pl.Float64)
    return table.select(GROUP, "groups", "posts", share.alias("share_of_posts"), *MEASURE_COLUMNS[1:])


def top_groups(table: pl.DataFrame, top: int) -> list[str | None]:
    """The `top` largest groups of a group table, `(other)` excluded (it is the rest by definition)."""
    return table.filter(pl.col("groups") == 1)[GROUP].head(top).to_list()


def series_table(cube: pl.DataFrame, keyed: Keyed, top: int) -> pl.DataFrame:
    """Measures per time bucket: over all posts (`by` null), then per top group of each key.

    Per key, the `top` largest groups get their own series and every other post is in `(other)`,
    so the table stays small however many distinct values the key has. Buckets without posts are
    absent (no zero rows).
    """
    overall = (
        cube.filter(pl.col(BUCKET).is_not_null())
        .group_by(BUCKET)
        .agg(add_sums())
        .sort(BUCKET)
        .with_columns(pl.lit(None, pl.String).alias(BY), pl.lit(None, pl.String).alias(GROUP))
    )
    frames = [overall.select(BY, GROUP, BUCKET, *SUM_COLUMNS)]
    for key, (frame, table) in keyed.items():
        frames.append(_key_series(frame, key, top_groups(table, top)).select(BY, GROUP, BUCKET, *SUM_COLUMNS))
    return derive(pl.concat(frames)).select(BY, GROUP, BUCKET, *MEASURE_COLUMNS)  # already in display order


def _key_series(frame: pl.LazyFrame, key: GroupKey, top: list[str | None]) -> pl.DataFrame:
    named = [g for g in top if g is not None]
    as_top = pl.col(GROUP).is_in(named) if named else pl.lit(False)
    keep_null = None in top
    mapped = (
        pl.when(as_top)
        .then(pl.col(GROUP))
        .when(pl.col(GROUP).is_null() & pl.lit(keep_null))
        .then(pl.lit(None, pl.String))
        .otherwise(pl.lit(OTHER))
        .alias(GROUP)
    )
    dated = frame.filter(pl.col(BUCKET).is_not_null()).with_columns(mapped)
    sums = collect(dated.group_by(GROUP, BUCKET).agg(sum_exprs()))
    order = {g: i for i, g in enumerate([*named, OTHER])}
    null_rank = top.index(None) - 0.5 if keep_null else len(order)  # the null group keeps its place
    named_rank = pl.col(GROUP).replace_strict(order, default=len(order), return_dtype=pl.Float64)
    rank = pl.when(pl.col(GROUP).is_null()).then(pl.lit(float(null_rank))).otherwise(named_rank)
    return sums.with_columns(pl.lit(key.name, pl.String).alias(BY)).sort(rank, BUCKET)
