"""Output folder: atomic part files, a per-rank manifest of finished chunks, and the job identity.

Layout of `--out`:
    job.json                 what job this folder belongs to (inputs, model, options)
    parts/part-F-B.parquet   one part per finished input chunk
    manifest/rank-R.jsonl    one line per finished chunk, appended after its part is in place

A part is written under a temporary name and renamed, then its manifest line is appended. A crash
between the two leaves a part without a line: the chunk is redone on resume and its part replaced
under the same name, so no row is ever written twice. A chunk counts as done only when its
manifest line is whole and its part is a complete Parquet file holding the rows the line says, so
a truncated or half-written part (a crash, a full disk, a bad copy) is redone, never read as results.
A write that fails (disk full, read-only folder) removes its temporary file and stops the job with
a `JobFailed`; everything finished before it stays done.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import JobError, JobFailed
from .faults import crash_point

JOB_FILE = "job.json"
PARTS = "parts"
MANIFEST = "manifest"


class OutputFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.parts = root / PARTS
        self.manifest = root / MANIFEST

    def check(self, identity: dict[str, Any], overwrite: bool) -> None:
        """Refuse a folder that holds another job (or anything else), before any work; writes nothing."""
        job_file = self.root / JOB_FILE
        if job_file.is_file():
            previous = json.loads(job_file.read_text())
            if previous != identity and not overwrite:
                changed = sorted(k for k in identity.keys() | previous.keys() if identity.get(k) != previous.get(k))
                raise JobError(
                    f"--out {self.root} holds another job's results (differs in: {', '.join(changed)}); "
                    "use --overwrite to replace them or choose another folder"
                )
        elif self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise JobError(f"--out {self.root} is not empty and holds no mulcot-batch job; choose another folder")

    def claim(self, identity: dict[str, Any], overwrite: bool) -> None:
        """Make the folder this job's: fresh when overwriting, untouched parts kept when resuming."""
        self.check(identity, overwrite)
        if overwrite:
            self._clear()
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            self.manifest.mkdir(parents=True, exist_ok=True)
            for stale in self.parts.glob(".part-*.tmp-*"):  # a crashed run's unfinished parts
                stale.unlink(missing_ok=True)
            _atomic_write_bytes(self.root / JOB_FILE, (json.dumps(identity, indent=2, sort_keys=True) + "\n").encode())
        except OSError as exc:
            raise JobFailed(f"cannot write to --out {self.root}: {_reason(exc)}") from None

    def _clear(self) -> None:
        """Remove only what a job of ours wrote, never anything else a user keeps there."""
        for name in (PARTS, MANIFEST):
            shutil.rmtree(self.root / name, ignore_errors=True)
        (self.root / JOB_FILE).unlink(missing_ok=True)

    def done_chunks(self) -> set[str]:
        """Keys of every finished chunk, whichever rank or run finished it."""
        return set(self._finished())

    def done_rows(self) -> int:
        return sum(self._finished().values())

    def finished_parts(self) -> list[Path]:
        """The part files of every finished chunk: what a reader of the results should read."""
        return sorted(self.parts / f"part-{key}.parquet" for key in self._finished())

    def _finished(self) -> dict[str, int]:
        done: dict[str, int] = {}
        if not self.manifest.is_dir():
            return done
        for path in sorted(self.manifest.glob("rank-*.jsonl")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    chunk, part, rows = entry["chunk"], entry["part"], entry["rows"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line torn by a crash or a full disk: that chunk is simply redone
                if part == f"part-{chunk}.parquet" and _complete_part(self.parts / part, rows):
                    done[chunk] = rows
        return done

    def write_part(self, chunk_key: str, table: pa.Table, rank: int) -> Path:
        """Part file first (temporary name, fsync, rename), then its manifest line."""
        name = f"part-{chunk_key}.parquet"
        final = self.parts / name
        tmp = self.parts / f".{name}.tmp-{os.getpid()}"
        try:
            with pq.ParquetWriter(tmp, table.schema, compression="zstd") as writer:
                writer.write_table(table)
                crash_point("mid-part")  # the footer is written on close
            _fsync(tmp)
            crash_point("before-rename")
            os.replace(tmp, final)
            crash_point("after-rename")
            entry = json.dumps({"chunk": chunk_key, "part": name, "rows": table.num_rows})
            _append_line(self.manifest / f"rank-{rank:05d}.jsonl", entry)
            crash_point("after-manifest")
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # a read-only folder refuses even that; the next run's claim clears it
                pass
            raise JobFailed(
                f"could not write {name} into {self.parts}: {_reason(exc)}. Every chunk finished before it is kept; "
                "fix the cause and rerun the same command to resume"
            ) from None
        return final

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))


def _complete_part(path: Path, rows: int) -> bool:
    """A whole Parquet file (its footer reads) with the number of rows its manifest line records."""
    try:
        return pq.read_metadata(path).num_rows == rows
    except (OSError, pa.ArrowException):
        return False


def _append_line(path: Path, line: str) -> None:
    """Append one line and fsync; a line torn by an earlier crash is ended first, never extended."""
    data = (line + "\n").encode()
    with open(path, "ab+") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                data = b"\n" + data
        half = len(data) // 2
        crash_point("mid-manifest", lambda: (fh.write(data[:half]), fh.flush()))
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _reason(exc: OSError) -> str:
    """`No space left on device`, `Read-only file system`, ...: the OS's words, without the traceback."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    _fsync(tmp)
    os.replace(tmp, path)
