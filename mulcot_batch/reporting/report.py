"""`mulcot-batch report`: check everything, compute the tables, write Parquet, page and summary.

All checks (folders, parts, models, schemas, `--by` and `--time-col` columns, `--every`) run
before the first data page is read, so a bad report fails at once, having written nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from .archive import ScoredArchive, open_archive
from .digest import HAS_CHAIN, build_digest
from .exemplars import exemplar_table
from .keys import GroupKey, resolve_keys
from .measures import OK
from .modality import modality_table
from .options import ReportOptions, check_report_options
from .output import ReportFolder
from .tables import Keyed, confidence_table, group_table, overall_table, overview_cube, series_table
from .timeaxis import TimeAxis, resolve_time_axis

HTML_FILE = "report.html"


@dataclass
class Report:
    """Everything a report computed; what the page and the terminal summary are drawn from."""

    options: ReportOptions
    archive: ScoredArchive
    axis: TimeAxis | None
    overall: pl.DataFrame
    groups: dict[str, pl.DataFrame]
    over_time: pl.DataFrame | None
    modality: pl.DataFrame
    exemplars: pl.DataFrame
    confidence: pl.DataFrame
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.options.out)


@dataclass
class ReportPlan:
    """A report whose options were all checked against the archive; nothing computed yet."""

    options: ReportOptions
    archive: ScoredArchive
    keys: list[GroupKey]
    axis: TimeAxis | None
    folder: ReportFolder


def plan_report(opts: ReportOptions) -> ReportPlan:
    """Every check that can fail a report, from options and Parquet footers only."""
    check_report_options(opts)
    archive = open_archive(opts.scored)
    folder = ReportFolder(Path(opts.out))
    folder.check(archive.folders)
    keys = resolve_keys(opts.by, archive, opts.text_col)
    axis = resolve_time_axis(archive, opts.time_col, opts.bucket_every) if opts.time_col else None
    return ReportPlan(opts, archive, keys, axis, folder)


def run_report(opts: ReportOptions) -> Report:
    """Plan, compute, write; prints the rich summary when stderr is a terminal (or when asked)."""
    from .terminal import print_summary, stage

    plan = plan_report(opts)
    start = time.perf_counter()
    with stage("aggregating", opts):
        report = compute_report(plan)
    with stage("writing", opts):
        report.files = write_report(plan, report)
    report.seconds = time.perf_counter() - start
    print_summary(report)
    return report


def compute_report(plan: ReportPlan) -> Report:
    """The digest first (the only pass over the parts), every table from it, then the exemplars."""
    opts, archive = plan.options, plan.archive
    plan.folder.prepare()
    with plan.folder.workdir() as workdir:
        digest = build_digest(archive, plan.keys, plan.axis, Path(workdir))
        cube = overview_cube(digest)
        overall = overall_table(cube, digest, archive)
        total = int(overall["posts"][0])
        keyed: Keyed = {}
        for key in plan.keys:
            frame = digest.key_frame(key)
            keyed[key] = (frame, group_table(frame, opts.min_posts, total))
        return Report(
            options=opts,
            archive=archive,
            axis=plan.axis,
            overall=overall,
            groups={key.name: table for key, (_, table) in keyed.items()},
            over_time=series_table(cube, keyed, opts.top) if plan.axis is not None else None,
            modality=modality_table(digest.scan(), OK, HAS_CHAIN),
            exemplars=exemplar_table(archive, digest, keyed, opts.top, opts.exemplars, opts.text_col, plan.axis),
            confidence=confidence_table(cube),
        )


def write_report(plan: ReportPlan, report: Report) -> list[Path]:
    from .html import render_page

    folder = plan.folder
    written = [folder.write_table("overall", report.overall)]
    for key in plan.keys:
        written.append(folder.write_table(key.file_stem, report.groups[key.name]))
    if report.over_time is not None:
        written.append(folder.write_table("over_time", report.over_time))
    written += [
        folder.write_table("modality", report.modality),
        folder.write_table("exemplars", report.exemplars),
        folder.write_table("confidence", report.confidence),
    ]
    if plan.options.html:
        written.append(folder.write_text(HTML_FILE, render_page(report)))
    folder.finish(written, _about(plan))
    return written


def _about(plan: ReportPlan) -> dict:
    opts = plan.options
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scored": [str(f) for f in plan.archive.folders],
        "parts": len(plan.archive.parts),
        "rows": plan.archive.rows,
        "models": plan.archive.models,
        "by": opts.by,
        "time_col": opts.time_col,
        "every": opts.bucket_every if opts.time_col else None,
        "time_format": plan.axis.parsed_from if plan.axis else None,
        "min_posts": opts.min_posts,
        "top": opts.top,
        "exemplars": opts.exemplars,
    }
