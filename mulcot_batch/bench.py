"""`mulcot-batch bench`: how many posts an hour this machine scores, measured against the plain way.

One process, one model, the same posts for every measurement:

- the **baseline** is a plain loop as the paper's evaluation code does it: fixed batches in input
  order, every batch padded to the longest prompt of the whole set, one stock `generate` call for
  the label and a second for the chain, every post computed even when it repeats;
- the **engine** is the real scoring path (`engine.run_chunks`: DataLoader, dedup, sorted batches,
  one-pass labels, chains where asked, Parquet parts written) for each `--rationales` mode;
- the **ceiling** is counted model FLOPs per post over the measured matmul FLOP/s (`bench_ceiling`).

Copies made to reach `--posts` get a marker appended to their text so that every post is distinct
and dedup cannot flatter the engine; `--duplicates` measures dedup on its own.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch

from .bench_ceiling import FlopModel, fit_flop_model, peak_matmul_flops, prompt_length
from .engine import (
    RATIONALE_MODES,
    ScoreOptions,
    check_options,
    load_job_student,
    plan_job,
    resolve_dtype,
    run_chunks,
)
from .errors import JobError
from .preparing import prepare_chunk
from .prompts import PREDICTION_PREFIX, extract_label
from .reading import ID, iter_chunks
from .schema import LABELS
from .students.base import PreparedPost, Student
from .writing import OutputFolder

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "posts.parquet"


@dataclass
class BenchOptions:
    """Options of `mulcot-batch bench` (the CLI sets the same names)."""

    input: str | None = None  # None: the bundled sample data
    posts: int | None = None  # None: as many as the input has
    model: str = "nano"
    modes: tuple[str, ...] = RATIONALE_MODES
    baseline: bool = True
    duplicates: bool = False
    batch_size: int = 16
    chain_batch_size: int | None = None
    max_new_tokens: int = 200
    label_tokens: int = 8  # baseline: generate cap of the label answer
    uncertain_below: float = 0.6
    workers: int = 0  # one chunk (the sample) leaves nothing to overlap; --workers N on bigger inputs
    dtype: str = "auto"
    threads: int | None = None
    sort_batches: bool = True
    dedup: bool = True
    image_cache: bool = True
    draft_chains: bool = True
    repeat: int = 1  # runs of each measurement; the one of median time is reported
    min_posts: int | None = None  # None: two batches
    min_seconds: float = 2.0
    peak_seconds: float = 0.6  # per matmul size when measuring the FLOP/s peak
    trust_remote_code: bool = False
    json_path: str | None = None
    quiet: bool = False

    def stable_posts(self) -> int:
        return self.min_posts if self.min_posts is not None else 2 * self.batch_size


@dataclass
class Measurement:
    """One timed run; rates are None when the run is too small for a stable figure (see `note`)."""

    name: str
    posts: int
    seconds: float
    tokens: int = 0
    peak_memory_mb: float | None = None
    stable: bool = True
    note: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def posts_per_s(self) -> float | None:
        return self.posts / self.seconds if self.stable and self.seconds > 0 else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.seconds if self.stable and self.seconds > 0 and self.tokens else None


@dataclass
class BenchInput:
    """The posts every measurement runs on, written once as Parquet for the engine."""

    path: Path
    image_root: Path
    frame: pl.DataFrame
    with_images: int
    source_rows: int


def build_input(source: Path, posts: int | None, folder: Path, name: str = "posts.parquet") -> BenchInput:
    """The input repeated (or cut) to `posts` rows; copies carry a text marker so every post is distinct."""
    scan = pl.scan_parquet(source)
    names = scan.collect_schema().names()
    for needed in ("post_id", "text"):
        if needed not in names:
            raise JobError(f"{source} has no {needed!r} column (bench reads post_id, text, image_path, aspect)")
    scan = scan.select([c for c in ("post_id", "text", "image_path", "aspect") if c in names])
    frame = (scan.head(posts) if posts else scan).collect()  # an archive is never read past what is measured
    frame = frame.with_columns(pl.col("post_id").cast(pl.String), pl.col("text").cast(pl.String))
    if frame.height == 0:
        raise JobError(f"{source} holds no posts")
    rows, want = frame.height, posts or frame.height
    copies = [frame] + [
        frame.with_columns(pl.col("post_id") + f"#{k + 1}", pl.col("text").fill_null("") + f" [{k + 1}]")
        for k in range(1, -(-want // rows))
    ]
    return _write(pl.concat(copies).head(want), folder / name, source.parent, rows)


def _write(frame: pl.DataFrame, path: Path, image_root: Path, source_rows: int) -> BenchInput:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    with_images = int(frame["image_path"].is_not_null().sum()) if "image_path" in frame.columns else 0
    return BenchInput(path, image_root, frame, with_images, source_rows)


def duplicated_input(distinct: BenchInput, folder: Path) -> BenchInput:
    """The same number of rows, half of them exact repeats (a retweet right after its post)."""
    half = distinct.frame.head(-(-distinct.frame.height // 2))
    twins = half.with_columns(pl.col("post_id") + "~rt")
    frame = pl.concat([half.with_row_index("_o"), twins.with_row_index("_o")]).sort("_o", maintain_order=True).drop("_o")
    return _write(frame.head(distinct.frame.height), folder / "duplicated.parquet", distinct.image_root, distinct.source_rows)


class PeakMemory:
    """Peak resident memory of this process during a block (sampled), or the CUDA allocator's peak."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_mb = _rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb or 0.0, _rss_mb() or 0.0)

    def __exit__(self, *_: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()


def _rss_mb() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def prepared_rows(student: Student, data: BenchInput, dedup: bool) -> tuple[list[str], list[PreparedPost], list[bool]]:
    """(post ids, prepared posts, has image) of the rows that can be scored, in input order."""
    opts = ScoreOptions(inputs=[str(data.path)], out="-", image_root=str(data.image_root))
    source = plan_job(opts).source
    ids: list[str] = []
    posts: list[PreparedPost] = []
    images: list[bool] = []
    preparer = student.preparer()
    size = getattr(preparer, "image_size", source.image_size)
    for chunk in iter_chunks(source.plan, source.columns, source.chunk_rows):
        prepared = prepare_chunk(chunk, preparer, data.image_root, size, dedup=dedup)
        statuses = prepared.image_status
        chunk_ids = chunk.table[ID].to_pylist()
        first_row_of = {}
        for row, post in enumerate(prepared.post_of_row.tolist()):
            if post >= 0 and post not in first_row_of:
                first_row_of[post] = row
        for post, row in sorted(first_row_of.items()):
            ids.append(chunk_ids[row])
            posts.append(prepared.posts[post])
            images.append(statuses[row] == "ok")
    return ids, posts, images



def _stability(opts: BenchOptions, posts: int, seconds: float) -> tuple[bool, str | None]:
    """A figure is printed only from enough posts and enough time for timer noise and warm-up not to dominate."""
    if posts < opts.stable_posts():
        return False, f"too few posts for a stable figure ({posts} < {opts.stable_posts()}; use --posts)"
    if seconds < opts.min_seconds:
        return False, f"ran {seconds:.2f} s, under {opts.min_seconds:g} s: too short for a stable figure (use --posts)"
    return True, None


#: Batch keys that run along the token sequence (nano and Hugging Face collates).
_TOKEN_ALIGNED = ("input_ids", "attention_mask", "image_mask", "token_type_ids", "mm_token_type_ids")


def _pad_left(batch: dict, width: int, pad_id: int) -> dict:
    """Left-pad every token-aligned tensor of a collated batch to `width` columns (the plain loop's padding)."""
    current = int(batch["input_ids"].shape[1])
    if current >= width:
        return batch
    padded = dict(batch)
    for key, value in batch.items():
        if key in _TOKEN_ALIGNED and torch.is_tensor(value) and value.dim() == 2 and value.shape[1] == current:
            fill = pad_id if key == "input_ids" else 0
            extra = torch.full((value.shape[0], width - current), fill, dtype=value.dtype)
            padded[key] = torch.cat([extra, value], dim=1)
    return padded


def _pad_id(student: Student) -> int:
    preparer = student.preparer()
    for name in ("pad_id", "pad_token_id"):
        if getattr(preparer, name, None) is not None:
            return int(getattr(preparer, name))
    return 0


def run_baseline(student: Student, opts: BenchOptions, data: BenchInput, device: torch.device) -> tuple[Measurement, Measurement, dict[str, str | None]]:
    """The plain loop: (labels-only part, labels + chains, label of every post id)."""
    ids, posts, _ = prepared_rows(student, data, dedup=False)
    preparer, pad = student.preparer(), _pad_id(student)
    widths = {task: max((prompt_length(student, p, task) for p in posts), default=0) for task in ("classify", "explain")}
    student.use_image_cache(False)
    labels: dict[str, str | None] = {}
    before = student.counters["tokens_generated"]
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        for at in range(0, len(posts), opts.batch_size):
            batch = _pad_left(preparer.collate(posts[at : at + opts.batch_size], "classify"), widths["classify"], pad)
            answers = student.plain_generate(batch, opts.label_tokens)
            labels.update(zip(ids[at:], (extract_label(PREDICTION_PREFIX + " " + a) for a in answers)))
        label_seconds = time.perf_counter() - start
        label_tokens = student.counters["tokens_generated"] - before
        for at in range(0, len(posts), opts.batch_size):
            # A student whose chains explain a label is told its own generated label (neutral where
            # it generated none); the others ignore it.
            said = [labels.get(pid) or LABELS[1] for pid in ids[at : at + opts.batch_size]]
            batch = _pad_left(preparer.collate(posts[at : at + opts.batch_size], "explain", said), widths["explain"], pad)
            student.plain_generate(batch, opts.max_new_tokens)
        seconds = time.perf_counter() - start
    tokens = student.counters["tokens_generated"] - before
    only_labels = _measured(opts, "baseline labels", len(posts), label_seconds, label_tokens, memory.peak_mb)
    full = _measured(opts, "baseline labels+chains", len(posts), seconds, tokens, memory.peak_mb)
    return only_labels, full, labels


def _measured(opts: BenchOptions, name: str, posts: int, seconds: float, tokens: int, peak: float | None, **extra) -> Measurement:
    stable, note = _stability(opts, posts, seconds)
    return Measurement(name, posts, seconds, tokens, peak, stable, note, dict(extra))


def engine_options(opts: BenchOptions, data: BenchInput, mode: str, out: Path) -> ScoreOptions:
    return ScoreOptions(
        inputs=[str(data.path)],
        out=str(out),
        model=opts.model,
        rationales=mode,
        uncertain_below=opts.uncertain_below,
        batch_size=opts.batch_size,
        chain_batch_size=opts.chain_batch_size,
        max_new_tokens=opts.max_new_tokens,
        image_root=str(data.image_root),
        workers=opts.workers,
        dtype=opts.dtype,
        overwrite=True,
        quiet=True,
        trust_remote_code=opts.trust_remote_code,
        sort_batches=opts.sort_batches,
        dedup=opts.dedup,
        image_cache=opts.image_cache,
        draft_chains=opts.draft_chains,
    )


def run_engine(student: Student, opts: BenchOptions, data: BenchInput, mode: str, out: Path, device: torch.device, name: str | None = None) -> tuple[Measurement, pl.DataFrame]:
    """`mulcot-batch score` on the loaded model: DataLoader, dedup, sorted batches, parts written."""
    score = engine_options(opts, data, mode, out)
    plan = plan_job(score)
    folder = OutputFolder(out)
    folder.claim(plan.identity, overwrite=True)
    student.use_image_cache(score.image_cache)  # a fresh cache: every job starts cold
    student.use_drafts(score.draft_chains)
    before = dict(student.counters)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        run_chunks(student, plan, folder, 0, 1, lambda _result: None)
        seconds = time.perf_counter() - start
    done = {k: v - before.get(k, 0) for k, v in student.counters.items()}
    scored = pl.read_parquet(folder.finished_parts()) if folder.finished_parts() else pl.DataFrame()
    ok = scored.filter(pl.col("status") == "ok") if scored.height else scored
    explained = int(ok["rationale"].is_not_null().sum()) if ok.height else 0
    measured = _measured(
        opts, name or f"engine {mode}", ok.height, seconds, done.get("tokens_generated", 0), memory.peak_mb,
        computed=done.get("classified", 0), explained=explained, images_encoded=done.get("images_encoded", 0),
    )
    return measured, ok


def median_run(runs: list[Measurement]) -> Measurement:
    """The run of median time (the faster middle one of an even count), every run's seconds kept.

    On a shared or throttled machine one run can be off by a fifth; the median of a few is the
    figure to quote, and the spread shows how far to trust it.
    """
    chosen = sorted(runs, key=lambda m: m.seconds)[(len(runs) - 1) // 2]
    if len(runs) > 1:
        chosen.extra["seconds_of_each_run"] = [round(m.seconds, 3) for m in runs]
    return chosen


def compare_labels(engine: pl.DataFrame, baseline: dict[str, str | None]) -> dict:
    """Engine labels against the baseline's generated labels on the same post ids (greedy, same model)."""
    pairs = [(pid, lab, baseline.get(pid)) for pid, lab in zip(engine["post_id"].to_list(), engine["label"].to_list()) if pid in baseline]
    differ = [{"post_id": pid, "engine": e, "baseline": b} for pid, e, b in pairs if e != b]
    return {"compared": len(pairs), "differ": len(differ), "identical": bool(pairs) and not differ, "examples": differ[:5]}


def ceiling(student: Student, data: BenchInput, device: torch.device, dtype: torch.dtype, seconds: float = 0.6) -> tuple[float, FlopModel, list[tuple[bool, int, int]]]:
    """(peak FLOP/s, fitted FLOP model, (has image, label length, chain length) of every distinct post)."""
    _, posts, images = prepared_rows(student, data, dedup=True)
    peak = peak_matmul_flops(dtype, device, seconds)
    model = fit_flop_model(student, posts, images)
    shapes = [(img, prompt_length(student, p, "classify"), prompt_length(student, p, "explain")) for p, img in zip(posts, images)]
    return peak, model, shapes


def useful_flops(model: FlopModel, shapes: list[tuple[bool, int, int]], explained: int, tokens: int) -> float:
    """FLOPs the work needed at least: one label pass per distinct post, and the chains generated.

    Chains are spread evenly over posts (only their total token count is known).
    """
    labels = sum(model.label_flops(img, length) for img, length, _ in shapes)
    if not explained or not shapes:
        return labels
    share = explained / len(shapes)
    prompts = share * sum(model.chain_flops(img, length, 1) for img, _, length in shapes)
    return labels + prompts + max(0, tokens - explained) * model.per_token


def check_bench(opts: BenchOptions) -> Path:
    """Every check that can fail the bench, before the model loads; returns the input file."""
    source = Path(opts.input) if opts.input else SAMPLE
    if not source.is_file() or source.suffix != ".parquet":
        raise JobError(f"bench INPUT must be one Parquet file (image paths relative to its folder), not {source}")
    if opts.posts is not None and opts.posts < 1:
        raise JobError("--posts must be at least 1")
    unknown = [m for m in opts.modes if m not in RATIONALE_MODES]
    if unknown or not opts.modes:
        raise JobError(f"--rationales takes {', '.join(RATIONALE_MODES)}, not {', '.join(unknown) or 'nothing'}")
    if opts.threads is not None and opts.threads < 1:
        raise JobError("--threads must be at least 1")
    if opts.label_tokens < 1:
        raise JobError("--label-tokens must be at least 1")
    if opts.repeat < 1:
        raise JobError("--repeat must be at least 1")
    if opts.json_path and not Path(opts.json_path).resolve().parent.is_dir():
        raise JobError(f"--json {opts.json_path}: its folder does not exist")  # found now, not after the runs
    check_options(ScoreOptions(
        inputs=[str(source)], out="-", batch_size=opts.batch_size, chain_batch_size=opts.chain_batch_size,
        max_new_tokens=opts.max_new_tokens, workers=opts.workers, dtype=opts.dtype,
    ))
    return source


def run_bench(opts: BenchOptions, progress: Callable[[str], None] = lambda _msg: None, student: Student | None = None) -> dict:
    """Every measurement of one bench run, as the dict that `--json` writes.

    `student`: an already loaded model for `opts.model` (tests and notebooks reuse one); None loads it.
    """
    source = check_bench(opts)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(opts.dtype, device)
    with tempfile.TemporaryDirectory(prefix="mulcot-bench-") as tmp:
        work = Path(tmp)
        data = build_input(source, opts.posts, work)
        if student is None:
            progress(f"loading {opts.model}")
            student = load_job_student(ScoreOptions(inputs=[], out="-", model=opts.model, dtype=opts.dtype, quiet=True,
                                                    trust_remote_code=opts.trust_remote_code), device)
        _warm_up(student)
        progress("ceiling: matmul FLOP/s and model FLOPs per post")
        peak, flop_model, shapes = ceiling(student, data, device, dtype, opts.peak_seconds)
        runs, baseline_labels = [], None
        if opts.baseline:
            progress("baseline: plain generate loop")
            repeats = [run_baseline(student, opts, data, device) for _ in range(opts.repeat)]
            baseline_labels = repeats[0][2]  # greedy: every repeat generates the same labels
            runs += [median_run([r[0] for r in repeats]), median_run([r[1] for r in repeats])]
        engine_frames = {}
        for mode in opts.modes:
            progress(f"engine: --rationales {mode}")
            repeats = [run_engine(student, opts, data, mode, work / f"out-{mode}", device) for _ in range(opts.repeat)]
            measured = median_run([m for m, _ in repeats])
            frame = repeats[0][1]
            runs.append(measured)
            engine_frames[measured.name] = (mode, frame)
        duplicates = _duplicates(student, opts, data, work, device, progress) if opts.duplicates else None
    result = {
        "input": _describe_input(source, data, opts),
        "machine": {"device": str(device), "threads": torch.get_num_threads(), "dtype": str(dtype).removeprefix("torch."),
                    "peak_matmul_flops": peak},
        "model": {"name": student.name, "weights": student.weights},
        "settings": _settings(opts),
        "ceiling": _ceiling_summary(peak, flop_model, shapes),
        "runs": [_run_dict(m, runs, peak, flop_model, shapes, engine_frames, baseline_labels) for m in runs],
        "duplicates": duplicates,
        "notes": _notes(opts, data, runs),
    }
    return result


def _warm_up(student: Student) -> None:
    """One-time costs (kernel selection, first allocations) kept out of every timed run."""
    from .students.base import Post

    preparer = student.preparer()
    from PIL import Image

    posts = [preparer.prepare(Post("warm up", None, Image.new("RGB", (64, 64), (90, 90, 90)))), preparer.prepare(Post("warm", "up", None))]
    student.use_image_cache(False)
    student.classify(preparer.collate(posts, "classify"))
    student.explain(preparer.collate(posts, "explain", list(LABELS[:2])), 2)
    student.counters.clear()


def _duplicates(student: Student, opts: BenchOptions, data: BenchInput, work: Path, device: torch.device, progress: Callable[[str], None]) -> dict:
    """Labels for N distinct posts against N posts of which half repeat the other half."""
    twins = duplicated_input(data, work)
    progress("duplicates: distinct posts")
    distinct, _ = run_engine(student, opts, data, "none", work / "dup-distinct", device, "distinct posts, labels")
    progress("duplicates: half repeated")
    repeated, _ = run_engine(student, opts, twins, "none", work / "dup-repeated", device, "half repeated, labels")
    ratio = repeated.seconds / distinct.seconds if distinct.stable and repeated.stable and distinct.seconds > 0 else None
    return {
        "posts": distinct.posts,
        "distinct": _plain(distinct),
        "half_repeated": _plain(repeated),
        "time_ratio": ratio,
        "note": None if ratio is not None else (distinct.note or repeated.note),
    }


def _plain(m: Measurement) -> dict:
    return {"name": m.name, "posts": m.posts, "seconds": m.seconds, "posts_per_s": m.posts_per_s, "tokens": m.tokens,
            "tokens_per_s": m.tokens_per_s, "peak_memory_mb": m.peak_memory_mb, "stable": m.stable, "note": m.note, **m.extra}


def _run_dict(m: Measurement, runs: list[Measurement], peak: float, flop_model: FlopModel, shapes: list, engine_frames: dict, baseline_labels: dict | None) -> dict:
    out = _plain(m)
    explained = m.extra.get("explained", m.posts if m.name.endswith("chains") else 0)
    work = useful_flops(flop_model, shapes, min(explained, len(shapes)), m.tokens)
    out["useful_flops"] = work
    out["ceiling_posts_per_s"] = m.posts / (work / peak) if work > 0 and peak > 0 else None
    out["share_of_ceiling"] = (work / m.seconds) / peak if m.stable and m.seconds > 0 and peak > 0 else None
    out["speedup_over_baseline"] = _speedup(m, runs)
    if m.name in engine_frames and baseline_labels is not None:
        out["labels_vs_baseline"] = compare_labels(engine_frames[m.name][1], baseline_labels)
    return out


def _speedup(m: Measurement, runs: list[Measurement]) -> float | None:
    """Engine labels-only against the baseline's label part; engine with chains against the whole baseline."""
    if not m.name.startswith("engine"):
        return None
    wanted = "baseline labels" if m.name == "engine none" else "baseline labels+chains"
    base = next((r for r in runs if r.name == wanted), None)
    if base is None or base.posts_per_s is None or m.posts_per_s is None:
        return None
    return m.posts_per_s / base.posts_per_s


def _ceiling_summary(peak: float, flop_model: FlopModel, shapes: list) -> dict:
    labels = useful_flops(flop_model, shapes, 0, 0)
    per_post = labels / len(shapes) if shapes else None
    return {
        "peak_matmul_flops": peak,
        "distinct_posts": len(shapes),
        "label_flops_per_post": per_post,
        "labels_posts_per_s": peak / per_post if per_post else None,
        "decode_flops_per_token": flop_model.per_token,
        "counted": "matmuls, image-encoder convolutions and attention (torch.utils.flop_counter); elementwise work not counted",
    }


def _describe_input(source: Path, data: BenchInput, opts: BenchOptions) -> dict:
    return {"path": str(source), "rows_in_file": pl.scan_parquet(source).select(pl.len()).collect().item(), "posts": data.frame.height,
            "with_images": data.with_images, "copies_marked": data.frame.height > data.source_rows}


def _settings(opts: BenchOptions) -> dict:
    keep = ("model", "batch_size", "chain_batch_size", "max_new_tokens", "label_tokens", "uncertain_below", "workers", "dtype",
            "sort_batches", "dedup", "image_cache", "draft_chains", "repeat", "min_seconds")
    return {**{k: getattr(opts, k) for k in keep}, "modes": list(opts.modes), "min_posts": opts.stable_posts()}


def _notes(opts: BenchOptions, data: BenchInput, runs: list[Measurement]) -> list[str]:
    """What was measured, said plainly where the input is unusual."""
    notes = []
    n = data.frame.height
    if data.frame.height > data.source_rows:
        notes.append(f"{n} posts from the input's {data.source_rows}: copies carry a text marker, so every post is distinct")
    if data.with_images == 0:
        notes.append("the input has no images: the image encoder is not exercised and not counted")
    if opts.batch_size > n:
        notes.append(f"--batch-size {opts.batch_size} is larger than the {n} posts: every pass is one partial batch")
    if n == 1:
        notes.append("a single post: the figures are the latency of one post, not a throughput")
    if any(not r.stable for r in runs):
        notes.append("some runs are too small for a stable figure: their rates are left out (raise --posts)")
    if opts.repeat > 1:
        spread = ", ".join(f"{r.name} {min(r.extra['seconds_of_each_run']):.1f}-{max(r.extra['seconds_of_each_run']):.1f} s" for r in runs)
        notes.append(f"each figure is the median of {opts.repeat} runs; their spread: {spread}")
    return notes
