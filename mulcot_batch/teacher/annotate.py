"""`mulcot-batch annotate`: a teacher chain for every labelled post, label-consistent where possible.

Round 1 asks about every post. A chain whose own Prediction disagrees with the gold label is asked
again with the label as a hint (MulCoT-RD's CoT enhancement), round after round, until it agrees or
`max_attempts` answers were had; what still disagrees is kept and flagged (`agrees` false). A post
the teacher never answered (after the backend's retries) is a `failed` row; a post skipped by the
rules of `posts` is a `skipped` row. The output holds every input row, in input order, with the
columns of rationales.parquet plus the outcome, so the trainer reads either file the same way.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ..console import say, stderr
from ..errors import JobError
from ..prompts import extract_label
from ..weights import cache_dir
from .base import Teacher, TeacherAnswer, TeacherRequest
from .cache import CacheStats, ResponseCache, ask_cached
from .posts import InputColumns, Work, image_payload, read_posts, triage

BACKENDS = ("openai", "hf")
RESULT_SCHEMA = {
    "rationale": pl.String,
    "rationale_label": pl.String,
    "attempts": pl.Int32,
    "agrees": pl.Boolean,
    "status": pl.String,
    "error": pl.String,
    "teacher": pl.String,
}


@dataclass
class AnnotateOptions:
    """Every option of `mulcot-batch annotate`. `api_key_env` names a variable; the key is never stored."""

    input: str
    out: str
    backend: str = "openai"
    model: str | None = None
    api_base: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 1.0
    give_up_after: int = 20
    max_attempts: int = 3
    max_tokens: int = 1024
    temperature: float = 0.0
    batch_size: int = 4
    adapter: str | None = None
    dtype: str = "auto"
    cache: str | None = None
    no_cache: bool = False
    id_col: str = "post_id"
    text_col: str = "text"
    image_col: str = "image_path"
    aspect_col: str = "aspect"
    label_col: str = "label"
    image_root: str | None = None
    limit: int | None = None
    overwrite: bool = False
    quiet: bool = False

    def columns(self) -> InputColumns:
        return InputColumns(id=self.id_col, text=self.text_col, image=self.image_col, aspect=self.aspect_col, label=self.label_col)


@dataclass
class RowState:
    """What the teacher has said about one post so far."""

    chain: str | None = None
    attempts: int = 0
    agrees: bool = False
    error: str | None = None
    done: bool = False  # agrees, or a re-ask failed: ask no more


def check_options(opts: AnnotateOptions) -> None:
    """Everything that can fail the job, before the input is read or a model is loaded."""
    if opts.backend not in BACKENDS:
        raise JobError(f"--backend must be one of {', '.join(BACKENDS)}, not {opts.backend!r}")
    if not opts.model:
        raise JobError("--model is required (the served model name, or a local model folder with --backend hf)")
    if opts.backend == "openai" and not (opts.api_base or "").startswith(("http://", "https://")):
        raise JobError("--backend openai needs --api-base http(s)://..., e.g. http://localhost:8000/v1 or https://api.openai.com/v1")
    if opts.backend == "hf":
        from ..students import check_model

        if opts.model == "nano":
            raise JobError("--backend hf needs a local Hugging Face model folder as --model")
        check_model(opts.model, opts.adapter)
    for name in ("max_attempts", "concurrency", "batch_size", "max_tokens", "give_up_after"):
        if getattr(opts, name) < 1:
            raise JobError(f"--{name.replace('_', '-')} must be at least 1")
    if opts.max_retries < 0 or opts.timeout <= 0:
        raise JobError("--max-retries must not be negative and --timeout must be positive")
    out = Path(opts.out)
    if out.resolve() == Path(opts.input).resolve():
        raise JobError("--out must not be the input file")
    if out.exists() and not opts.overwrite:
        raise JobError(f"--out {out} exists; use --overwrite to replace it (cached answers are reused)")
    if opts.image_root is not None and not Path(opts.image_root).is_dir():
        raise JobError(f"--image-root is not a folder: {opts.image_root}")


def build_teacher(opts: AnnotateOptions) -> Teacher:
    if opts.backend == "openai":
        from .openai_api import APISettings, OpenAITeacher

        if opts.api_key_env and not os.environ.get(opts.api_key_env):
            say(f"note: ${opts.api_key_env} is not set; requests go without an API key", opts.quiet)
        settings = APISettings(
            base_url=opts.api_base or "",
            model=opts.model or "",
            api_key_env=opts.api_key_env or None,
            concurrency=opts.concurrency,
            timeout=opts.timeout,
            max_retries=opts.max_retries,
            backoff=opts.backoff,
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            give_up_after=opts.give_up_after,
        )
        return OpenAITeacher(settings)
    import torch

    from .hf_local import HFTeacher

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = None if opts.dtype == "auto" else opts.dtype
    return HFTeacher.from_folder(
        opts.model or "", opts.adapter, dtype, device, batch_size=opts.batch_size, max_new_tokens=opts.max_tokens
    )


def request_for(work: Work, hint: bool) -> TeacherRequest:
    image, mime = image_payload(work.image_file) if work.image_file else (None, None)
    return TeacherRequest(work.text, work.aspect, image, mime, hint=work.label if hint else None)


def run_round(
    teacher: Teacher, cache: ResponseCache | None, pending: list[Work], states: dict[int, RowState], hint: bool, stats: CacheStats, progress: Any
) -> None:
    """Ask about every pending post once; each answer updates its row as it arrives."""
    requests, asked = [], []
    for work in pending:
        try:
            requests.append(request_for(work, hint))
            asked.append(work)
        except OSError as exc:  # the image went away or broke since the check
            states[work.row].error = f"image unreadable when sending: {exc}"
            states[work.row].done = True

    def on_answer(index: int, answer: TeacherAnswer) -> None:
        work = asked[index]
        record(states[work.row], work.label, answer)
        progress()

    ask_cached(teacher, cache, requests, on_answer, stats)


def record(state: RowState, label: str, answer: TeacherAnswer) -> None:
    """A new chain replaces the old one; a failed re-ask keeps the earlier chain and stops asking."""
    state.attempts += 1
    if answer.text:
        state.chain, state.error = answer.text, None
        state.agrees = extract_label(answer.text) == label
        state.done = state.agrees
    elif state.chain is None:
        state.error, state.done = answer.error, True
    else:
        state.error, state.done = f"re-ask failed: {answer.error}", True


def annotate(opts: AnnotateOptions) -> dict:
    """Run the job; returns the summary (also printed to stderr unless quiet)."""
    check_options(opts)
    input_path = Path(opts.input)
    frame = read_posts(input_path, opts.columns(), opts.limit)
    image_root = Path(opts.image_root).resolve() if opts.image_root else input_path.resolve().parent
    plan = triage(frame, image_root)
    teacher = build_teacher(opts)
    cache = None if opts.no_cache else ResponseCache(Path(opts.cache) if opts.cache else cache_dir() / "teacher")
    states = {work.row: RowState() for work in plan.work}
    stats = CacheStats()
    start = time.perf_counter()
    with _progress(opts.quiet) as bar:
        for attempt in range(1, opts.max_attempts + 1):
            pending = [w for w in plan.work if not states[w.row].done and (attempt == 1 or states[w.row].chain is not None)]
            if not pending:
                break
            task = bar.add_task(f"round {attempt}", total=len(pending))
            run_round(teacher, cache, pending, states, attempt > 1, stats, lambda t=task: bar.update(t, advance=1))
    table = output_table(plan.frame, plan.skipped, states, teacher.model_id)
    write_parquet(table, Path(opts.out))
    summary = summarise(table, plan.skipped, stats, time.perf_counter() - start)
    if not opts.quiet:
        stderr.print(summary_table(summary, Path(opts.out), teacher.model_id))
    return summary


def _progress(quiet: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]teacher {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=stderr, disable=quiet)


def output_table(frame: pl.DataFrame, skipped: dict[int, tuple[str, str]], states: dict[int, RowState], teacher: str) -> pl.DataFrame:
    """Every input row in input order: the post, its chain and how it was obtained."""
    rows: list[dict[str, Any]] = []
    for row in range(frame.height):
        state = states.get(row)
        if state is None:
            reason = skipped.get(row, ("", "skipped"))[1]
            rows.append({"attempts": 0, "status": "skipped", "error": reason, "teacher": teacher})
            continue
        rows.append(
            {
                "rationale": state.chain,
                "rationale_label": extract_label(state.chain),
                "attempts": state.attempts,
                "agrees": state.agrees if state.chain else None,
                "status": "ok" if state.chain else "failed",
                "error": state.error,
                "teacher": teacher,
            }
        )
    results = pl.DataFrame(rows, schema=RESULT_SCHEMA)
    return pl.concat([frame, results], how="horizontal")


def write_parquet(table: pl.DataFrame, path: Path) -> None:
    """Temporary name, then rename: a crash never leaves a half-written output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        table.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def summarise(table: pl.DataFrame, skipped: dict[int, tuple[str, str]], stats: CacheStats, seconds: float) -> dict:
    ok = table.filter(pl.col("status") == "ok")
    rules: dict[str, int] = {}
    for rule, _ in skipped.values():
        rules[rule] = rules.get(rule, 0) + 1
    return {
        "rows": table.height,
        "ok": ok.height,
        "agrees": int(ok["agrees"].sum()),
        "disagrees_kept": int((~ok["agrees"]).sum()),
        "failed": int((table["status"] == "failed").sum()),
        "skipped": dict(sorted(rules.items())),
        "requests_sent": stats.sent,
        "cache_hits": stats.hits,
        "attempts": dict(sorted(ok["attempts"].value_counts().iter_rows())),
        "seconds": round(seconds, 1),
    }


def summary_table(summary: dict, out: Path, teacher: str) -> Any:
    from rich.table import Table

    table = Table(title=f"mulcot-batch annotate -> {out}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("teacher", teacher)
    table.add_row("rows in output", f"{summary['rows']:,}")
    table.add_row("chains", f"{summary['ok']:,} ({summary['agrees']:,} agree with the label, {summary['disagrees_kept']:,} kept flagged)")
    table.add_row("answers needed (chains)", ", ".join(f"{k}: {v:,}" for k, v in summary["attempts"].items()) or "-")
    table.add_row("failed (no answer)", f"{summary['failed']:,}")
    skipped = summary["skipped"]
    table.add_row("skipped", f"{sum(skipped.values()):,}")
    for rule, count in skipped.items():
        table.add_row(f"  {rule}", f"{count:,}")
    table.add_row("asked the teacher / from cache", f"{summary['requests_sent']:,} / {summary['cache_hits']:,} (retries not counted)")
    table.add_row("time", f"{summary['seconds']:.1f} s")
    return table
