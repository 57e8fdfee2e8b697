"""Streaming Parquet input: discovery, up-front validation, and fixed-size chunks.

A chunk is the unit of work, of output (one part file) and of resume (one manifest entry). Its key
(file index, batch index) is stable for a given input list and chunk size, which is what lets an
interrupted job, or a job split over several processes, agree on what is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import JobError, JobFailed, missing_column
from .faults import crash_point
from .schema import SCORE_COLUMNS

# Internal names of the role columns inside a chunk; the user's names only matter at the edges.
ID, TEXT, IMAGE, ASPECT = "__id", "__text", "__image", "__aspect"


@dataclass(frozen=True)
class Columns:
    """Which input column plays which role, and which columns pass through to the output."""

    id: str = "post_id"
    text: str = "text"
    image: str = "image_path"
    aspect: str = "aspect"
    keep: tuple[str, ...] = ()


@dataclass
class InputPlan:
    """What was learnt from the input files' metadata before any work."""

    files: list[Path]
    rows: int
    kept_types: list[tuple[str, pa.DataType]] = field(default_factory=list)


@dataclass(frozen=True)
class Chunk:
    file_index: int
    batch_index: int
    table: pa.Table  # role columns under internal names, then kept columns

    @property
    def key(self) -> str:
        return f"{self.file_index:05d}-{self.batch_index:07d}"


def discover_inputs(paths: list[str]) -> list[Path]:
    """Parquet files named directly or found (recursively, sorted) in the folders named."""
    if not paths:
        raise JobError("no input given")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.parquet") if p.is_file())
            if not found:
                raise JobError(f"input folder holds no .parquet files: {raw}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise JobError(f"input not found: {raw}")
    return [f.resolve() for f in files]


def plan_inputs(files: list[Path], columns: Columns) -> InputPlan:
    """Validate every file's schema up front, so a bad job stops before the first row is scored."""
    reserved = {columns.id, "aspect", *(name for name, _ in SCORE_COLUMNS)}
    clash = [c for c in columns.keep if c in reserved]
    if clash:
        raise JobError(f"--keep column(s) {', '.join(clash)} would clash with output columns of the same name")
    kept_types: dict[str, pa.DataType] = {}
    rows = 0
    for path in files:
        try:
            meta = pq.read_metadata(path)
            schema = meta.schema.to_arrow_schema()
        except (pa.ArrowInvalid, OSError) as exc:
            raise JobError(f"not a readable Parquet file: {path} ({exc})") from None
        for role, name in (("id", columns.id), ("text", columns.text)):
            if name not in schema.names:
                raise missing_column(f"input {path}", name, schema.names, f"name the right one with --{role}-col")
        for role, name in (("id", columns.id), ("text", columns.text), ("image", columns.image), ("aspect", columns.aspect)):
            if name in schema.names:
                _check_role_type(role, name, schema.field(name).type, path)
        for name in columns.keep:
            if name in schema.names:
                kept_types[name] = _common_type(name, kept_types.get(name), schema.field(name).type, path)
        rows += meta.num_rows
    missing = [c for c in columns.keep if c not in kept_types]
    if missing:
        raise JobError(f"--keep column(s) not found in any input file: {', '.join(missing)}")
    return InputPlan(files=files, rows=rows, kept_types=[(c, kept_types[c]) for c in columns.keep])


def _check_role_type(role: str, name: str, dtype: pa.DataType, path: Path) -> None:
    """Role columns hold strings (ids may be integers); anything else is a wrong column, not a post."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if _is_text(dtype) or pa.types.is_null(dtype) or (role == "id" and pa.types.is_integer(dtype)):
        return
    expected = "strings or integers" if role == "id" else "strings"
    raise JobError(f"{role} column {name!r} is {dtype} in {path}; expected {expected}")


def _is_text(dtype: pa.DataType) -> bool:
    """Strings, or raw bytes that some writers use for strings (decoded as UTF-8)."""
    return any(check(dtype) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                          pa.types.is_large_binary)) or str(dtype) in ("string_view", "binary_view")


def _common_type(name: str, seen: pa.DataType | None, found: pa.DataType, path: Path) -> pa.DataType:
    """One output type for a kept column across files (string and large_string alike, ints widened)."""
    if pa.types.is_large_string(found):
        found = pa.string()
    if seen is None or seen == found:
        return found
    try:
        merged = pa.unify_schemas([pa.schema([(name, seen)]), pa.schema([(name, found)])], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise JobError(f"kept column {name!r} is {found} in {path} but {seen} in an earlier file") from None
    return merged.field(name).type


def iter_chunks(plan: InputPlan, columns: Columns, chunk_rows: int, limit: int | None = None) -> Iterator[Chunk]:
    """Record batches of at most `chunk_rows` rows, in input order, never the whole file at once."""
    remaining = limit if limit is not None else plan.rows
    for file_index, path in enumerate(plan.files):
        if remaining <= 0:
            return
        parquet = pq.ParquetFile(path)
        present = set(parquet.schema_arrow.names)
        wanted = [c for c in {columns.id, columns.text, columns.image, columns.aspect, *columns.keep} if c in present]
        for batch_index, batch in enumerate(_batches(parquet, path, chunk_rows, wanted)):
            if remaining <= 0:
                return
            batch = batch.slice(0, remaining)
            remaining -= batch.num_rows
            crash_point("read")
            yield Chunk(file_index, batch_index, _normalise(pa.Table.from_batches([batch]), columns, plan))


def _batches(parquet: pq.ParquetFile, path: Path, chunk_rows: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The file's record batches; a damaged page (its footer was fine at planning) stops the job cleanly."""
    batches = parquet.iter_batches(batch_size=chunk_rows, columns=columns)
    rows = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise JobFailed(
                f"input file {path} is damaged after row {rows:,} ({reason}); chunks finished before it are kept. "
                "Repair or replace the file and rerun (with --overwrite, since the input changed)"
            ) from None
        rows += batch.num_rows
        yield batch


def _normalise(table: pa.Table, columns: Columns, plan: InputPlan) -> pa.Table:
    """Role columns as strings under internal names; absent columns as nulls of the planned type."""
    n = table.num_rows
    out: dict[str, pa.Array] = {}
    for internal, name in ((ID, columns.id), (TEXT, columns.text), (IMAGE, columns.image), (ASPECT, columns.aspect)):
        out[internal] = _as_string(table[name]) if name in table.column_names else pa.nulls(n, pa.string())
    for name, dtype in plan.kept_types:
        kept = table[name].cast(dtype) if name in table.column_names else pa.nulls(n, dtype)
        out[name] = _valid_utf8(kept) if pa.types.is_string(dtype) else kept
    return pa.table(out)


def _as_string(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Ids, texts, paths and aspects as valid UTF-8 strings (integer ids as their decimal digits)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if _is_text(column.type):
        return _valid_utf8(column)
    return column.cast(pa.string())


def _valid_utf8(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Bytes that are not UTF-8 (e.g. lone surrogates written as CESU-8) become U+FFFD, never a crash.

    Parquet readers do not check that string data is UTF-8, and Python cannot decode it, so a single
    bad value would otherwise kill the DataLoader worker that converts it.
    """
    try:
        text = column.cast(pa.string())
        text.validate(full=True)
        return text
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = column.cast(pa.large_binary()).to_pylist()
        return pa.chunked_array([pa.array([None if v is None else v.decode("utf-8", "replace") for v in values], pa.string())])
