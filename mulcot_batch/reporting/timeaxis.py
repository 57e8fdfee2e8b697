"""The time axis of a report (`--time-col`, `--every`): which column, read how, bucketed how.

Timestamp and date columns are used as they are. A string column is converted when its values
are ISO 8601 timestamps in one format (found on a sample before the scan); values that do not
parse in that format count as posts without a time, never as an error of the whole report.
Anything else (numbers, free text) stops the report before any work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from ..errors import JobError
from .archive import ScoredArchive

BUCKET = "bucket"
DURATION = re.compile(r"(\d+(ns|us|ms|mo|[smhdwqy]))+")
SAMPLE_ROWS = 1000

# Tried in order on a sample; `%#z` takes `Z` as well as `+02:00` and gives UTC timestamps.
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


@dataclass(frozen=True)
class TimeAxis:
    column: str
    every: str
    timestamps: pl.Expr  # the column as a Datetime, null where it has no (parseable) value
    parsed_from: str | None = None  # the string format, when the column is converted

    def bucket_expr(self) -> pl.Expr:
        """The start of the `--every` bucket each post falls in (polars `dt.truncate` alignment)."""
        return self.timestamps.dt.truncate(self.every).alias(BUCKET)


def resolve_time_axis(archive: ScoredArchive, column: str, every: str) -> TimeAxis:
    _check_every(every)
    if column not in archive.schema:
        temporal = [c for c, t in archive.schema.items() if t.is_temporal()]
        hint = (
            f" (timestamp columns: {', '.join(temporal)})"
            if temporal
            else " (score with --keep COLUMN to pass one through)"
        )
        raise JobError(f"--time-col {column!r}: no such column in the scored output{hint}")
    dtype = archive.schema[column]
    if isinstance(dtype, pl.Datetime):
        return TimeAxis(column, every, pl.col(column))
    if dtype == pl.Date:
        return TimeAxis(column, every, pl.col(column).cast(pl.Datetime("us")))
    if dtype == pl.String:
        fmt = _string_format(archive, column)
        zone = "UTC" if "%#z" in fmt else None  # offsets are converted to UTC; say so in the type
        parsed = pl.col(column).str.to_datetime(fmt, strict=False, time_unit="us", time_zone=zone)
        return TimeAxis(column, every, parsed, parsed_from=fmt)
    raise JobError(
        f"--time-col {column!r} is {dtype}, not a timestamp; use a Datetime or Date column, "
        "or strings in ISO 8601 (2024-03-01T10:00:00)"
    )


def _check_every(every: str) -> None:
    """A positive calendar duration in polars' grammar, checked here: some polars versions panic
    (an exception no `except Exception` catches) on a unit they do not know."""
    if not DURATION.fullmatch(every):
        raise JobError(
            f"--every {every!r} is not a polars duration such as 6h, 1d, 1w, 1mo "
            "(an integer and a unit: ns us ms s m h d w mo q y, several may follow each other)"
        )
    if not any(int(n) for n in re.findall(r"\d+", every)):
        raise JobError(f"--every {every!r} must be a positive duration such as 1h, 1d, 1w, 1mo")
    try:
        pl.Series([datetime(2020, 1, 1)]).dt.truncate(every)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise JobError(f"--every {every!r} is not a duration polars accepts ({first})") from None


def _string_format(archive: ScoredArchive, column: str) -> str:
    """The one ISO 8601 format all sampled values are in, or a clear error."""
    sample = archive.scan().select(pl.col(column)).drop_nulls().head(SAMPLE_ROWS).collect()[column]
    sample = sample.filter(sample.str.strip_chars() != "")
    if sample.is_empty():
        raise JobError(f"--time-col {column!r} holds no values")
    for fmt in ISO_FORMATS:
        try:
            sample.str.to_datetime(fmt, strict=True, time_unit="us")
        except pl.exceptions.PolarsError:
            continue
        return fmt
    raise JobError(
        f"--time-col {column!r} holds strings that are not ISO 8601 timestamps in one format "
        f"(e.g. {sample[0]!r}); convert the column to a timestamp or to strings like 2024-03-01T10:00:00"
    )
