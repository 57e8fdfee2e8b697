"""Output folder: atomic part files, a per-rank manifest of finished chunks, and the job identity.

Layout of `--out`:
    job.json                 what job this folder belongs to (inputs, model, options)
    parts/part-F-B.parquet   one part per finished input chunk
    manifest/rank-R.jsonl    one line per finished chunk, appended after its part is in place

A part is written under a temporary name and renamed, then its manifest line is appended. A crash
between the two leaves a part without a line: the chunk is redone on resume and its part replaced
under the same name, so no row is ever written twice.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import JobError

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
        self.parts.mkdir(parents=True, exist_ok=True)
        self.manifest.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(self.root / JOB_FILE, (json.dumps(identity, indent=2, sort_keys=True) + "\n").encode())

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

    def _finished(self) -> dict[str, int]:
        done: dict[str, int] = {}
        if not self.manifest.is_dir():
            return done
        for path in self.manifest.glob("rank-*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash: that chunk is simply redone
                if (self.parts / entry["part"]).is_file():
                    done[entry["chunk"]] = entry["rows"]
        return done

    def write_part(self, chunk_key: str, table: pa.Table, rank: int) -> Path:
        name = f"part-{chunk_key}.parquet"
        final = self.parts / name
        tmp = self.parts / f".{name}.tmp-{os.getpid()}"
        pq.write_table(table, tmp, compression="zstd")
        _fsync(tmp)
        os.replace(tmp, final)
        entry = json.dumps({"chunk": chunk_key, "part": name, "rows": table.num_rows})
        with open(self.manifest / f"rank-{rank:05d}.jsonl", "a") as fh:
            fh.write(entry + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return final

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    _fsync(tmp)
    os.replace(tmp, path)
