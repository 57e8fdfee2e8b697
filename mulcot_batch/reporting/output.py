"""The report folder: Parquet tables and the page, each written atomically, plus `report.json`.

`report.json` lists what the last report wrote, so a rerun with other `--by` keys removes the
`by_*.parquet` files of the keys no longer asked for (and nothing else a user keeps there) instead
of leaving stale tables beside fresh ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import JobError

MANIFEST = "report.json"
WORK_PREFIX = ".report-tmp-"


class ReportFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def check(self, scored_folders: list[Path]) -> None:
        """Refuse to write into the scored archive's own parts (they would be read as scored posts)."""
        root = self.root.resolve()
        for folder in scored_folders:
            if root in (folder, folder / "parts"):
                raise JobError(f"--out {self.root} is a scored output folder; write the report to a folder of its own")
        if root.exists() and not root.is_dir():
            raise JobError(f"--out {self.root} is a file, not a folder")

    def write_table(self, name: str, table: pl.DataFrame) -> Path:
        path = self.root / f"{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        table.write_parquet(tmp, compression="zstd")
        os.replace(tmp, path)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.root / name
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path

    def prepare(self) -> None:
        """Create the folder; drop work files a killed report left (two reports into one folder
        would overwrite each other's tables anyway, so none can be running)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(f"{WORK_PREFIX}*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)

    def workdir(self) -> tempfile.TemporaryDirectory:
        """A temporary folder inside the report folder (same disk as the output, removed after)."""
        return tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=self.root)

    def finish(self, written: list[Path], about: dict[str, Any]) -> None:
        """Remove what the previous report wrote and this one did not, then record this one."""
        names = sorted(p.name for p in written)
        previous = self._previous_files()
        for stale in previous - set(names):
            if "/" not in stale and stale != MANIFEST:
                (self.root / stale).unlink(missing_ok=True)
        self.write_text(MANIFEST, json.dumps({**about, "files": names}, indent=2, default=str) + "\n")

    def _previous_files(self) -> set[str]:
        try:
            return set(json.loads((self.root / MANIFEST).read_text()).get("files", []))
        except (OSError, json.JSONDecodeError, AttributeError):
            return set()
