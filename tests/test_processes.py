"""Real processes: `accelerate launch` with 2 CPU ranks, and a kill -9 in the middle of a job."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from .conftest import read_output

CLI = [sys.executable, "-m", "mulcot_batch.cli"]
FAST = ["--rationales", "none", "--batch-size", "8", "--workers", "0", "--dtype", "float32", "--quiet"]


def test_two_accelerate_processes_split_the_work_without_overlap(sample_copy: Path, tmp_path: Path):
    out = tmp_path / "out"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mulcot_batch.cli"]
    args = ["score", str(sample_copy), "--out", str(out), "--limit", "24", "--chunk-rows", "4", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch + args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    manifests = {p.name: p.read_text().splitlines() for p in (out / "manifest").glob("rank-*.jsonl")}
    assert set(manifests) == {"rank-00000.jsonl", "rank-00001.jsonl"}
    chunks = [line for lines in manifests.values() for line in lines]
    assert len(chunks) == 6 and all(len(lines) == 3 for lines in manifests.values())
    scored = read_output(out)
    assert sorted(scored["post_id"]) == sorted(pl.read_parquet(sample_copy).head(24)["post_id"])
    single = subprocess.run(CLI + ["score", str(sample_copy), "--out", str(tmp_path / "one"), "--limit", "24",
                                   "--chunk-rows", "4", *FAST], capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    alone = read_output(tmp_path / "one")
    assert scored["post_id"].to_list() == alone["post_id"].to_list()
    assert np.allclose(scored["p_positive"].to_numpy(), alone["p_positive"].to_numpy(), atol=1e-4)


def test_kill_9_then_rerun_loses_nothing_and_doubles_nothing(sample_copy: Path, tmp_path: Path):
    out = tmp_path / "out"
    cmd = CLI + ["score", str(sample_copy), "--out", str(out), "--limit", "40", "--chunk-rows", "4", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "manifest" / "rank-00000.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and len(manifest.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the job finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = len(manifest.read_text().splitlines())
    assert 2 <= finished_before < 10
    rerun = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming" in rerun.stderr
    scored = read_output(out)
    assert scored["post_id"].to_list() == pl.read_parquet(sample_copy).head(40)["post_id"].to_list()
    assert not list((out / "parts").glob(".*"))  # no temporary part left behind
