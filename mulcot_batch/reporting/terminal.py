"""The report in the terminal: overall table, label bars, a sentiment sparkline, the top groups.

Printed on stderr (stdout stays clean for scripts) when stderr is a terminal or `--summary` asks
for it; otherwise a single line says where the report went. `--quiet` prints nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import polars as pl
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..console import stderr
from ..schema import LABELS
from .measures import OTHER
from .modality import modality_summary

if TYPE_CHECKING:
    from .options import ReportOptions
    from .report import Report

COLOURS = {"positive": "green", "neutral": "grey62", "negative": "red"}
SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 24


def interactive(opts: ReportOptions, console: Console = stderr) -> bool:
    if opts.quiet:
        return False
    return opts.summary if opts.summary is not None else console.is_terminal


@contextmanager
def stage(what: str, opts: ReportOptions) -> Iterator[None]:
    """A spinner while a stage runs, only where someone is watching."""
    if not interactive(opts):
        yield
        return
    with stderr.status(f"[bold]report[/]: {what}"):
        yield


def print_summary(report: Report, console: Console = stderr) -> None:
    opts = report.options
    if opts.quiet:
        return
    if not interactive(opts, console):
        row = report.overall.row(0, named=True)
        console.print(
            f"report: {row['posts']:,} posts ({row['errors']:,} errors) in {report.seconds:.1f} s -> {report.out}",
            highlight=False,
        )
        return
    console.print(summary_renderable(report))


def summary_renderable(report: Report) -> Group:
    parts: list = [overall_panel(report)]
    if report.over_time is not None:
        parts.append(series_lines(report))
    for name, table in report.groups.items():
        parts.append(groups_panel(name, table, report.options.top))
    if report.modality.height:
        parts.append(modality_line(report.modality))
    parts.append(Text(f"tables and page in {report.out} ({report.seconds:.1f} s)", style="dim"))
    return Group(*parts)


def overall_panel(report: Report) -> Table:
    row = report.overall.row(0, named=True)
    table = Table(title=f"mulcot-batch report -> {report.out}", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("model", ", ".join(row["models"]) or "-")
    table.add_row("posts", f"{row['posts']:,}")
    table.add_row("scored", f"{row['scored']:,}")
    reasons = ", ".join(f"{r['reason']} ({r['posts']:,})" for r in row["errors_by_reason"][:3])
    table.add_row("errors", f"{row['errors']:,}" + (f": {reasons}" if reasons else ""))
    for label in LABELS:
        share = row[f"share_{label}"] or 0.0
        bar = Text("█" * round(share * BAR_WIDTH), style=COLOURS[label])
        table.add_row(f"  {label}", Text.assemble(f"{row[f'n_{label}']:>10,} {share:6.1%} ", bar))
    table.add_row("mean confidence", _num(row["mean_confidence"], ".3f"))
    table.add_row("net sentiment", _num(row["net_sentiment"], "+.3f") + "  ((positive - negative) / scored)")
    table.add_row("with a chain", f"{row['with_rationale']:,}")
    return table


def series_lines(report: Report) -> Text:
    series = report.over_time.filter(pl.col("by").is_null())
    axis = report.axis
    if series.is_empty():
        return Text(f"over time ({axis.column}): no post has a time", style="bold")
    first, last = series["bucket"].min(), series["bucket"].max()
    net = sparkline(series["net_sentiment"].to_list(), -1.0, 1.0)
    volume = sparkline([float(v) for v in series["posts"].to_list()], 0.0, None)
    return Text.assemble(
        (f"over time ({axis.column}, every {axis.every}, {series.height} buckets, {first} .. {last})\n", "bold"),
        "  net sentiment ", (net, "cyan"), "\n",
        "  posts         ", (volume, "magenta"),
    )  # fmt: skip


def sparkline(values: list[float | None], low: float, high: float | None) -> str:
    """One block character per value; a gap where a value is missing (nothing scored)."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    high = max(present) if high is None else high
    span = (high - low) or 1.0
    return "".join(" " if v is None else SPARKS[min(7, max(0, int((v - low) / span * 7.999)))] for v in values)


def groups_panel(name: str, table: pl.DataFrame, top: int) -> Table:
    shown = pl.concat([table.filter(pl.col("groups") == 1).head(top), table.filter(pl.col("groups") > 1)])
    out = Table(title=f"by {name} (top {min(top, shown.height)} of {table.height} rows)", title_justify="left")
    for column, justify in (
        ("group", "left"),
        ("posts", "right"),
        ("labels", "left"),
        ("net", "right"),
        ("conf", "right"),
    ):
        out.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in shown.iter_rows(named=True):
        group = row["group"] if row["group"] is not None else "(none)"
        if row["group"] == OTHER and row["groups"] > 1:
            group = f"{OTHER} {row['groups']:,} groups"
        out.add_row(
            group,
            f"{row['posts']:,}",
            share_bar(row),
            _num(row["net_sentiment"], "+.2f"),
            _num(row["mean_confidence"], ".2f"),
        )
    return out


def share_bar(row: dict, width: int = 20) -> Text:
    """Label shares as one stacked bar of coloured blocks."""
    text, done, total = Text(), 0, 0.0
    for label in LABELS:
        total += row[f"share_{label}"] or 0.0
        cells = round(total * width) - done  # rounding the running total keeps the bar at `width`
        text.append("█" * cells, style=COLOURS[label])
        done += cells
    return text


def modality_line(table: pl.DataFrame) -> Text:
    s = modality_summary(table)
    if not s["both_labelled"]:
        return Text(f"modality: {s['with_chain']:,} posts with a chain, none with both a text and an image sentiment")
    share = s["conflicts"] / s["both_labelled"]
    return Text(
        f"modality: text and image point to different sentiments in {s['conflicts']:,} of {s['both_labelled']:,} "
        f"chains ({share:.1%}); the final label followed the text in {s['followed_text']:,}, the image in "
        f"{s['followed_image']:,}"
    )


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)
