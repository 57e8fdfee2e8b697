"""Group keys (`--by`): a column of the scored output, or hashtags / @mentions read from the text.

Every key becomes one string column, `group`, so all grouped tables share one layout whatever the
key's type. A post with several hashtags counts once in each of its hashtags' groups; a post with
none, or a null key value, lands in the null group (shown as "(none)").
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import polars as pl

from ..errors import JobError
from ..schema import CHAIN_FIELDS
from .archive import ScoredArchive
from .options import HASHTAG, MENTION

GROUP = "group"

# `#word` and `@user`, also in the tokenised form `# word` / `@ user` of the Twitter-2015/2017
# benchmark dumps. The sign must not follow a letter or digit (`\B`: not `C#`, not `a@b.com`); a
# hashtag needs a letter (`#1` is not one, as on Twitter). Tags are lower-cased: #IBM is #ibm.
TAG_PATTERNS = {
    HASHTAG: r"\B[#＃]\s?\w*[^\W\d]\w*",
    MENTION: r"\B[@＠]\s?\w+",
}
SIGNS = "#＃@＠ \t\r\n"
# polars 1.x explodes an empty list to a null row; 2.x needs empty_as_null=True for that
EMPTY_AS_NULL = {"empty_as_null": True} if "empty_as_null" in inspect.signature(pl.LazyFrame.explode).parameters else {}
NOT_GROUPABLE = {"p_positive", "p_neutral", "p_negative", "confidence", "rationale", "error", *CHAIN_FIELDS}


@dataclass(frozen=True)
class GroupKey:
    """One `--by` key and how to turn the scored rows into (row, group) pairs for it."""

    name: str
    column: str  # the source column: the key itself, or the text column for hashtag/mention
    from_text: bool

    @property
    def multi(self) -> bool:
        """Whether one post can belong to several groups of this key (hashtags, mentions)."""
        return self.from_text

    def group_expr(self) -> pl.Expr:
        if not self.from_text:
            return pl.col(self.column).cast(pl.String).alias(GROUP)
        # lower-case the text once rather than each tag: about half the cost on 10M posts
        found = pl.col(self.column).str.to_lowercase().str.extract_all(TAG_PATTERNS[self.name])
        return found.list.eval(pl.element().str.strip_chars_start(SIGNS)).list.unique().alias(GROUP)

    def explode(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """One row per (post, tag); a post without tags becomes one row in the null group."""
        return frame.explode(GROUP, **EMPTY_AS_NULL)

    @property
    def file_stem(self) -> str:
        return "by_" + "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)


def resolve_keys(names: list[str], archive: ScoredArchive, text_col: str) -> list[GroupKey]:
    """Check every `--by` name against the archive's columns before any data is read."""
    keys = [_resolve_key(name, archive, text_col) for name in names]
    stems: dict[str, str] = {}
    for key in keys:
        if key.file_stem in stems:
            raise JobError(
                f"--by {key.name!r} and {stems[key.file_stem]!r} would write the same file {key.file_stem}.parquet"
            )
        stems[key.file_stem] = key.name
    return keys


def _resolve_key(name: str, archive: ScoredArchive, text_col: str) -> GroupKey:
    schema = archive.schema
    if name in schema:
        if name in NOT_GROUPABLE:
            raise JobError(
                f"--by {name!r} is a score or chain column; group by a kept column, aspect, or a label column"
            )
        dtype = schema[name]
        if dtype.is_nested() or dtype == pl.Object:
            raise JobError(f"--by {name!r} is {dtype}, which cannot be grouped; use a column of plain values")
        return GroupKey(name, name, from_text=False)
    if name in TAG_PATTERNS:
        if text_col not in schema:
            raise JobError(
                f"--by {name} reads the post text, but the scored output has no {text_col!r} column: score with "
                f"`--keep {text_col}` (the text column passes through like any other), or name it with --text-col"
            )
        if schema[text_col] != pl.String:
            raise JobError(f"--by {name} needs a string text column; {text_col!r} is {schema[text_col]}")
        return GroupKey(name, text_col, from_text=True)
    available = ", ".join(["aspect", *archive.kept, "image_status", "rationale_label", HASHTAG, MENTION])
    raise JobError(f"--by {name!r}: no such column in the scored output (available: {available})")
