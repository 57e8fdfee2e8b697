"""Bounded memory: peak RSS of a job barely moves when the archive grows tenfold (20k -> 200k rows).

Text-only rows, the tiny random Qwen2.5-VL, `--rationales none`, one DataLoader worker. Texts repeat
every 64 rows (as retweets do), so the ~1 minute goes into the row path that has to stay flat:
reading, chunking, joining scores back onto rows, writing parts and manifests, resume bookkeeping,
the final summary. What the model holds depends on the batch and chunk size, not on the row count
(README, "Memory").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mulcot_batch.writing import OutputFolder

from .conftest import cli_env, text_dump

# Runs the job as its own child and reports the largest peak RSS (KiB) among the processes it waited
# for: the job's main process and, reaped by it, its DataLoader worker.
PEAK_OF_CHILDREN = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)"
)


def peak_rss_kib(args: list) -> int:
    command = [sys.executable, "-c", PEAK_OF_CHILDREN, sys.executable, "-m", "mulcot_batch.cli", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=cli_env())
    peak, status = done.stdout.split()
    assert status == "0", done.stderr[-3000:]
    return int(peak)


@pytest.mark.slow
def test_peak_memory_stays_flat_from_20k_to_200k_rows(tiny_qwen_folder: Path, tmp_path: Path):
    peaks = {}
    for rows in (20_000, 200_000):
        inputs = text_dump(tmp_path / f"posts-{rows}.parquet", rows, distinct=64)
        out = tmp_path / f"out-{rows}"
        peaks[rows] = peak_rss_kib(["score", inputs, "--out", out, "--model", tiny_qwen_folder, "--rationales", "none",
                                    "--chunk-rows", "2048", "--batch-size", "64", "--workers", "1", "--dtype", "float32",
                                    "--quiet"])
        assert OutputFolder(out).done_rows() == rows
    growth = peaks[200_000] / peaks[20_000] - 1
    print(f"peak RSS: 20k rows {peaks[20_000] / 1024:.0f} MiB, 200k rows {peaks[200_000] / 1024:.0f} MiB, {growth:+.1%}")
    assert growth < 0.25, peaks
