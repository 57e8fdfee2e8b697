"""The scored archive a report reads: found, checked from Parquet footers only, then scanned lazily.

Everything here runs before a single data page is decoded, so a wrong folder, parts of another
tool, parts scored by different models or with clashing column types stop the report at once with
one line, instead of producing numbers that silently mix incomparable scores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import JobError
from ..schema import SCORE_COLUMNS
from ..writing import JOB_FILE, PARTS

SCORE_NAMES = [name for name, _ in SCORE_COLUMNS]
ROW = "__row"  # internal row index, stable across scans of the same archive
STREAMING = "streaming"


@dataclass(frozen=True)
class PartInfo:
    """What a part's footer says: its schema, row count and which model(s) wrote it."""

    path: Path
    folder: Path
    schema: pa.Schema
    rows: int
    models: frozenset[str]


@dataclass
class ScoredArchive:
    """One or more scored output folders, validated to be one consistent, comparable archive."""

    folders: list[Path]
    parts: list[Path]
    schema: pl.Schema
    id_col: str
    models: list[str]
    part_rows: list[int]

    @property
    def rows(self) -> int:
        return sum(self.part_rows)

    @property
    def kept(self) -> list[str]:
        """The pass-through columns (`--keep` of the scoring job), in output order."""
        return [c for c in self.schema.names() if c != self.id_col and c not in SCORE_NAMES]

    def scan(self, row_index: bool = False, parts: list[int] | None = None) -> pl.LazyFrame:
        """A lazy scan of every part (or of the parts numbered `parts`, for a few rows' details);
        columns a part lacks are read as nulls of the unified type."""
        return pl.scan_parquet(
            self.parts if parts is None else [self.parts[i] for i in parts],
            schema=self.schema,
            missing_columns="insert",
            cast_options=pl.ScanCastOptions(integer_cast="upcast", float_cast="upcast"),
            row_index_name=ROW if row_index else None,
        )


def collect(frame: pl.LazyFrame) -> pl.DataFrame:
    """Run a query on polars' streaming engine: batches of rows, never the whole archive at once."""
    return frame.collect(engine=STREAMING)


def open_archive(paths: Iterable[str]) -> ScoredArchive:
    """Find the parts of every scored folder and check that they belong together."""
    folders: list[Path] = []
    parts: list[tuple[Path, Path]] = []
    for raw in paths:
        folder, found = _find_parts(raw)
        if folder in folders:
            continue  # the same folder named twice would count every post twice
        folders.append(folder)
        parts += [(folder, p) for p in found]
    with ThreadPoolExecutor(max_workers=8) as pool:
        infos = list(pool.map(lambda fp: _read_footer(*fp), parts))
    id_col = _common_id_column(infos)
    schema = _unified_schema(infos, id_col)
    models = _single_model(infos)
    _same_weights(folders)
    return ScoredArchive(folders, [i.path for i in infos], schema, id_col, models, [i.rows for i in infos])


def _find_parts(raw: str) -> tuple[Path, list[Path]]:
    """`DIR/parts/part-*.parquet` of a `score --out DIR` folder, or the parts folder itself."""
    path = Path(raw)
    if not path.exists():
        raise JobError(f"scored output not found: {raw}")
    if not path.is_dir():
        raise JobError(f"{raw} is a file; give the folder that `mulcot-batch score --out` wrote")
    parts_dir = path / PARTS if (path / PARTS).is_dir() else path
    found = sorted(p for p in parts_dir.glob("part-*.parquet") if p.is_file())
    if not found:
        raise JobError(
            f"{raw} holds no scored parts (expected {PARTS}/part-*.parquet, as written by `mulcot-batch score`)"
        )
    return path.resolve(), [p.resolve() for p in found]


def _read_footer(folder: Path, path: Path) -> PartInfo:
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except (pa.ArrowInvalid, OSError) as exc:
        raise JobError(f"not a readable Parquet file: {path} ({exc})") from None
    _check_score_columns(path, schema)
    return PartInfo(path, folder, schema, meta.num_rows, _models_of(path, meta))


