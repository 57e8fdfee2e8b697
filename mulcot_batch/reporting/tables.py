"""The aggregate tables: overall, by group, over time, and the confidence histogram.

Each is one streaming group-by over a lazy scan of the parts, reading only the columns it needs,
so memory depends on the number of groups and buckets, not on the number of posts.
"""

from __future__ import annotations

import polars as pl

from .archive import ScoredArchive
from .keys import GROUP, GroupKey
from .measures import MEASURE_COLUMNS, OK, OTHER, derive, fold_small, sum_exprs
from .timeaxis import BUCKET, TimeAxis

STREAMING = "streaming"
TOP_REASONS = 20
BY = "by"
BIN_WIDTH = 0.05
FIRST_BIN = 6  # confidence is the largest of three probabilities, so never under 1/3 (bin 0.30)
BINS = 20
REASONS_DTYPE = pl.List(pl.Struct({"reason": pl.String, "posts": pl.Int64}))


def collect(frame: pl.LazyFrame) -> pl.DataFrame:
    """Run a query on polars' streaming engine: batches of rows, never the whole archive at once."""
    return frame.collect(engine=STREAMING)


def overall_table(archive: ScoredArchive, axis: TimeAxis | None) -> pl.DataFrame:
    """One row: the measures over every post, plus errors by reason and what the report read."""
    extra = [pl.col("rationale").is_not_null().sum().cast(pl.Int64).alias("with_rationale")]
    if axis is not None:
        extra += [
            axis.timestamps.min().alias("time_min"),
            axis.timestamps.max().alias("time_max"),
            axis.timestamps.is_null().sum().cast(pl.Int64).alias("posts_without_time"),
        ]
    sums = collect(archive.scan().select(*sum_exprs(), *extra))
    table = derive(sums).with_columns(
        pl.lit(pl.Series([errors_by_reason(archive).to_dicts()], dtype=REASONS_DTYPE)).alias("errors_by_reason"),
        pl.lit(pl.Series([archive.models], dtype=pl.List(pl.String))).alias("models"),
        pl.lit(pl.Series([[str(f) for f in archive.folders]], dtype=pl.List(pl.String))).alias("sources"),
    )
    front = [*MEASURE_COLUMNS, "with_rationale", "errors_by_reason"]
    return table.select(*front, *(c for c in table.columns if c not in front))


def errors_by_reason(archive: ScoredArchive) -> pl.DataFrame:
    """Error rows per reason, most frequent first; rare reasons past the top 20 summed as (other)."""
    counts = collect(
        archive.scan().filter(~OK).group_by(pl.col("error").fill_null("(no reason given)").alias("reason")).agg(
            pl.len().cast(pl.Int64).alias("posts")
        )
    ).sort(["posts", "reason"], descending=[True, False])
    if counts.height <= TOP_REASONS:
        return counts
    rest = counts.slice(TOP_REASONS).select(pl.lit(OTHER).alias("reason"), pl.col("posts").sum())
    return pl.concat([counts.head(TOP_REASONS), rest])


def group_table(archive: ScoredArchive, key: GroupKey, min_posts: int, total_posts: int) -> pl.DataFrame:
    """The measures per value of one `--by` key, small groups folded, sorted by volume."""
    sums = collect(key.attach(archive.scan()).group_by(GROUP).agg(sum_exprs()))
    table = derive(fold_small(sums, min_posts, GROUP))
    share = pl.col("posts") / total_posts if total_posts else pl.lit(None, pl.Float64)
    return table.select(GROUP, "groups", "posts", share.alias("share_of_posts"), *MEASURE_COLUMNS[1:])


def top_groups(table: pl.DataFrame, top: int) -> list[str | None]:
    """The `top` largest groups of a group table, `(other)` excluded (it is the rest by definition)."""
    return table.filter(pl.col("groups") == 1)[GROUP].head(top).to_list()


def series_table(archive: ScoredArchive, axis: TimeAxis, keys: dict[GroupKey, pl.DataFrame], top: int) -> pl.DataFrame:
    """Measures per time bucket: over all posts (`by` null), then per top group of each key.

    Per key, the `top` largest groups get their own series and every other post is in `(other)`,
    so the table stays small however many distinct values the key has.
    """
    dated = archive.scan().with_columns(axis.bucket_expr()).filter(pl.col(BUCKET).is_not_null())
    overall = collect(dated.group_by(BUCKET).agg(sum_exprs())).sort(BUCKET).with_columns(
        pl.lit(None, pl.String).alias(BY), pl.lit(None, pl.String).alias(GROUP)
    )
    frames = [overall]
    for key, table in keys.items():
        frames.append(_key_series(dated, key, top_groups(table, top)))
    series = derive(pl.concat([f.select(BY, GROUP, BUCKET, *_sum_names(f)) for f in frames]))
    return series.select(BY, GROUP, BUCKET, *MEASURE_COLUMNS)  # frames are already in display order


def _key_series(dated: pl.LazyFrame, key: GroupKey, top: list[str | None]) -> pl.DataFrame:
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
    frame = collect(key.attach(dated).with_columns(mapped).group_by(GROUP, BUCKET).agg(sum_exprs()))
    order = {g: i for i, g in enumerate([*top, OTHER])}
    return (
        frame.with_columns(
            pl.lit(key.name, pl.String).alias(BY),
            pl.col(GROUP).replace_strict(order, default=len(order), return_dtype=pl.Int64).alias("_order"),
        )
        .sort(["_order", BUCKET])
        .drop("_order")
    )


def _sum_names(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in (BY, GROUP, BUCKET)]


def confidence_table(archive: ScoredArchive) -> pl.DataFrame:
    """Scored posts per label and confidence bin of width 0.05 (0.30-0.35 ... 0.95-1.00), zeros kept."""
    index = (pl.col("confidence") * BINS).floor().cast(pl.Int64).clip(FIRST_BIN, BINS - 1).alias("bin")
    counts = collect(archive.scan().filter(OK).group_by("label", index).agg(pl.len().cast(pl.Int64).alias("posts")))
    grid = pl.DataFrame({"label": ["positive", "neutral", "negative"]}).join(
        pl.DataFrame({"bin": list(range(FIRST_BIN, BINS))}), how="cross"
    )
    table = grid.join(counts, on=["label", "bin"], how="left").with_columns(pl.col("posts").fill_null(0))
    return table.select(
        "label",
        (pl.col("bin") * BIN_WIDTH).round(2).alias("bin_low"),
        ((pl.col("bin") + 1) * BIN_WIDTH).round(2).alias("bin_high"),
        "posts",
    )
