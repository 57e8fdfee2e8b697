"""Time and peak memory of `mulcot-batch report` on a synthetic scored archive of 10 million rows.

    python benchmarks/report_scale.py                  # 10M rows in 100 parts, then the report
    python benchmarks/report_scale.py --rows 1000000   # a quicker look
    python benchmarks/report_scale.py --keep /tmp/arch # keep (and reuse) the archive

The archive has the real output schema of `mulcot-batch score --keep created_at,author,text`:
a year of timestamps, 50k aspects and 200k authors (both Zipf-distributed, as real topics and
users are), texts with hashtags and @mentions, 1% error rows, reasoning chains on the ~30%
least confident posts. The report runs in a subprocess with three `--by` keys and a daily
series; wall time, CPU time (user + sys, all threads) and the peak RSS of that process
(getrusage of the waited-for child, and a psutil poll as a cross-check) are printed. CPU time is
the figure to compare on a shared machine, where wall time depends on the other jobs. Floor on 2
CPU cores: < 60 s and < 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's mulcot_batch, whatever else is installed

from mulcot_batch.schema import LABELS, output_schema  # noqa: E402

KEPT = [("created_at", pa.timestamp("us")), ("author", pa.string()), ("text", pa.string())]
YEAR_START = np.datetime64("2024-01-01T00:00:00", "us")
YEAR_US = 366 * 24 * 3600 * 10**6
WORDS = np.array(
    "great awful game tonight new phone launch love hate rain city team win loss vote debate "
    "music concert traffic coffee morning news price update fans crowd goal match show".split()
)
ERRORS = np.array(
    ["empty text and no usable image (missing)", "post id is null", "could not prepare post: ValueError: x"]
)


def zipf_ids(rng: np.random.Generator, n: int, size: int, a: float = 1.2) -> np.ndarray:
    """Ids 0..size-1 where a few are very frequent and most are rare."""
    return (rng.zipf(a, n) - 1) % size


def build_part(rng: np.random.Generator, start: int, n: int) -> pa.Table:
    logits = rng.normal(size=(n, 3)).astype(np.float32) * 1.6
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    label_idx = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    error = rng.random(n) < 0.01
    explained = (confidence < 0.6) & ~error
    words = WORDS[rng.integers(0, len(WORDS), size=(n, 3))]
    hashtag = rng.integers(0, 20_000, n)
    frame = pl.DataFrame(
        {
            "i": np.arange(start, start + n),
            "t": YEAR_START + rng.integers(0, YEAR_US, n).astype("timedelta64[us]"),
            "author": zipf_ids(rng, n, 200_000),
            "w0": words[:, 0], "w1": words[:, 1], "w2": words[:, 2],
            "tag": zipf_ids(rng, n, 20_000), "tag2": hashtag, "has2": rng.random(n) < 0.3,
            "mention": zipf_ids(rng, n, 100_000), "has_m": rng.random(n) < 0.5,
            "aspect": zipf_ids(rng, n, 50_000), "no_aspect": rng.random(n) < 0.15,
            "label": np.array(LABELS)[label_idx],
            "other": np.array(LABELS)[(label_idx + rng.integers(0, 3, n)) % 3],
            "pp": probs[:, 0], "pn": probs[:, 1], "pg": probs[:, 2], "conf": confidence,
            "error": error, "explained": explained,
            "reason": ERRORS[rng.integers(0, len(ERRORS), n)],
            "image": np.array(["ok", "ok", "ok", "ok", "none", "missing"])[rng.integers(0, 6, n)],
        }
    )  # fmt: skip
    ok = ~pl.col("error")
    chain = pl.col("explained")
    text_analysis = pl.format("The text talks about {} and {} with a {} tone overall.", "w0", "w1", "label")
    image_analysis = pl.format("The image shows a {} scene that reads as {}.", "w2", "other")
    table = frame.select(
        pl.format("p{}", pl.col("i").cast(pl.String).str.zfill(9)).alias("post_id"),
        pl.col("t").alias("created_at"),
        pl.format("user{}", "author").alias("author"),
        pl.concat_str(
            pl.format("{} {} {} #tag{}", "w0", "w1", "w2", "tag"),
            pl.when("has2").then(pl.format(" #t{}", "tag2")).otherwise(pl.lit("")),
            pl.when("has_m").then(pl.format(" @user{}", "mention")).otherwise(pl.lit("")),
        ).alias("text"),
        pl.when("no_aspect").then(None).otherwise(pl.format("aspect{}", "aspect")).alias("aspect"),
        pl.when(ok).then("label").alias("label"),
        pl.when(ok).then("pp").alias("p_positive"),
        pl.when(ok).then("pn").alias("p_neutral"),
        pl.when(ok).then("pg").alias("p_negative"),
        pl.when(ok).then("conf").alias("confidence"),
        pl.when(chain).then(pl.format('"Text_analysis": "{}", "Image_analysis": "{}", "Prediction": {}', text_analysis, image_analysis, "label")).alias("rationale"),
        pl.when(chain).then(text_analysis).alias("text_analysis"),
        pl.when(chain).then(image_analysis).alias("image_analysis"),
        pl.when(chain).then(pl.lit("The text is more explicit than the image, so it weighs more.")).alias("conflict_resolution"),
        pl.when(chain).then(pl.format("Overall the post is {}.", "label")).alias("final_conclusion"),
        pl.when(chain).then("label").alias("rationale_label"),
        pl.col("image").alias("image_status"),
        pl.when(ok).then(pl.lit("ok")).otherwise(pl.lit("error")).alias("status"),
        pl.when(ok).then(None).otherwise("reason").alias("error"),
        pl.lit("nano").alias("model"),
    )  # fmt: skip
    return table.to_arrow().cast(output_schema("post_id", KEPT))


def build_archive(root: Path, rows: int, parts: int, seed: int = 0) -> None:
    """A `score --out` folder: job.json and `parts` part files, written one at a time."""
    (root / "parts").mkdir(parents=True, exist_ok=True)
    (root / "job.json").write_text(json.dumps({"model": "nano", "nano_parts": "benchmark"}))
    rng = np.random.default_rng(seed)
    per = -(-rows // parts)
    for p in range(parts):
        n = min(per, rows - p * per)
        if n <= 0:
            break
        pq.write_table(build_part(rng, p * per, n), root / "parts" / f"part-00000-{p:07d}.parquet", compression="zstd")


def run_report(archive: Path, out: Path, extra: list[str]) -> dict:
    """The report in a child process; wall time and its peak RSS."""
    cmd = [
        sys.executable, "-m", "mulcot_batch.cli", "report", str(archive), "--out", str(out),
        "--by", "aspect", "--by", "author", "--by", "hashtag",
        "--time-col", "created_at", "--every", "1d", "--no-summary", *extra,
    ]  # fmt: skip
    peak = {"rss": 0}
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=REPO)
    poller = threading.Thread(target=_poll_rss, args=(child.pid, peak), daemon=True)
    poller.start()
    code = child.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"report failed with exit status {code}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # Linux: ru_maxrss in KiB, largest child
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),  # all threads; wall >= cpu / cores
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),
        "polled_rss_gib": round(peak["rss"] / 2**30, 3),
    }


def _poll_rss(pid: int, peak: dict) -> None:
    try:
        import psutil
    except ImportError:
        return
    try:
        proc = psutil.Process(pid)
        while proc.is_running():
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            time.sleep(0.05)
    except psutil.Error:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--parts", type=int, default=100)
    parser.add_argument("--keep", type=Path, default=None, help="archive folder to keep and reuse")
    args, extra = parser.parse_known_args()
    work = Path(tempfile.mkdtemp(prefix="report-scale-"))
    archive = args.keep or work / "scored"
    try:
        if not (archive / "parts").is_dir():
            t = time.perf_counter()
            build_archive(archive, args.rows, args.parts)
            print(
                f"built {args.rows:,} rows in {args.parts} parts in {time.perf_counter() - t:.1f} s: {archive}",
                flush=True,
            )
        size = sum(p.stat().st_size for p in (archive / "parts").glob("*.parquet"))
        result = run_report(archive, work / "report", extra)
        result.update(rows=args.rows, parts=args.parts, archive_mib=round(size / 2**20, 1))
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
