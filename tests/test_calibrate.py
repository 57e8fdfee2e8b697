"""`mulcot-batch calibrate` on a copy of the embedded student: the fitted temperature lands in
nano.json, later scores use it, labels stay the same, and a bad job stops before any scoring."""

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mulcot_batch.evaluation import PROBABILITIES
from mulcot_batch.metrics.calibration import rescaled
from mulcot_batch.students.nano import NANO_DIR, NanoConfig

from .conftest import FAST, SAMPLE, read_output, run_cli

ROWS = 24
DEV = ["--dev", SAMPLE / "posts.parquet", "--label-col", "gold_label", "--limit", ROWS]


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "student" / "best"
    shutil.copytree(NANO_DIR, folder)
    return folder


def _score(model: Path, out: Path) -> pl.DataFrame:
    result = run_cli("score", SAMPLE / "posts.parquet", "--out", out, "--model", model, "--rationales", "none",
                     "--limit", ROWS, *FAST)
    assert result.exit_code == 0, result.output
    return read_output(out)


def _temperature(model: Path) -> float:
    return NanoConfig.load(model).label_temperature


def test_calibrate_writes_a_temperature_that_later_scores_use(model_copy: Path, tmp_path: Path):
    shipped = _temperature(model_copy)
    result = run_cli("calibrate", "--model", model_copy, *DEV, "--json", tmp_path / "fit.json", "--workers", "0",
                     "--out", tmp_path / "before")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "fit.json").read_text())
    assert report["rows"]["evaluated"] == ROWS and report["temperature_before"] == shipped
    temperature = _temperature(model_copy)
    assert temperature == report["temperature"] and temperature != shipped
    assert "label temperature" in result.output and "ECE" in result.output
    # the fitted temperature lowers the log loss on the rows it was fitted on, and changes no label
    assert report["after"]["log_loss"] < report["before"]["log_loss"]
    assert report["after"]["accuracy"] == report["before"]["accuracy"]

    before = read_output(tmp_path / "before")  # --out keeps the dev split as scored before the fit
    after = _score(model_copy, tmp_path / "after")
    assert after["label"].to_list() == before["label"].to_list()
    expected = rescaled(before.select(PROBABILITIES).to_numpy(), temperature / shipped)
    assert after.select(PROBABILITIES).to_numpy() == pytest.approx(expected, abs=2e-3)

    again = run_cli("calibrate", "--model", model_copy, *DEV, "--workers", "0", "--quiet")
    assert again.exit_code == 0, again.output
    assert _temperature(model_copy) == pytest.approx(temperature, rel=0.02)  # a fixed point, not compounded


@pytest.mark.parametrize(
    ("model", "message"),
    [("nano", "must be a trained nano model folder"), ("missing", "must be a trained nano model folder"),
     ("empty", "has no nano.json")],
)
def test_a_model_that_cannot_take_a_temperature_stops_the_job(tmp_path: Path, model: str, message: str):
    (tmp_path / "empty").mkdir()
    target = model if model == "nano" else tmp_path / model
    result = run_cli("calibrate", "--model", target, *DEV)
    assert result.exit_code == 2 and message in result.output


def test_a_dev_split_with_unknown_labels_stops_before_scoring(model_copy: Path, tmp_path: Path):
    dev = tmp_path / "dev.parquet"
    pl.DataFrame({"post_id": ["a", "b"], "text": ["x", "y"], "label": ["positive", "happy"]}).write_parquet(dev)
    shipped = _temperature(model_copy)
    result = run_cli("calibrate", "--model", model_copy, "--dev", dev, "--out", tmp_path / "scored")
    assert result.exit_code == 2 and "'happy'" in result.output
    assert not (tmp_path / "scored").exists() and _temperature(model_copy) == shipped
