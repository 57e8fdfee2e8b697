"""Do the text and the image point the same way? Read from the chains' analysis fields.

MulCoT-RD chains analyse the text and the image separately before resolving any conflict. The
sentiment a field points to is the label word it mentions (positive / neutral / negative, in any
case, also inside a longer word such as "positively"): one distinct word gives that label, two or more different ones give `mixed`, none
gives `unclear` (e.g. "there is no image"). A post is a conflict when both fields give a label and
the labels differ; the final label is the post's `label` (the scored arg-max).
"""

from __future__ import annotations

import polars as pl

from ..schema import LABELS
from .archive import ScoredArchive
from .measures import OK
from .tables import collect

MIXED, UNCLEAR = "mixed", "unclear"


def field_sentiment(column: str) -> pl.Expr:
    """positive / neutral / negative, `mixed` or `unclear`, from the label words of a chain field.

    Literal substring tests on the lower-cased field (fast: no regex), so "positively" counts as
    positive, as a reader would take it.
    """
    low = pl.col(column).str.to_lowercase()
    found = [low.str.contains(label, literal=True).fill_null(False) for label in LABELS]
    count = pl.sum_horizontal(*(f.cast(pl.Int8) for f in found))
    single = pl.when(found[0]).then(pl.lit(LABELS[0])).when(found[1]).then(pl.lit(LABELS[1])).otherwise(pl.lit(LABELS[2]))
    return pl.when(count == 1).then(single).when(count > 1).then(pl.lit(MIXED)).otherwise(pl.lit(UNCLEAR))


def modality_table(archive: ScoredArchive) -> pl.DataFrame:
    """One row per (text sentiment, image sentiment) pair among scored posts with a chain."""
    chained = archive.scan().filter(OK & pl.col("rationale").is_not_null())
    pairs = chained.select(
        field_sentiment("text_analysis").alias("text_sentiment"),
        field_sentiment("image_analysis").alias("image_sentiment"),
        pl.col("label"),
    )
    counts = collect(
        pairs.group_by("text_sentiment", "image_sentiment").agg(
            pl.len().cast(pl.Int64).alias("posts"),
            *((pl.col("label") == lab).sum().cast(pl.Int64).alias(f"final_{lab}") for lab in LABELS),
            (pl.col("label") == pl.col("text_sentiment")).sum().cast(pl.Int64).alias("final_follows_text"),
            (pl.col("label") == pl.col("image_sentiment")).sum().cast(pl.Int64).alias("final_follows_image"),
        )
    )
    total = counts["posts"].sum()
    both_labelled = pl.col("text_sentiment").is_in(LABELS) & pl.col("image_sentiment").is_in(LABELS)
    return counts.with_columns(
        (both_labelled & (pl.col("text_sentiment") != pl.col("image_sentiment"))).alias("conflict"),
        (pl.col("posts") / total if total else pl.lit(None, pl.Float64)).alias("share"),
    ).select(
        "text_sentiment",
        "image_sentiment",
        "conflict",
        "posts",
        "share",
        *(f"final_{lab}" for lab in LABELS),
        "final_follows_text",
        "final_follows_image",
    ).sort(["conflict", "posts", "text_sentiment", "image_sentiment"], descending=[True, True, False, False])


def modality_summary(table: pl.DataFrame) -> dict[str, int]:
    """The headline numbers: posts with a chain, conflicts, and which side the final label took."""
    conflicts = table.filter(pl.col("conflict"))
    return {
        "with_chain": int(table["posts"].sum()),
        "both_labelled": int(
            table.filter(pl.col("text_sentiment").is_in(LABELS) & pl.col("image_sentiment").is_in(LABELS))["posts"].sum()
        ),
        "conflicts": int(conflicts["posts"].sum()),
        "followed_text": int(conflicts["final_follows_text"].sum()),
        "followed_image": int(conflicts["final_follows_image"].sum()),
    }
