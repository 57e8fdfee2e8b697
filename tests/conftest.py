"""Shared fixtures: real Parquet dumps with real image files, and a CLI runner."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from PIL import Image

from mulcot_batch.cli import main
from mulcot_batch.prompts import format_chain

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
SHARED_T15 = REPO.parent / "shared" / "data" / "t15"

# Small, fast settings for the real nano model on 2 CPU cores.
FAST = ["--batch-size", "8", "--max-new-tokens", "6", "--workers", "0", "--quiet"]


def run_cli(*args: str):
    """Invoke the real CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """The bundled sample dump, copied so a test may add files beside it."""
    target = tmp_path / "sample"
    shutil.copytree(SAMPLE, target)
    return target / "posts.parquet"


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = {"RGB": (200, 30, 30), "L": 128, "P": 5, "RGBA": (0, 200, 0, 128), "CMYK": (0, 255, 0, 0), "I;16": 3000, "1": 1}
    Image.new(mode, size, color[mode]).save(path, fmt)
    return path


@pytest.fixture
def hostile_dump(tmp_path: Path) -> Path:
    """One row per kind of bad input named in the issue, plus ordinary rows, as a user's dump."""
    root = tmp_path / "dump"
    images = root / "images"
    write_image(images / "ok.jpg")
    write_image(images / "grey.png", "L", fmt="PNG")
    write_image(images / "palette.png", "P", fmt="PNG")
    write_image(images / "alpha.png", "RGBA", fmt="PNG")
    write_image(images / "cmyk.jpg", "CMYK")
    write_image(images / "deep.png", "I;16", fmt="PNG")
    good = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 120, 240)).save(good, "JPEG")
    (images / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    (images / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    write_image(images / "bomb.png", "1", size=(8000, 8000), fmt="PNG")  # 64 Mpx in a few KB
    (tmp_path / "secret.jpg").write_bytes((images / "ok.jpg").read_bytes())
    rows = [
        ("ok-1", "Great game tonight , loved it !", "images/ok.jpg", "game"),
        ("no-text", None, "images/ok.jpg", None),
        ("empty-no-image", "", None, None),
        (None, "a post whose id is null", "images/ok.jpg", None),
        ("huge-text", "word " * 20_000, None, None),
        ("grey", "grey picture", "images/grey.png", None),
        ("palette", "palette picture", "images/palette.png", None),
        ("alpha", "transparent picture", "images/alpha.png", None),
        ("cmyk", "print picture", "images/cmyk.jpg", None),
        ("deep", "16-bit picture", "images/deep.png", None),
        ("truncated", "cut short", "images/truncated.jpg", None),
        ("garbage", "not a picture", "images/garbage.jpg", None),
        ("missing", "file gone", "images/nowhere.jpg", None),
        ("outside", "escapes the root", "../secret.jpg", None),
        ("absolute", "absolute path", str(tmp_path / "secret.jpg"), None),
        ("bomb", "decompression bomb", "images/bomb.png", None),
        ("unicode", "Café ☕ 東京 🎉 naïve — ok", "images/ok.jpg", "東京"),
        ("retweet-a", "RT @ x : same words", "images/ok.jpg", "x"),
        ("retweet-b", "RT @ x : same words", "images/ok.jpg", "x"),
    ]
    frame = pl.DataFrame(
        {
            "post_id": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "image_path": [r[2] for r in rows],
            "aspect": [r[3] for r in rows],
            "author": [f"user{i}" for i in range(len(rows))],
        }
    )
    path = root / "posts.parquet"
    frame.write_parquet(path)
    return path


def read_output(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / "parts").glob("part-*.parquet")))


# --- shared by the reliability tests (crash, multi-process, bad input, hostile content, memory, disk) ---

CLI = [sys.executable, "-m", "mulcot_batch.cli"]
# The tiny random Qwen2.5-VL: greedy and float32, so two runs over the same chunks agree exactly.
TINY = ["--dtype", "float32", "--quiet"]


def cli_env(**extra: str) -> dict[str, str]:
    """Environment of a CLI subprocess: one OpenMP thread (the box is shared), no fault injection
    unless asked for."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULCOT_BATCH_CRASH")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_job(args: list, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`mulcot-batch ARGS` in a real process (so SIGKILL, signals and exit statuses are real)."""
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=cli_env(**env))


@pytest.fixture(scope="session")
def tiny_qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .tiny_qwen import build_tiny_qwen

    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen-session"))


def text_dump(path: Path, rows: int, distinct: int | None = None, **extra_columns) -> Path:
    """A text-only dump of `rows` posts with unique ids; `distinct` repeats texts (retweets)."""
    words = ["great", "awful", "fine", "love", "hate", "meh", "best", "worst", "okay", "happy", "sad"]
    n = distinct or rows
    texts = [f"post {i % n} is {words[i % n % len(words)]} and {words[(i % n) // len(words) % len(words)]}" for i in range(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"post_id": [f"id-{i:07d}" for i in range(rows)], "text": texts, **extra_columns}).write_parquet(path)
    return path


def manifest_entries(out: Path) -> list[dict]:
    """Every whole manifest line of every rank (torn lines skipped)."""
    entries = []
    for path in sorted((out / "manifest").glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return entries


@pytest.fixture(scope="module")
def one_torch_thread():
    """In-process jobs use one thread, like the CLI subprocesses (OMP_NUM_THREADS=1): same sums, same
    greedy choices, and no threads waiting on each other on a busy 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_labelled(tmp_path)


def write_labelled(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Train/dev splits and a few chains from the sample dump, with a bad row of each kind."""
    posts = pl.read_parquet(SAMPLE / "posts.parquet").rename({"gold_label": "label"}).drop("created_at")
    fields = {"text_analysis": "The text is calm.", "image_analysis": "The image is plain.",
              "conflict_resolution": "No conflict.", "final_conclusion": "Overall it is neutral."}
    chains = posts.head(4).with_columns(pl.lit(format_chain(fields, "neutral")).alias("rationale"))
    bad = pl.DataFrame({"post_id": [None, "dup", "dup", "odd"], "text": ["x"] * 4, "aspect": [None] * 4,
                        "image_path": [None] * 4, "label": ["neutral", "neutral", "neutral", "happy"]})
    train, dev, chain_file = tmp_path / "train.parquet", tmp_path / "dev.parquet", tmp_path / "chains.parquet"
    pl.concat([posts.slice(10, 12), bad], how="diagonal_relaxed").write_parquet(train)
    posts.slice(40, 6).write_parquet(dev)
    chains.write_parquet(chain_file)
    shutil.copytree(SAMPLE / "images", tmp_path / "images")
    return train, dev, chain_file
