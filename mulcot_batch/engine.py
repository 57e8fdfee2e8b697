"""The scoring job: read -> prepare -> infer -> write, on every accelerate process.

Each process owns a disjoint share of the input chunks (see `preparing`). Its DataLoader workers
prepare chunks while the model scores the previous one; the model sees length-sorted batches of
the distinct posts of a chunk, and rows are put back in input order when the part is written.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from .accelerating import bf16_is_fast
from .errors import JobError, JobFailed
from .faults import crash_point
from .preparing import ChunkSource, PreparedChunk, chunk_loader
from .prompts import parse_chain
from .reading import ASPECT, ID, Columns, discover_inputs, plan_inputs
from .schema import CHAIN_FIELDS, LABELS, output_schema
from .students import Student, check_model, load_student
from .writing import OutputFolder

RATIONALE_MODES = ("all", "none", "uncertain")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ScoreOptions:
    """Every option of `mulcot-batch score`; a TOML job file sets the same names."""

    inputs: list[str]
    out: str
    model: str = "nano"
    adapter: str | None = None
    rationales: str = "all"
    uncertain_below: float = 0.6
    batch_size: int = 16
    max_new_tokens: int = 200
    image_root: str | None = None
    image_size: int | None = None
    id_col: str = "post_id"
    text_col: str = "text"
    image_col: str = "image_path"
    aspect_col: str = "aspect"
    keep: list[str] = field(default_factory=list)
    limit: int | None = None
    chunk_rows: int = 256
    workers: int = 2
    dtype: str = "auto"
    seed: int = 0
    overwrite: bool = False
    quiet: bool = False
    trust_remote_code: bool = False
    # Speed switches (DESIGN section 6); they change how fast a job runs, never what it writes, and
    # each can be turned off to measure what it brings (`mulcot-batch bench`).
    chain_batch_size: int | None = None  # posts per generation batch; None: 8x batch_size
    sort_batches: bool = True  # length-sorted batches within a chunk (input order restored on output)
    dedup: bool = True  # identical posts of a chunk computed once
    image_cache: bool = True  # each distinct image encoded once per job
    draft_chains: bool = True  # decoding steps also verify tokens guessed from earlier chains

    def columns(self) -> Columns:
        return Columns(self.id_col, self.text_col, self.image_col, self.aspect_col, tuple(self.keep))

    def chain_batch(self) -> int:
        """Generation batches are larger than forward-pass batches: a decoding step of one token per
        row is cheap, so more rows per step is what makes chains fast (2x tokens/s from 16 to 64 rows
        with nano on CPU, and 128 rows another ~5% over 64 on 256 posts); rows leave the batch as
        they finish."""
        return self.chain_batch_size or 8 * self.batch_size


@dataclass
class ChunkResult:
    rows: int
    explained: int


def check_options(opts: ScoreOptions) -> None:
    if opts.rationales not in RATIONALE_MODES:
        raise JobError(f"--rationales must be one of {', '.join(RATIONALE_MODES)}, not {opts.rationales!r}")
    if opts.dtype != "auto" and opts.dtype not in DTYPES:
        raise JobError(f"--dtype must be auto or one of {', '.join(DTYPES)}, not {opts.dtype!r}")
    for name in ("batch_size", "chunk_rows", "max_new_tokens", "chain_batch_size"):
        if getattr(opts, name) is not None and getattr(opts, name) < 1:
            raise JobError(f"--{name.replace('_', '-')} must be at least 1")
    if opts.limit is not None and opts.limit < 0:
        raise JobError("--limit must not be negative")
    if opts.workers < 0:
        raise JobError("--workers must not be negative")
    if opts.image_root is not None and not Path(opts.image_root).is_dir():
        raise JobError(f"--image-root is not a folder: {opts.image_root}")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """bf16 wherever it is the faster path (`accelerating.bf16_is_fast`), else fp16 on a GPU, fp32 on a CPU."""
    if name != "auto":
        return DTYPES[name]
    if bf16_is_fast(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.float32


#: Options that change how a job runs, not what it writes: a rerun may change them and still resume.
_NOT_IDENTITY = (
    "inputs", "out", "overwrite", "quiet", "workers", "batch_size", "model", "trust_remote_code",
    "chain_batch_size", "sort_batches", "dedup", "image_cache", "draft_chains",
)


def job_identity(opts: ScoreOptions, files: list[Path]) -> dict:
    """What makes two runs the same job: a rerun with this identity resumes, any other is refused."""
    inputs = [{"path": str(f), "bytes": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files]
    model = opts.model if opts.model == "nano" else str(Path(opts.model).resolve())
    relevant = {k: v for k, v in asdict(opts).items() if k not in _NOT_IDENTITY}
    return {"inputs": inputs, "model": model, "options": relevant, "nano_parts": _nano_fingerprint(opts.model)}


def _nano_fingerprint(model: str) -> str | None:
    """A hash of the nano parts in use, so new trained weights never mix with old results."""
    from .students import is_nano_folder
    from .students.nano import NANO_DIR

    if model != "nano" and not is_nano_folder(model):
        return None
    folder = NANO_DIR if model == "nano" else Path(model)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def length_sorted_batches(indices: list[int], lengths: list[int], batch_size: int, sort: bool = True) -> Iterator[list[int]]:
    """Batches of similar length, longest first, so padding is small and memory peaks early.

    `sort=False` keeps input order (the switch that measures what sorting brings).
    """
    ordered = sorted(indices, key=lambda i: -lengths[i]) if sort else list(indices)
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


def score_chunk(student: Student, chunk: PreparedChunk, opts: ScoreOptions, schema: pa.Schema) -> tuple[pa.Table, ChunkResult]:
    """Classify every distinct post, explain those the rationale mode asks for, expand to rows."""
    preparer = student.preparer()
    lengths = [p.length for p in chunk.posts]
    everyone = list(range(len(chunk.posts)))
    probs = np.zeros((len(chunk.posts), 3), dtype=np.float32)
    for batch in length_sorted_batches(everyone, lengths, opts.batch_size, opts.sort_batches):
        probs[batch] = student.classify(preparer.collate([chunk.posts[i] for i in batch], "classify"))
        crash_point("mid-batch")
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0, dtype=np.float32)
    if opts.rationales == "all":
        to_explain = everyone
    elif opts.rationales == "uncertain":
        to_explain = [i for i in everyone if confidence[i] < opts.uncertain_below]
    else:
        to_explain = []
    chains: dict[int, str] = {}
    for batch in length_sorted_batches(to_explain, lengths, opts.chain_batch(), opts.sort_batches):
        labels = [LABELS[int(probs[i].argmax())] for i in batch]
        texts = student.explain(preparer.collate([chunk.posts[i] for i in batch], "explain", labels), opts.max_new_tokens)
        chains.update(zip(batch, texts))
    table = build_table(chunk, probs, confidence, chains, student.name, schema)
    return table, ChunkResult(rows=table.num_rows, explained=len(chains))


def build_table(
    chunk: PreparedChunk,
    probs: np.ndarray,
    confidence: np.ndarray,
    chains: dict[int, str],
    model_name: str,
    schema: pa.Schema,
) -> pa.Table:
    """Rows in input order; error rows keep their id and kept columns, with null scores."""
    src = chunk.table
    rows = chunk.post_of_row
    ok = rows >= 0
    safe = np.where(ok, rows, 0)
    row_probs = probs[safe] if len(probs) else np.zeros((len(rows), 3), dtype=np.float32)
    labels = [LABELS[int(i)] for i in row_probs.argmax(axis=1)] if len(rows) else []
    parsed = {i: parse_chain(text) for i, text in chains.items()}
    columns: dict[str, pa.Array] = {schema.names[0]: src[ID]}
    for name in schema.names[1:]:
        if name in src.column_names and name != ASPECT:
            columns[name] = src[name]
    columns["aspect"] = src[ASPECT]
    masked = lambda values: pa.array(values, mask=~ok)  # noqa: E731
    columns["label"] = pa.array([lab if good else None for lab, good in zip(labels, ok)], pa.string())
    for k, label in enumerate(LABELS):
        columns[f"p_{label}"] = masked(row_probs[:, k].astype(np.float32))
    columns["confidence"] = masked((confidence[safe] if len(confidence) else np.zeros(len(rows))).astype(np.float32))
    chain_of_row = [chains.get(int(r)) if good else None for r, good in zip(rows, ok)]
    fields_of_row = [parsed[int(r)].fields() if good and int(r) in parsed else {} for r, good in zip(rows, ok)]
    columns["rationale"] = pa.array(chain_of_row, pa.string())
    for name in (*CHAIN_FIELDS, "rationale_label"):
        columns[name] = pa.array([f.get(name) for f in fields_of_row], pa.string())
    columns["image_status"] = pa.array(chunk.image_status, pa.string())
    columns["status"] = pa.array(["ok" if good else "error" for good in ok], pa.string())
    columns["error"] = pa.array(chunk.errors, pa.string())
    columns["model"] = pa.array([model_name] * len(rows), pa.string())
    return pa.table({name: columns[name] for name in schema.names}).cast(schema)


@dataclass
class JobPlan:
    """A validated job: everything checked, nothing scored yet."""

    opts: ScoreOptions
    source: ChunkSource
    identity: dict
    schema: pa.Schema
    rows: int


def plan_job(opts: ScoreOptions) -> JobPlan:
    """All checks that can fail a job, before any model is loaded or any row is scored."""
    check_options(opts)
    check_model(opts.model, opts.adapter, opts.trust_remote_code)
    files = discover_inputs(opts.inputs)
    columns = opts.columns()
    input_plan = plan_inputs(files, columns)
    rows = input_plan.rows if opts.limit is None else min(opts.limit, input_plan.rows)
    source = ChunkSource(
        plan=input_plan,
        columns=columns,
        chunk_rows=opts.chunk_rows,
        limit=opts.limit,
        image_root=Path(opts.image_root).resolve() if opts.image_root else None,
        image_size=opts.image_size or 224,
        done=frozenset(),
        dedup=opts.dedup,
    )
    schema = output_schema(opts.id_col, input_plan.kept_types)
    return JobPlan(opts, source, job_identity(opts, files), schema, rows)


ProgressHook = Callable[[ChunkResult], None]


def run_chunks(
    student: Student,
    plan: JobPlan,
    folder: OutputFolder,
    rank: int,
    world_size: int,
    on_chunk: ProgressHook,
    should_stop: Callable[[], bool] = lambda: False,
) -> bool:
    """This rank's share of the job; each finished chunk is a part file plus a manifest line.

    Returns False when `should_stop` turned true (SIGINT/SIGTERM): the chunk in flight is written
    first, and no further chunk is started.
    """
    preparer = student.preparer()
    preparer.chains = plan.opts.rationales != "none"
    source = replace(
        plan.source,
        done=frozenset(folder.done_chunks()),
        rank=rank,
        world_size=world_size,
        image_size=getattr(preparer, "image_size", plan.source.image_size),
    )
    for chunk in _surviving(chunk_loader(source, preparer, plan.opts.workers)):
        if should_stop():
            return False
        table, result = score_chunk(student, chunk, plan.opts, plan.schema)
        folder.write_part(chunk.key, table, rank)
        on_chunk(result)
        if should_stop():
            return False
    return True


def _surviving(loader: Iterable) -> Iterator[PreparedChunk]:
    """The loader's chunks; a failure in a worker (damaged input, a worker killed) stops the job in one line."""
    iterator = iter(loader)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except RuntimeError as exc:
            if "DataLoader worker" not in str(exc):
                raise
            first = str(exc).strip().splitlines()[0].rstrip(". ")
            raise JobFailed(f"{first} (out of memory?); chunks finished before it are kept: rerun the same command to resume") from None
        if isinstance(item, JobError):
            raise item
        yield item


def load_job_student(opts: ScoreOptions, device: torch.device) -> Student:
    torch.manual_seed(opts.seed)
    dtype = resolve_dtype(opts.dtype, device)
    if opts.quiet:  # --quiet means errors only: no "Loading weights" bars either
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    student = load_student(opts.model, opts.adapter, dtype, device, opts.image_size, opts.seed, opts.trust_remote_code)
    student.use_image_cache(opts.image_cache)
    student.use_drafts(opts.draft_chains)
    return student


def elapsed_since(start: float) -> float:
    return time.perf_counter() - start