def _check_score_columns(path: Path, schema: pa.Schema) -> None:
    """Every part carries the fixed score columns with their fixed types (schema.SCORE_COLUMNS)."""
    for name, expected in SCORE_COLUMNS:
        if name not in schema.names:
            raise JobError(f"{path} is not a mulcot-batch scored part: column {name!r} is missing")
        found = schema.field(name).type
        if found != expected and not (pa.types.is_string(expected) and pa.types.is_large_string(found)):
            raise JobError(f"{path}: column {name!r} is {found}, a scored part has {expected}")
    if schema.names[0] in SCORE_NAMES:
        raise JobError(f"{path} is not a mulcot-batch scored part: its first column is not the post id")


def _models_of(path: Path, meta: pq.FileMetaData) -> frozenset[str]:
    """Model names from the column statistics; the column itself only where a writer kept none."""
    index = meta.schema.to_arrow_schema().get_field_index("model")
    found: set[str] = set()
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(index).statistics
        if stats is None or not stats.has_min_max:
            if meta.row_group(g).num_rows and (stats is None or stats.null_count != meta.row_group(g).num_rows):
                return frozenset(pq.read_table(path, columns=["model"]).column(0).drop_null().unique().to_pylist())
            continue
        found |= {stats.min, stats.max}
    return frozenset(found)


def _common_id_column(infos: list[PartInfo]) -> str:
    ids = {i.schema.names[0]: i for i in infos}
    if len(ids) > 1:
        where = "; ".join(f"{name!r} in {info.folder}" for name, info in ids.items())
        raise JobError(f"scored parts with different id columns mixed together ({where}); report them separately")
    return next(iter(ids))


def _unified_schema(infos: list[PartInfo], id_col: str) -> pl.Schema:
    """Id, then kept columns in order of first appearance, then the score columns.

    A kept column missing from some parts is read as null there (outputs of jobs with different
    `--keep`); integer and float columns of different widths are widened; any other type clash
    stops the report.
    """
    seen: dict[str, tuple[pl.DataType, Path]] = {}
    polars_of: dict[str, pl.Schema] = {}
    for info in infos:
        key = info.schema.to_string(show_schema_metadata=False)
        if key not in polars_of:
            polars_of[key] = pl.from_arrow(info.schema.empty_table()).schema
        for name, dtype in polars_of[key].items():
            if name not in seen:
                seen[name] = (dtype, info.path)
            elif seen[name][0] != dtype:
                seen[name] = (_widen(name, seen[name], dtype, info.path), seen[name][1])
    kept = [n for n in seen if n != id_col and n not in SCORE_NAMES]
    return pl.Schema([(n, seen[n][0]) for n in [id_col, *kept, *SCORE_NAMES]])


def _widen(name: str, first: tuple[pl.DataType, Path], found: pl.DataType, path: Path) -> pl.DataType:
    dtype, where = first
    if dtype.is_integer() and found.is_integer():
        return pl.Int64
    if dtype.is_float() and found.is_float():
        return pl.Float64
    raise JobError(f"column {name!r} is {found} in {path} but {dtype} in {where}; parts with mixed schemas")


def _single_model(infos: list[PartInfo]) -> list[str]:
    """Scores of different models are not comparable: refuse to average them into one report."""
    where: dict[str, Path] = {}
    for info in infos:
        for model in info.models:
            where.setdefault(model, info.folder)
    if len(where) > 1:
        listing = "; ".join(f"{m} (e.g. {f})" for m, f in sorted(where.items()))
        raise JobError(f"scored parts from different models mixed together: {listing}; report each model separately")
    return sorted(where)


def _same_weights(folders: list[Path]) -> None:
    """Two `nano` jobs run with different shipped weights also score differently (job.json says)."""
    fingerprints: dict[str, Path] = {}
    for folder in folders:
        job = folder / JOB_FILE
        if job.is_file():
            try:
                identity = json.loads(job.read_text())
            except json.JSONDecodeError:
                continue
            fingerprints.setdefault(f"{identity.get('model')}@{identity.get('nano_parts')}", folder)
    if len(fingerprints) > 1:
        listing = "; ".join(f"{k} in {v}" for k, v in fingerprints.items())
        raise JobError(f"scored folders from different model weights mixed together: {listing}")
