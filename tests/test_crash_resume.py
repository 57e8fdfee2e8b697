"""Crash and resume: SIGKILL at every point of the write path, damaged parts, SIGINT/SIGTERM.

The promise under test: every input row comes out exactly once, with the labels of an
uninterrupted run, however often the job is killed, as long as the same command is rerun.
Kills are placed deterministically with the fault-injection points of `mulcot_batch.faults`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pyarrow.parquet as pq
import pytest

from mulcot_batch.faults import POINTS
from mulcot_batch.writing import OutputFolder

from .conftest import CLI, TINY, cli_env, manifest_entries, read_output, run_cli, run_job, text_dump

# Runs that need a real process (a SIGKILL, a signal) use run_job; the others run in-process (faster).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS, CHUNK = 24, 4  # 6 chunks
# batch 2 < chunk 4, so "mid-batch" really is in the middle of a chunk; short chains are compared too
OPTS = ["--limit", ROWS, "--chunk-rows", CHUNK, "--batch-size", "2", "--rationales", "all", "--max-new-tokens", "4",
        "--workers", "0", *TINY]


def score_args(inputs: Path, out: Path, model: Path, *extra) -> list:
    return ["score", inputs, "--out", out, "--model", model, *OPTS, *extra]


@pytest.fixture(scope="module")
def reference(tiny_qwen_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    """The sample dump (real images, one missing) and the output of one uninterrupted run over it."""
    import shutil

    from .conftest import SAMPLE

    folder = tmp_path_factory.mktemp("crash-ref")
    shutil.copytree(SAMPLE, folder / "sample")
    inputs = folder / "sample" / "posts.parquet"
    done = run_cli(*score_args(inputs, folder / "out", tiny_qwen_folder))
    assert done.exit_code == 0, done.output
    return inputs, read_output(folder / "out")


def assert_same_as_reference(out: Path, expected: pl.DataFrame) -> None:
    """Each row once, in input order, with the reference's labels, probabilities and chains."""
    scored = read_output(out)
    assert scored["post_id"].to_list() == expected["post_id"].to_list()
    assert scored["label"].to_list() == expected["label"].to_list()
    assert scored["rationale"].to_list() == expected["rationale"].to_list()
    assert np.allclose(scored["p_positive"].to_numpy(), expected["p_positive"].to_numpy(), atol=1e-6)
    folder = OutputFolder(out)  # what resume and readers trust: every chunk finished, with its rows
    assert len(folder.done_chunks()) == ROWS // CHUNK and folder.done_rows() == ROWS
    assert folder.finished_parts() == sorted((out / "parts").glob("part-*.parquet"))
    assert not list((out / "parts").glob(".*"))  # no temporary part left behind


def test_every_fault_point_is_exercised():
    assert set(POINTS) == {"read", "mid-batch", "mid-part", "before-rename", "after-rename", "mid-manifest",
                           "after-manifest"}


@pytest.mark.slow
def test_sigkill_at_every_point_then_resume_gives_the_uninterrupted_result(reference, tiny_qwen_folder: Path, tmp_path: Path):
    inputs, expected = reference
    out = tmp_path / "out"
    args = score_args(inputs, out, tiny_qwen_folder)
    parts = out / "parts"
    recorded = lambda: len(manifest_entries(out))  # noqa: E731

    # One job, killed seven times in a row at a different point each time, then finished.
    crash = run_job(args, MULCOT_BATCH_CRASH_AT="read:2")  # reading the second chunk
    assert crash.returncode == -signal.SIGKILL and recorded() == 1

    assert run_job(args, MULCOT_BATCH_CRASH_AT="mid-batch").returncode == -signal.SIGKILL
    assert recorded() == 1 and len(list(parts.glob("part-*.parquet"))) == 1

    assert run_job(args, MULCOT_BATCH_CRASH_AT="mid-part").returncode == -signal.SIGKILL
    (half,) = parts.glob(".part-*.tmp-*")  # a Parquet file with data but no footer...
    with pytest.raises(Exception):
        pq.read_metadata(half)
    assert recorded() == 1  # ...never counted as a result

    assert run_job(args, MULCOT_BATCH_CRASH_AT="before-rename").returncode == -signal.SIGKILL
    (whole,) = parts.glob(".part-*.tmp-*")  # the earlier half-written one was cleared on start
    assert whole != half and pq.read_metadata(whole).num_rows == CHUNK and recorded() == 1

    assert run_job(args, MULCOT_BATCH_CRASH_AT="after-rename").returncode == -signal.SIGKILL
    assert len(list(parts.glob("part-*.parquet"))) == 2 and recorded() == 1  # in place, not recorded: redone

    assert run_job(args, MULCOT_BATCH_CRASH_AT="mid-manifest").returncode == -signal.SIGKILL
    manifest = out / "manifest" / "rank-00000.jsonl"
    assert not manifest.read_text().endswith("\n") and recorded() == 1  # a torn line

    assert run_job(args, MULCOT_BATCH_CRASH_AT="after-manifest:2").returncode == -signal.SIGKILL
    assert recorded() == 3  # the torn line was ended, not extended: both new lines count

    final = run_cli(*args[:-1])  # not --quiet: it says it resumes
    assert final.exit_code == 0, final.output
    assert f"resuming: {3 * CHUNK} of {ROWS} rows" in final.stderr
    assert_same_as_reference(out, expected)


