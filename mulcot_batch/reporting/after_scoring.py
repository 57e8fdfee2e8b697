"""Reports at the end of a scoring job: `score --report` and a job file's `[report]` table.

Both write to `OUT/report/` unless told otherwise; the scored parts live in `OUT/parts/`, so the
report never reads its own tables as scored posts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import JobError
from .archive import open_archive
from .options import HASHTAG, MENTION, ReportOptions, check_report_options

REPORT_DIR = "report"
DAILY = "1d"


def default_options(scored_out: str, text_col: str, quiet: bool) -> ReportOptions:
    """What `score --report` reports: by aspect, by hashtag and mention when the text was kept
    (`--keep text`), and a daily series over the first kept timestamp or date column, if any."""
    archive = open_archive([scored_out])
    by = ["aspect"]
    if text_col in archive.kept:
        by += [HASHTAG, MENTION]
    temporal = [c for c in archive.kept if archive.schema[c].is_temporal()]
    return ReportOptions(
        scored=[scored_out],
        out=str(Path(scored_out) / REPORT_DIR),
        by=by,
        time_col=temporal[0] if temporal else None,
        every=DAILY if temporal else None,
        text_col=text_col,
        quiet=quiet,
    )


def options_from_table(table: dict[str, Any], scored_out: str, keep: list[str], where: str) -> ReportOptions:
    """A job file's `[report]` table: the report command's option names; `scored` and `out`
    default to the job's `--out` and `OUT/report`. Checked before the job scores anything."""
    known = {f.name for f in dataclasses.fields(ReportOptions)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise JobError(f"{where}: unknown [report] option(s) {', '.join(unknown)}")
    section = dict(table)
    section.setdefault("scored", [scored_out])
    section.setdefault("out", str(Path(scored_out) / REPORT_DIR))
    for name in ("scored", "by"):
        if isinstance(section.get(name), str):
            section[name] = [c.strip() for c in section[name].split(",") if c.strip()]
    opts = ReportOptions(**section)
    check_report_options(opts)
    if opts.scored == [scored_out]:
        _check_against_job(opts, keep, where)
    return opts


def _check_against_job(opts: ReportOptions, keep: list[str], where: str) -> None:
    """The columns a report asks for must be in what the job writes: fail now, not after scoring."""
    written = {"aspect", "label", "image_status", "rationale_label", "status", "model", *keep}
    for name in opts.by:
        if name in (HASHTAG, MENTION) and name not in written and opts.text_col not in keep:
            raise JobError(f"{where}: [report] by {name} reads the text; add {opts.text_col!r} to the job's keep")
        if name not in written and name not in (HASHTAG, MENTION):
            raise JobError(f"{where}: [report] by {name!r} is not a column the job writes (keep it with keep = [...])")
    if opts.time_col is not None and opts.time_col not in keep:
        raise JobError(f"{where}: [report] time_col {opts.time_col!r} is not a kept column of the job")


def report_step(build: Callable[[], ReportOptions]) -> Callable[[], None]:
    """The callable the scoring job runs on its main process once every part is written."""

    def step() -> None:
        from .report import run_report

        run_report(build())

    return step
