"""Every option of `mulcot-batch report`; a job file's `[report]` table sets the same names."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import JobError

HASHTAG, MENTION = "hashtag", "mention"
DEFAULT_EVERY = "1d"


@dataclass
class ReportOptions:
    """What to aggregate and where to write it; checked by `check` before any data is read."""

    scored: list[str]
    out: str
    by: list[str] = field(default_factory=list)
    time_col: str | None = None
    every: str | None = None  # None: DEFAULT_EVERY when time_col is set
    min_posts: int = 10
    top: int = 10
    exemplars: int = 3
    text_col: str = "text"
    html: bool = True
    summary: bool | None = None  # None: print the rich summary only when stderr is a terminal
    quiet: bool = False

    @property
    def bucket_every(self) -> str:
        return self.every or DEFAULT_EVERY


def check_report_options(opts: ReportOptions) -> None:
    """Option errors that need no data, so a typo fails in milliseconds, not after a scan."""
    if not opts.scored:
        raise JobError("report needs at least one scored output folder")
    if opts.every is not None and opts.time_col is None:
        raise JobError("--every needs --time-col (the timestamp column to bucket)")
    for name in ("min_posts", "top"):
        if getattr(opts, name) < 1:
            raise JobError(f"--{name.replace('_', '-')} must be at least 1")
    if opts.exemplars < 0:
        raise JobError("--exemplars must not be negative")
    opts.by = list(dict.fromkeys(b.strip() for b in opts.by if b.strip()))  # keep order, drop repeats
