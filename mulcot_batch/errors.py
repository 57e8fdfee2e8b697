"""Errors that stop a job; the CLI prints them as one line and exits with `exit_code`."""

from collections.abc import Sequence


class JobError(Exception):
    """A bad job: wrong input, wrong options, unknown model, foreign output folder."""

    exit_code = 2
    kind = "error"


class JobFailed(JobError):
    """The job started and failed part way (disk full, read-only output, a dead worker); finished chunks
    stay done and rerunning the same command resumes."""

    exit_code = 3


class Interrupted(JobError):
    """SIGINT or SIGTERM: the job stopped after the chunk in flight; rerunning it resumes."""

    kind = "stopped"

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def missing_column(what: str, name: str, present: Sequence[str], fix: str) -> JobError:
    """A missing column names the columns the file has and how to fix the command (`fix`, e.g.
    "name the right one with --text-col"), so the user can do it from the message alone."""
    shown = ", ".join(present[:12]) + (", ..." if len(present) > 12 else "")
    return JobError(f"{what} has no column {name!r} (it has: {shown}); {fix}")
