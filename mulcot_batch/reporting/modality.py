"""Do the text and the image point the same way? Read from the chains' analysis fields.

MulCoT-RD chains analyse the text and the image separately before resolving any conflict. The
sentiment a field points to is the label word it mentions (positive / neutral / negative, in any
case, also inside a longer word such as "positively"): one distinct word gives that label, two or
more different ones give `mixed`, none gives `unclear` (e.g. "there is no image"). A post is a
conflict when both fields give a label and the labels differ; the final label is the post's
`label` (the scored arg-max). Only scored posts with a chain count.
"""

from __future__ import annotations

import polars as pl

from ..schema import LABELS
from .archive import collect

MIXED, UNCLEAR = "mixed", "unclear"
SENTIMENTS = (*LABELS, MIXED, UNCLEAR)  # indexed by the codes of `field_sentiment`
TEXT_SENTIMENT, IMAGE_SENTIMENT = "text_sentiment", "image_sentiment"


def field_sentiment(column: str) -> pl.Expr:
    """A code into SENTIMENTS from the label words of a chain field; null where the field is null.

    Literal substring tests on the lower-cased field and integer arithmetic: this runs over every
    row of the archive (in the digest), where strings built per row cost several times more.
    """
    low = pl.col(column).str.to_lowercase()
    found = [low.str.contains(label, literal=True).cast(pl.UInt8) for label in LABELS]
    count = found[0] + found[1] + found[2]
    single = found[1] + 2 * found[2]  # 0 positive, 1 neutral, 2 negative when exactly one is found
    return pl.when(count == 1).then(single).when(count > 1).then(pl.lit(3, pl.UInt8)).otherwise(pl.lit(4, pl.UInt8))


def modality_table(digest: pl.LazyFrame, ok: pl.Expr, has_chain: str) -> pl.DataFrame:
    """One row per (text sentiment, image sentiment) pair among scored posts with a chain.

    A chain the parser found no analysis field in counts as `unclear` on that side.
    """
    unclear = SENTIMENTS.index(UNCLEAR)
    pairs = digest.filter(ok & pl.col(has_chain)).select(
        pl.col(TEXT_SENTIMENT).fill_null(unclear), pl.col(IMAGE_SENTIMENT).fill_null(unclear), pl.col("label")
    )
    label_code = pl.col("label").replace_strict({lab: i for i, lab in enumerate(LABELS)}, return_dtype=pl.UInt8)
    counts = collect(
        pairs.group_by(TEXT_SENTIMENT, IMAGE_SENTIMENT).agg(
            pl.len().cast(pl.Int64).alias("posts"),
            *((pl.col("label") == lab).sum().cast(pl.Int64).alias(f"final_{lab}") for lab in LABELS),
            (label_code == pl.col(TEXT_SENTIMENT)).sum().cast(pl.Int64).alias("final_follows_text"),
            (label_code == pl.col(IMAGE_SENTIMENT)).sum().cast(pl.Int64).alias("final_follows_image"),
        )
    )
    names = {i: name for i, name in enumerate(SENTIMENTS)}
    counts = counts.with_columns(
        pl.col(c).replace_strict(names, return_dtype=pl.String) for c in (TEXT_SENTIMENT, IMAGE_SENTIMENT)
    )
    total = counts["posts"].sum()
    both_labelled = pl.col(TEXT_SENTIMENT).is_in(LABELS) & pl.col(IMAGE_SENTIMENT).is_in(LABELS)
    return (
        counts.with_columns(
            (both_labelled & (pl.col(TEXT_SENTIMENT) != pl.col(IMAGE_SENTIMENT))).alias("conflict"),
            (pl.col("posts") / total if total else pl.lit(None, pl.Float64)).alias("share"),
        )
        .select(
            TEXT_SENTIMENT,
            IMAGE_SENTIMENT,
            "conflict",
            "posts",
            "share",
            *(f"final_{lab}" for lab in LABELS),
            "final_follows_text",
            "final_follows_image",
        )
        .sort(["conflict", "posts", TEXT_SENTIMENT, IMAGE_SENTIMENT], descending=[True, True, False, False])
    )


def modality_summary(table: pl.DataFrame) -> dict[str, int]:
    """The headline numbers: posts with a chain, conflicts, and which side the final label took."""
    conflicts = table.filter(pl.col("conflict"))
    return {
        "with_chain": int(table["posts"].sum()),
        "both_labelled": int(
            table.filter(pl.col("text_sentiment").is_in(LABELS) & pl.col("image_sentiment").is_in(LABELS))[
                "posts"
            ].sum()
        ),
        "conflicts": int(conflicts["posts"].sum()),
        "followed_text": int(conflicts["final_follows_text"].sum()),
        "followed_image": int(conflicts["final_follows_image"].sum()),
    }
