"""The sentiment measures every report table shares, computed from additive sums.

A group-by first collects only sums (posts, scored, label counts, sums of probabilities and of
confidence). Sums add up, so small groups can be folded into "(other)", buckets re-aggregated and
tables combined without another pass over the archive; the ratios are derived at the very end.

Error rows (status != ok) are counted in `posts` and `errors` and nowhere else: label shares, mean
probabilities, mean confidence and net sentiment are over scored posts only.
"""

from __future__ import annotations

import polars as pl

from ..schema import LABELS

OTHER = "(other)"

OK = (pl.col("status") == "ok") & pl.col("label").is_not_null()

SUM_COLUMNS = [
    "posts",
    "scored",
    *(f"n_{label}" for label in LABELS),
    *(f"sum_p_{label}" for label in LABELS),
    "sum_confidence",
]

MEASURE_COLUMNS = [
    "posts",
    "scored",
    "errors",
    *(f"n_{label}" for label in LABELS),
    *(f"share_{label}" for label in LABELS),
    *(f"mean_p_{label}" for label in LABELS),
    "mean_confidence",
    "net_sentiment",
]


def sum_exprs() -> list[pl.Expr]:
    """Aggregations for `group_by(...).agg(...)` or `select(...)`; every one of them is additive."""
    scored_value = lambda name: pl.when(OK).then(pl.col(name).cast(pl.Float64)).sum()  # noqa: E731
    return [
        pl.len().cast(pl.Int64).alias("posts"),
        OK.sum().cast(pl.Int64).alias("scored"),
        *((OK & (pl.col("label") == label)).sum().cast(pl.Int64).alias(f"n_{label}") for label in LABELS),
        *(scored_value(f"p_{label}").alias(f"sum_p_{label}") for label in LABELS),
        scored_value("confidence").alias("sum_confidence"),
    ]


def add_sums() -> list[pl.Expr]:
    """Re-aggregate sums (folding groups, merging buckets)."""
    return [pl.col(c).sum() for c in SUM_COLUMNS]


def derive(frame: pl.DataFrame) -> pl.DataFrame:
    """Sums -> the documented measures; ratios are null where nothing was scored."""
    scored = pl.col("scored")
    per_scored = lambda expr: pl.when(scored > 0).then(expr / scored).otherwise(None)  # noqa: E731
    return frame.with_columns(
        (pl.col("posts") - scored).alias("errors"),
        *(per_scored(pl.col(f"n_{label}")).alias(f"share_{label}") for label in LABELS),
        *(per_scored(pl.col(f"sum_p_{label}")).alias(f"mean_p_{label}") for label in LABELS),
        per_scored(pl.col("sum_confidence")).alias("mean_confidence"),
        per_scored(pl.col("n_positive") - pl.col("n_negative")).alias("net_sentiment"),
    ).drop([c for c in SUM_COLUMNS if c.startswith("sum_")])


def fold_small(groups: pl.DataFrame, min_posts: int, key: str) -> pl.DataFrame:
    """Groups under `min_posts` become one `(other)` row, placed last; the rest sorted by volume.

    `groups` counts how many distinct values a row stands for (1, or the number folded). The null
    group (posts without a value) is never folded: "no aspect" is not a small aspect.
    """
    small = (pl.col("posts") < min_posts) & pl.col(key).is_not_null()
    kept = groups.filter(~small).with_columns(pl.lit(1, pl.Int64).alias("groups"))
    kept = kept.sort(["posts", key], descending=[True, False], nulls_last=True)
    folded = groups.filter(small)
    if folded.is_empty():
        return kept
    other = folded.select(pl.lit(OTHER, pl.String).alias(key), *add_sums(), pl.len().cast(pl.Int64).alias("groups"))
    return pl.concat([kept, other.select(kept.columns)])
