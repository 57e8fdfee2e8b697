"""`mulcot-batch calibrate`: fit the label temperature of a trained nano model on a labelled dev split.

A small student distilled on a few thousand posts can come out overconfident: the embedded one,
before calibration, said 0.956 on average for the posts it was surest of and was right on 86.5%
of them. Analysts filter on `confidence` and add probabilities up into expected counts, so that
gap misleads them even when the labels are right. Temperature scaling (Guo et al. 2017) repairs it
with one number fitted on held-out labels: the dev split is scored with the same job as `score`
(labels only), the temperature with the lowest log loss on those probabilities is fitted, and it is
written into the model's `nano.json`, so every later `score` of that model gives calibrated
probabilities. Labels never change: dividing the logits by one positive number keeps their argmax.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import JobError
from .evaluation import GOLD, PROBABILITIES, EvaluateOptions, matched_rows, write_json
from .metrics.calibration import evaluate_calibration, fit_temperature, rescaled


@dataclass
class CalibrateOptions:
    """Every option of `mulcot-batch calibrate`; a job file's [calibrate] table uses the same names."""

    model: str
    dev: str
    out: str | None = None  # where the dev split is scored; None: a temporary folder, removed after
    label_col: str = "label"
    id_col: str = "post_id"
    image_root: str | None = None
    batch_size: int = 16
    workers: int = 2
    dtype: str = "auto"
    limit: int | None = None
    json_path: str | None = None
    quiet: bool = False


def model_folder(model: str) -> Path:
    """A nano-family folder the temperature can be written into (never the name `nano`: the
    embedded model's folder is inside the installed package, which a user's job should not edit)."""
    folder = Path(model)
    if model == "nano" or not folder.is_dir():
        raise JobError(f"--model must be a trained nano model folder (distill's OUT/best), not {model!r}")
    if not (folder / "nano.json").is_file():
        raise JobError(f"{folder} has no nano.json: calibrate applies to nano-family models (distill's OUT/best)")
    return folder


def run_calibration(opts: CalibrateOptions) -> dict:
    """Score the dev split, fit the temperature, write it into nano.json; returns the report."""
    from .students.nano import NanoConfig

    folder = model_folder(opts.model)
    config = NanoConfig.load(folder)
    with tempfile.TemporaryDirectory(prefix="mulcot-calibrate-") as scratch:
        matched = matched_rows(
            EvaluateOptions(
                scored=opts.dev,
                label_col=opts.label_col,
                id_col=opts.id_col,
                score_first=True,
                score_out=opts.out or str(Path(scratch) / "dev-scored"),
                score_options={
                    "model": str(folder),
                    "rationales": "none",
                    "batch_size": opts.batch_size,
                    "image_root": opts.image_root,
                    "workers": opts.workers,
                    "dtype": opts.dtype,
                    "limit": opts.limit,
                    "overwrite": True,  # scores left from an earlier temperature would fit the wrong one
                    "quiet": opts.quiet,
                },
                quiet=opts.quiet,
            )
        )
    gold, probs = matched.joined[GOLD].to_list(), matched.joined.select(PROBABILITIES).to_numpy()
    temperature = round(config.label_temperature * fit_temperature(gold, probs), 4)
    report = {
        "model": str(folder),
        "dev": opts.dev,
        "rows": matched.counts,
        "temperature_before": config.label_temperature,
        "temperature": temperature,
        "before": evaluate_calibration(gold, probs),
        "after": evaluate_calibration(gold, rescaled(probs, temperature / config.label_temperature)),
    }
    config.label_temperature = temperature
    config.save(folder)
    if opts.json_path:
        write_json(Path(opts.json_path), report)
    return report
