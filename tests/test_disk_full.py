"""Disk full and read-only output: the job ends with one clear line (exit 3) and a state that a rerun
of the same command completes, never a half-valid output.

The real cases use a small tmpfs mounted by the test (needs root and a kernel that lets this
process mount; skipped with the reason otherwise; `chmod` cannot stand in, since root ignores it).
The simulated case injects the same OSError into the write path and runs everywhere.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from mulcot_batch import writing
from mulcot_batch.writing import OutputFolder

from .conftest import CLI, TINY, cli_env, manifest_entries, read_output, run_cli, text_dump


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 64 KiB tmpfs at tmp_path/disk; yields a function that remounts it with other options."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (chmod cannot make a folder read-only for root either)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(disk))
    if mounted.returncode != 0:
        pytest.skip(f"this sandbox does not allow mounting a tmpfs: {mounted.stderr.strip()}")

    def remount(options: str) -> None:
        for _ in range(500):  # a remount read-only is refused (EBUSY) while a file is open for writing
            done = _mount("-o", f"remount,{options}", str(disk))
            if done.returncode == 0:
                return
            time.sleep(0.01)
        raise AssertionError(f"remount {options} failed: {done.stderr}")

    yield disk, remount
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def assert_resumable_state(out: Path, temporary_left: bool = False) -> None:
    """What a failed write may leave: only whole parts count, and no half-written part lingers
    (on a read-only folder it cannot even be removed: the next run clears it)."""
    folder = OutputFolder(out)
    for part in folder.finished_parts():
        pq.read_metadata(part)  # whole Parquet files
    assert temporary_left or not list((out / "parts").glob(".*tmp*"))


def job_args(inputs: Path, out: Path, model: Path) -> list:
    return ["score", inputs, "--out", out, "--model", model, "--chunk-rows", "8", "--batch-size", "8",
            "--rationales", "all", "--max-new-tokens", "12", "--workers", "0", *TINY]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_disk_full_stops_cleanly_and_a_rerun_with_space_finishes(small_tmpfs, tiny_qwen_folder: Path, tmp_path: Path):
    disk, remount = small_tmpfs
    inputs = text_dump(tmp_path / "posts.parquet", 160)  # 20 parts of ~5 KiB: more than 64 KiB
    out = disk / "out"
    args = job_args(inputs, out, tiny_qwen_folder)
    full = run_cli(*args)
    assert full.exit_code == 3, full.output
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("mulcot-batch: error: could not write part-") and "No space left on device" in last
    assert "rerun the same command to resume" in last and "Traceback" not in full.stderr
    done_before = OutputFolder(out).done_rows()
    assert 0 < done_before < 160
    assert_resumable_state(out)

    remount("size=16m")
    again = run_cli(*args[:-1])
    assert again.exit_code == 0, again.output
    assert f"resuming: {done_before} of 160 rows" in again.stderr
    assert read_output(out)["post_id"].to_list() == pl.read_parquet(inputs)["post_id"].to_list()
    assert_resumable_state(out)


@pytest.mark.slow
def test_output_turning_read_only_mid_job_stops_cleanly_and_resumes(small_tmpfs, tiny_qwen_folder: Path, tmp_path: Path):
    disk, remount = small_tmpfs
    remount("size=16m")
    inputs = text_dump(tmp_path / "posts.parquet", 400)
    out = disk / "out"
    args = job_args(inputs, out, tiny_qwen_folder)
    proc = subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(manifest_entries(out)) < 2:
        time.sleep(0.02)
    assert proc.poll() is None, "the job ended before the disk could turn read-only"
    remount("ro")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "Read-only file system" in last and "rerun the same command to resume" in last

    still = run_cli(*args)  # rerun while still read-only: refused before any work, same clear line
    assert still.exit_code == 3 and f"cannot write to --out {out}: Read-only file system" in still.stderr

    remount("rw")
    assert_resumable_state(out, temporary_left=True)
    again = run_cli(*args)
    assert again.exit_code == 0, again.output
    assert read_output(out)["post_id"].to_list() == pl.read_parquet(inputs)["post_id"].to_list()
    assert_resumable_state(out)


def test_simulated_disk_full_on_the_third_part(monkeypatch, tiny_qwen_folder: Path, tmp_path: Path):
    """The same failure injected into the write path: runs on any machine, as any user."""
    inputs = text_dump(tmp_path / "posts.parquet", 40)
    out = tmp_path / "out"
    real_replace, calls = os.replace, []

    def replace_until_full(src, dst):  # os is one module: job.json goes through here too
        calls.extend([dst] if Path(dst).name.startswith("part-") else [])
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(writing.os, "replace", replace_until_full)
    args = job_args(inputs, out, tiny_qwen_folder)
    full = run_cli(*args)
    assert full.exit_code == 3 and full.stderr.count("\n") == 1
    assert "could not write part-00000-0000002.parquet" in full.stderr and "No space left on device" in full.stderr
    assert OutputFolder(out).done_rows() == 16
    assert_resumable_state(out)
    monkeypatch.setattr(writing.os, "replace", real_replace)
    assert run_cli(*args).exit_code == 0
    assert read_output(out)["post_id"].to_list() == pl.read_parquet(inputs)["post_id"].to_list()
