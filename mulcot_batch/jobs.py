"""TOML job files: a sequence of stages, each a table named after a command, with its options.

    [score]
    inputs = ["sample_data"]
    out = "out/sample"
    keep = ["created_at"]

    [train_assistant]          # tables run in file order
    train = "data/train.parquet"
    ...

Keys are the command's option names with underscores; a list becomes a comma-separated value for
`keep` and repeated values otherwise; `true`/`false` switch flags. The command's positional
arguments are given by their own names (`inputs` for score, `scored` for evaluate, `input_file`
for annotate). Relative paths are relative to the current directory, as on the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import JobError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COMMA_SEPARATED = {"keep"}


def read_job(path: Path) -> dict:
    if not path.is_file():
        raise JobError(f"job file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"job file {path} is not valid TOML: {exc}") from None
    if not data:
        raise JobError(f"job file {path} has no stages")
    return data


def stage_args(command: click.Command, table: dict, where: str) -> list[str]:
    """The command line that a stage table stands for, checked against the command's parameters."""
    params = {p.name: p for p in command.params}
    params.update({opt.lstrip("-").replace("-", "_"): p for p in command.params for opt in p.opts if opt.startswith("--")})
    args: list[str] = []
    for key, value in table.items():
        param = params.get(key)
        if param is None:
            raise JobError(f"{where}: unknown option {key!r}")
        if isinstance(param, click.Argument):
            args += [str(v) for v in (value if isinstance(value, list) else [value])]
        else:
            args += _option_args(param, value)
    return args


def _option_args(param: click.Option, value) -> list[str]:
    if param.is_flag:
        flag = param.opts[0] if value else (param.secondary_opts[0] if param.secondary_opts else None)
        return [flag] if flag else []
    name = param.opts[0]
    if isinstance(value, list):
        if param.name in COMMA_SEPARATED:
            return [name, ",".join(map(str, value))]
        return [part for item in value for part in (name, str(item))]
    return [name, str(value)]
