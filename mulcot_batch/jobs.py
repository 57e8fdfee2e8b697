"""TOML job files: a sequence of stages, each a table named after a command, with its options.

    [score]
    inputs = ["sample_data"]
    out = "out/sample"
    keep = ["created_at"]

    [train_assistant]          # tables run in file order
    train = "data/train.parquet"
    ...

A command can run more than once: write its tables as an array, `[[evaluate]]`, once per run; every
stage runs where its header stands in the file.

Keys are the command's option names with underscores; a list becomes a comma-separated value for
`keep` and repeated values otherwise; `true`/`false` switch flags. The command's positional
arguments are given by their own names (`inputs` for score, `scored` for evaluate, `input_file`
for annotate). Relative paths are relative to the current directory, as on the command line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from .errors import JobError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COMMA_SEPARATED = {"keep"}


_STAGE_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_-]+)\s*\]\]?\s*(#.*)?$")


def read_job(path: Path) -> list[tuple[str, dict]]:
    """The stages of a job file, as (command name, options table), in the order they run."""
    if not path.is_file():
        raise JobError(f"job file not found: {path}")
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"job file {path} is not valid TOML: {exc}") from None
    if not data:
        raise JobError(f"job file {path} has no stages")
    return _in_file_order(data, text, path)


def _in_file_order(data: dict, text: str, path: Path) -> list[tuple[str, dict]]:
    """TOML hands back all of a `[[name]]` array's tables as one list, wherever they stand in the
    file, so the order of the header lines says when each one runs."""
    pending: dict[str, list[dict]] = {}
    for name, value in data.items():
        tables = value if isinstance(value, list) else [value]
        if not tables or not all(isinstance(table, dict) for table in tables):
            raise JobError(f"job file {path}: {name!r} is not a stage; write a stage as a table, [{name}]")
        pending[name] = list(tables)
    headers = [m.group(1) for line in text.splitlines() if (m := _STAGE_HEADER.match(line))]
    if sorted(headers) != sorted(name for name, tables in pending.items() for _ in tables):
        return [(name, table) for name, tables in pending.items() for table in tables]  # inline tables: TOML's order
    return [(name, pending[name].pop(0)) for name in headers]


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
