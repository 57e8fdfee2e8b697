"""Errors that stop a job before any work; the CLI prints them as one line."""


class JobError(Exception):
    """A bad job: wrong input, wrong options, unknown model, foreign output folder."""