def test_damaged_parts_are_redone_never_read(reference, tiny_qwen_folder: Path, tmp_path: Path):
    inputs, expected = reference
    out = tmp_path / "out"
    args = score_args(inputs, out, tiny_qwen_folder)
    assert run_cli(*args).exit_code == 0
    parts = sorted((out / "parts").glob("part-*.parquet"))
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[: len(data) // 2])  # truncated: no footer
    parts[2].write_bytes(b"")  # zero bytes
    pq.write_table(pq.read_table(parts[3]).slice(0, 1), parts[3])  # a whole Parquet file, but rows missing
    untouched = parts[0].stat().st_mtime_ns
    again = run_cli(*args[:-1])
    assert again.exit_code == 0, again.output
    assert f"resuming: {3 * CHUNK} of {ROWS} rows" in again.stderr
    assert_same_as_reference(out, expected)
    assert parts[0].stat().st_mtime_ns == untouched


def test_dead_dataloader_worker_stops_the_job_in_one_line_and_resumes(tiny_qwen_folder: Path, tmp_path: Path):
    """A worker killed (the OOM killer's favourite target) while reading the second chunk."""
    inputs = text_dump(tmp_path / "posts.parquet", 12)
    out = tmp_path / "out"
    args = ["score", inputs, "--out", out, "--model", tiny_qwen_folder, "--chunk-rows", "4", "--rationales", "none",
            "--workers", "1", *TINY]
    died = run_job(args, MULCOT_BATCH_CRASH_AT="read:2")
    assert died.returncode == 3, died.stderr[-3000:]
    last = died.stderr.strip().splitlines()[-1]
    assert last.startswith("mulcot-batch: error: DataLoader worker") and "rerun the same command" in last
    assert "Traceback" not in died.stderr
    again = run_cli(*args)
    assert again.exit_code == 0, again.output
    assert read_output(out)["post_id"].to_list() == pl.read_parquet(inputs)["post_id"].to_list()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to the process group", "SIGTERM twice"])
def test_signals_stop_cleanly_after_the_chunk_in_flight(how: str, tiny_qwen_folder: Path, tmp_path: Path):
    rows = 240
    inputs = text_dump(tmp_path / "posts.parquet", rows)
    out = tmp_path / "out"
    args = ["score", inputs, "--out", out, "--model", tiny_qwen_folder, "--chunk-rows", "8", "--batch-size", "8",
            "--rationales", "all", "--max-new-tokens", "8", "--workers", "2", *TINY]
    proc = subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(manifest_entries(out)) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be signalled"
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) == 2  # the DataLoader workers
    if how == "SIGINT to the process group":  # what Ctrl-C in a terminal does: workers get it too
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
        if how == "SIGTERM twice":
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if how == "SIGTERM twice":  # stops at once, killed by the signal (unless the first stop won the race)
        assert proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), err[-3000:]
    else:
        expected = 128 + (signal.SIGINT if "SIGINT" in how else signal.SIGTERM)
        assert proc.returncode == expected, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("mulcot-batch: stopped: ") and "Rerun the same command to resume" in last
        assert "Traceback" not in err
    assert all(_gone(worker) for worker in workers)  # no orphan or zombie DataLoader worker left behind
    done = len(manifest_entries(out))
    assert 2 <= done < rows // 8
    again = run_cli(*args)
    assert again.exit_code == 0, again.output
    scored = read_output(out)
    assert scored["post_id"].to_list() == pl.read_parquet(inputs)["post_id"].to_list()
    assert scored["status"].to_list() == ["ok"] * rows


def _gone(process: psutil.Process, timeout: float = 30) -> bool:
    """The process has exited and been reaped: a zombie still has its table entry, so it is not gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            process.status()
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False
