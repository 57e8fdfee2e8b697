"""Terminal output: progress on stderr while a job runs, a summary table at the end.

Everything goes to stderr so stdout stays clean for scripts; `--quiet` silences all but errors.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

stderr = Console(stderr=True)


def progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("posts"),
        TextColumn("{task.fields[rate]:>7.2f} posts/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet,
        transient=False,
    )


def say(message: str, quiet: bool) -> None:
    if not quiet:
        stderr.print(message)


def summarise_parts(parts: list[Path]) -> dict:
    """Counts over every part of the job, including parts written by earlier runs or other ranks."""
    if not parts:
        return {"rows": 0, "labels": {}, "errors": 0, "explained": 0, "image_status": {}}
    # Streamed group-by: memory stays flat however many rows (and rationales) the parts hold.
    counts = (
        pl.scan_parquet(parts)
        .group_by("status", "label", "image_status")
        .agg(pl.len().alias("rows"), pl.col("rationale").is_not_null().sum().alias("explained"))
        .collect(engine="streaming")
    )
    ok = counts.filter(pl.col("status") == "ok")
    labels = {k: int(v) for k, v in ok.group_by("label").agg(pl.col("rows").sum()).iter_rows()}
    images = {k: int(v) for k, v in counts.group_by("image_status").agg(pl.col("rows").sum()).iter_rows()}
    return {
        "rows": int(counts["rows"].sum()),
        "labels": labels,
        "errors": int(counts.filter(pl.col("status") == "error")["rows"].sum()),
        "explained": int(counts["explained"].sum()),
        "image_status": images,
    }


def summary_table(summary: dict, scored_now: int, timing: tuple[float, float], model: str, out: Path) -> Table:
    """`timing` is (seconds spent scoring, seconds in all including model loading)."""
    table = Table(title=f"mulcot-batch score -> {out}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("model", model)
    table.add_row("rows in output", f"{summary['rows']:,}")
    for label in ("positive", "neutral", "negative"):
        count = summary["labels"].get(label, 0)
        share = count / max(1, summary["rows"] - summary["errors"])
        table.add_row(f"  {label}", f"{count:,} ({share:.1%})")
    table.add_row("errors", f"{summary['errors']:,}")
    table.add_row("with rationale", f"{summary['explained']:,}")
    table.add_row("image status", ", ".join(f"{k} {v}" for k, v in sorted(summary["image_status"].items())))
    scoring, total = timing
    rate = scored_now / scoring if scoring > 0 else 0.0
    table.add_row("scored this run", f"{scored_now:,} in {scoring:.1f} s ({rate:.2f} posts/s)")
    table.add_row("wall time", f"{total:.1f} s (model loading included)")
    return table
