"""`mulcot-batch score` as a process: validation, accelerate, progress and the final summary.

Works the same under `accelerate launch --num_processes N`: every rank validates the job (so a bad
job fails everywhere before any work), rank 0 claims the output folder, and each rank scores its
own share of the chunks and writes its own parts.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .accelerating import stage_accelerator
from .console import progress_bar, say, stderr, summarise_parts, summary_table
from .engine import ChunkResult, ScoreOptions, load_job_student, plan_job, run_chunks
from .errors import Interrupted, JobError, JobFailed
from .writing import OutputFolder


def execute(opts: ScoreOptions, after: Callable[[], None] | None = None) -> dict:
    """Run (or resume) a scoring job; returns the summary of the whole output folder.

    `after` (e.g. the report of `score --report`) runs once, on the main process, when every
    rank's parts are written and counted.
    """
    plan = plan_job(opts)
    folder = OutputFolder(Path(opts.out))
    folder.check(plan.identity, opts.overwrite)

    accelerator = stage_accelerator(_mixed_precision(opts))
    rank, world = accelerator.process_index, accelerator.num_processes
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world:
        raise JobError(f"launched as {launched} processes but accelerate joined {world}; each would redo all the work")
    quiet = opts.quiet or not accelerator.is_main_process
    accelerator.wait_for_everyone()  # every rank has checked the folder before rank 0 touches it
    if accelerator.is_main_process:
        folder.claim(plan.identity, opts.overwrite)
    accelerator.wait_for_everyone()

    start = time.perf_counter()
    student = load_job_student(opts, accelerator.device)
    say(f"model: {student.weights}", quiet)
    say(f"device: {accelerator.device}, processes: {world}, dataloader workers: {opts.workers}", quiet)
    done_rows = folder.done_rows()
    todo = max(0, plan.rows - done_rows)
    if done_rows:
        say(f"resuming: {done_rows:,} of {plan.rows:,} rows already scored in {opts.out}", quiet)

    scored = 0
    score_start = time.perf_counter()
    with progress_bar(quiet) as progress, accelerator.autocast():
        task = progress.add_task("score", total=max(1, todo // world), rate=0.0)

        def on_chunk(result: ChunkResult) -> None:
            nonlocal scored
            scored += result.rows
            rate = scored / max(1e-9, time.perf_counter() - score_start)
            progress.update(task, advance=result.rows, rate=rate)

        with StopOnSignal() as stop:
            finished = run_chunks(student, plan, folder, rank, world, on_chunk, stop.requested)
    if not finished:
        name = signal.Signals(stop.signum).name
        raise Interrupted(
            f"{name} received; stopped after the chunk in flight with {folder.done_rows():,} of {plan.rows:,} rows "
            f"scored in {opts.out}. Rerun the same command to resume",
            stop.signum,
        )
    try:
        accelerator.wait_for_everyone()
    except RuntimeError as exc:  # gloo/NCCL: a peer rank died while this one waited for it
        reason = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip()).split(". ")[0][:200]  # no source-file prefix
        raise JobFailed(
            f"another process of this job failed ({reason}); this process finished its chunks: "
            "rerun the same command to resume"
        ) from None

    summary = summarise_parts(folder.finished_parts())
    timing = (time.perf_counter() - score_start, time.perf_counter() - start)
    scored_now = folder.done_rows() - done_rows  # every rank's work, read from the manifests
    if summary["rows"] != plan.rows and accelerator.is_main_process:
        raise JobError(f"output holds {summary['rows']} rows but the input has {plan.rows}; rerun to resume")
    if not quiet:
        stderr.print(summary_table(summary, scored_now, timing, student.weights, Path(opts.out)))
    if after is not None and accelerator.is_main_process:
        after()
    return summary


def _mixed_precision(opts: ScoreOptions) -> str:
    if opts.dtype == "float16" and not torch.cuda.is_available():
        raise JobError("--dtype float16 needs a GPU; use bfloat16 or float32 on CPU")
    return {"bfloat16": "bf16", "float16": "fp16"}.get(opts.dtype, "no")


class StopOnSignal:
    """SIGINT/SIGTERM ask the job to stop after the chunk in flight; a second one stops it at once.

    Either way the output stays resumable: parts are atomic and only manifest-recorded parts count.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        stderr.print(f"mulcot-batch: {signal.Signals(signum).name} received, stopping after the chunk in flight "
                     "(send it again to stop at once)")

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
