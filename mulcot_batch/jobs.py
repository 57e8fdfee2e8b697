"""TOML job files: the same options as `mulcot-batch score`, written down once.

    [score]
    inputs = ["sample_data"]
    out = "out/sample"
    rationales = "all"

    [report]                   # optional: report on the scored output when the job is done
    by = ["aspect", "hashtag"] # the options of `mulcot-batch report`; out defaults to OUT/report

Relative paths are taken from the directory the command runs in, like the CLI's.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from .engine import ScoreOptions
from .errors import JobError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _read(path: Path) -> dict:
    if not path.is_file():
        raise JobError(f"job file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"job file {path} is not valid TOML: {exc}") from None


def load_report_step(path: Path, opts: ScoreOptions) -> Callable[[], None] | None:
    """The job's `[report]` table as a step to run after scoring (None without one); checked now."""
    data = _read(path)
    if "report" not in data:
        return None
    from .reporting.after_scoring import options_from_table, report_step

    report = options_from_table(data["report"], opts.out, opts.keep, f"job file {path}")
    report.quiet = report.quiet or opts.quiet
    return report_step(lambda: report)


def load_job(path: Path) -> ScoreOptions:
    data = _read(path)
    if "score" not in data:
        raise JobError(f"job file {path} has no [score] table")
    section = dict(data["score"])
    known = {f.name for f in dataclasses.fields(ScoreOptions)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise JobError(f"job file {path}: unknown option(s) {', '.join(unknown)}")
    for required in ("inputs", "out"):
        if required not in section:
            raise JobError(f"job file {path}: [score] needs {required!r}")
    if isinstance(section["inputs"], str):
        section["inputs"] = [section["inputs"]]
    if isinstance(section.get("keep"), str):
        section["keep"] = [c.strip() for c in section["keep"].split(",") if c.strip()]
    return ScoreOptions(**section)
