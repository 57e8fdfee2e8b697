"""The `mulcot-batch` command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .errors import JobError


class JobErrorGroup(click.Group):
    """Turns a bad job into one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except JobError as exc:
            click.echo(f"mulcot-batch: error: {exc}", err=True)
            sys.exit(2)


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
@click.option("--overwrite", is_flag=True, help="Same as score --overwrite.")
@click.option("--quiet", is_flag=True, help="Same as score --quiet.")
def run(job_file: str, overwrite: bool, quiet: bool) -> None:
    """Run a job described in a TOML file (see jobs/); its keys are score's options."""
    from .jobs import load_job

    opts = load_job(Path(job_file))
    opts.overwrite = opts.overwrite or overwrite
    opts.quiet = opts.quiet or quiet
    from .jobs import load_report_step
    from .scoring_job import execute

    execute(opts, after=load_report_step(Path(job_file), opts))


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


if __name__ == "__main__":
    main()
