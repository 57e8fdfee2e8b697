"""Several processes: `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo), one rank
killed with SIGKILL mid-job, then the job resumed: the union of all parts is the input, no overlap.

(A plain `--num_processes 2` starts one process on a machine without a GPU; `--multi_gpu` is what
makes accelerate start two CPU ranks.)
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from .conftest import TINY, cli_env, manifest_entries, read_output, run_cli, text_dump

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mulcot_batch.cli"]


def launch(args: list, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(LAUNCH + [str(a) for a in args], capture_output=True, text=True, timeout=600, env=cli_env(**env))


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_rank_killed_mid_job_then_resumed_covers_the_input_once(tiny_qwen_folder: Path, tmp_path: Path):
    rows, chunk = 120, 2  # 60 chunks, 30 per rank: rank 0 is still busy when rank 1 dies
    inputs = text_dump(tmp_path / "posts.parquet", rows)
    out = tmp_path / "out"
    opts = ["--model", tiny_qwen_folder, "--chunk-rows", chunk, "--batch-size", "2", "--rationales", "all",
            "--max-new-tokens", "4", "--workers", "0", *TINY]
    args = ["score", inputs, "--out", out, *opts]

    crashed = launch(args, MULCOT_BATCH_CRASH_AT="after-manifest:2", MULCOT_BATCH_CRASH_RANK="1")
    assert crashed.returncode != 0
    by_rank = Counter(entry["rank"] for entry in _entries_with_rank(out))
    assert by_rank[1] == 2  # rank 1 died right after recording its second chunk
    assert sum(by_rank.values()) < rows // chunk  # the launcher stopped rank 0 too (SIGTERM: after its chunk in flight)
    assert f"exitcode  : -{int(signal.SIGKILL)}" in crashed.stderr, crashed.stderr[-3000:]  # rank 1
    # Rank 0, told to stop by the launcher, finishes its chunk in flight (143). Were it already done
    # (a slow launcher), it would be waiting for rank 1 at the end: one line (3) or killed there (-15).
    rank0 = re.search(r"rank\s*: 0 .*?exitcode\s*: (-?\d+)", crashed.stderr, re.DOTALL)
    assert rank0 and int(rank0.group(1)) in (128 + signal.SIGTERM, 3, -signal.SIGTERM), crashed.stderr[-3000:]
    assert "[rank0]: Traceback" not in crashed.stderr

    resumed = launch(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    chunks = Counter(entry["chunk"] for entry in manifest_entries(out))
    assert len(chunks) == rows // chunk and set(chunks.values()) == {1}  # every chunk done by exactly one rank, once
    scored = read_output(out)
    assert scored["post_id"].to_list() == pl.read_parquet(inputs)["post_id"].to_list()  # the union is the input

    alone = tmp_path / "alone"
    single = run_cli("score", inputs, "--out", alone, *opts)
    assert single.exit_code == 0, single.output
    assert scored["label"].to_list() == read_output(alone)["label"].to_list()
    assert scored["rationale"].to_list() == read_output(alone)["rationale"].to_list()


def _entries_with_rank(out: Path) -> list[dict]:
    import json

    entries = []
    for path in sorted((out / "manifest").glob("rank-*.jsonl")):
        rank = int(path.stem.split("-")[1])
        for line in path.read_text().splitlines():
            try:
                entries.append({**json.loads(line), "rank": rank})
            except json.JSONDecodeError:
                pass
    return entries
