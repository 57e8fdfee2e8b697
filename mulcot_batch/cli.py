"""The `mulcot-batch` command line."""

from __future__ import annotations

import sys
import time
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
def score(inputs: tuple[str, ...], keep: str, **options) -> None:
    """Score INPUT Parquet files (or folders of them) into --out; rerun the same command to resume."""
    from .engine import ScoreOptions
    from .scoring_job import execute

    opts = ScoreOptions(inputs=list(inputs), keep=[c.strip() for c in keep.split(",") if c.strip()], **options)
    execute(opts)


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
    from .scoring_job import execute

    execute(opts)


if __name__ == "__main__":
    main()
