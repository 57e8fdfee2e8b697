"""`mulcot-batch evaluate`: a scored output against gold labels and reference chains."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from mulcot_batch.prompts import format_chain

from .conftest import SHARED_T15, run_cli
from .tiny_qwen import build_tiny_qwen

FIELDS = {
    "text_analysis": "The text talks about the game.",
    "image_analysis": "The image shows a stadium.",
    "conflict_resolution": "No conflict between text and image.",
    "final_conclusion": "The sentiment is as predicted.",
}
GOLD = ["positive", "neutral", "negative", "neutral"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture
def gold_file(tmp_path: Path) -> Path:
    path = tmp_path / "gold.parquet"
    pl.DataFrame(
        {
            "post_id": ["a", "b", "c", "d"],
            "label": GOLD,
            "rationale": [format_chain(FIELDS, label) for label in GOLD],
        }
    ).write_parquet(path)
    return path


def scored_folder(
    root: Path,
    ids: list[str],
    labels: list[str | None],
    with_chains: bool = True,
    probabilities: dict[str, list[float | None]] | None = None,
) -> Path:
    """A scoring output folder as `score` writes it (parts/), with the columns evaluate reads."""
    (root / "parts").mkdir(parents=True)
    chains = [format_chain(FIELDS, label) if with_chains and label else None for label in labels]
    pl.DataFrame(
        {
            "post_id": ids,
            "label": labels,
            "rationale": chains,
            "status": ["ok" if label else "error" for label in labels],
            "model": ["tiny"] * len(ids),
            **(probabilities or {}),
        },
        schema_overrides={"label": pl.String, "rationale": pl.String, **{p: pl.Float32 for p in probabilities or {}}},
    ).write_parquet(root / "parts" / "part-00000-0000000.parquet")
    return root


def test_labels_and_chains_written_as_json_and_table(gold_file: Path, tmp_path: Path):
    scored = scored_folder(tmp_path / "scored", ["a", "b", "c", "d"], ["positive", "neutral", "neutral", None])
    result = run_cli("evaluate", scored, "--gold", gold_file, "--json", tmp_path / "report.json", "--no-cosine")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    labels = report["labels"]
    assert labels["accuracy"] == 0.5 and labels["no_prediction"] == 1 and report["error_rows"] == 1
    assert labels["confusion_matrix"]["counts"] == [[1, 0, 0, 0], [0, 1, 0, 1], [0, 1, 0, 0]]
    chains = report["chains"]
    assert chains["chains"] == 3 and chains["pairs"] == 3 and chains["complete_share"] == 1.0
    assert chains["label_agreement"] == pytest.approx(2 / 3)  # row c: its chain says neutral, gold negative
    assert chains["agreement_with_scored_label"] == 1.0
    assert chains["rouge_l_f1"] < 1.0 and chains["unavailable"]["cosine"] == "skipped on request"
    for text in ("accuracy", "macro-F1", "confusion matrix", "ROUGE-L F1", "METEOR"):
        assert text in result.stdout


def test_probabilities_are_checked_for_calibration(gold_file: Path, tmp_path: Path):
    # gold: positive, neutral, negative, neutral; the last row is an error row without probabilities
    probabilities = {
        "p_positive": [0.9, 0.2, 0.5, None],
        "p_neutral": [0.1, 0.7, 0.3, None],
        "p_negative": [0.0, 0.1, 0.2, None],
    }
    labels = ["positive", "neutral", "positive", None]
    scored = scored_folder(tmp_path / "scored", ["a", "b", "c", "d"], labels, probabilities=probabilities)
    result = run_cli("evaluate", scored, "--gold", gold_file, "--json", tmp_path / "report.json", "--no-cosine")
    assert result.exit_code == 0, result.output
    calibration = json.loads((tmp_path / "report.json").read_text())["calibration"]
    assert calibration["n"] == 3 and calibration["without_probabilities"] == 1
    assert calibration["ece"] == pytest.approx(0.3) and calibration["brier"] == pytest.approx(0.38)
    assert "ECE / log loss / Brier" in result.stdout and "0.3000 /" in result.stdout
    assert "rows without probabilities" in result.stdout and "0.8-0.9" in result.stdout


def test_an_output_without_probabilities_says_calibration_is_not_available(gold_file: Path, tmp_path: Path):
    scored = scored_folder(tmp_path / "scored", ["a", "b", "c", "d"], ["positive", "neutral", "negative", "neutral"])
    result = run_cli("evaluate", scored, "--gold", gold_file, "--json", tmp_path / "report.json", "--no-cosine")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report.json").read_text())["calibration"] == {"n": 0, "without_probabilities": 4}
    assert "n/a (no row has p_* probabilities)" in result.stdout


def test_ids_that_do_not_match_fail_with_both_counts(gold_file: Path, tmp_path: Path):
    scored = scored_folder(tmp_path / "scored", ["a", "b", "x", "y", "z"], ["positive"] * 5)
    result = run_cli("evaluate", scored, "--gold", gold_file)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "3 scored ids are missing from the gold file and 2 gold ids are missing from the scored output" in result.stderr
    assert "--allow-partial" in result.stderr


def test_allow_partial_evaluates_the_ids_in_both(gold_file: Path, tmp_path: Path):
    scored = scored_folder(tmp_path / "scored", ["a", "b", "x"], ["positive", "negative", "neutral"], with_chains=False)
    result = run_cli("evaluate", scored, "--gold", gold_file, "--allow-partial", "--json", tmp_path / "r.json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rows"] == {"scored": 3, "gold": 4, "evaluated": 2, "scored_not_in_gold": 1, "gold_not_in_scored": 2}
    assert report["labels"]["accuracy"] == 0.5 and report["chains"] is None
    assert result.stdout == ""


@pytest.mark.parametrize(
    "gold_frame, args, message",
    [
        ({"post_id": ["a"], "label": ["mixed"]}, [], "1 rows have a 'label' value that is not positive/neutral/negative"),
        ({"post_id": ["a"], "sentiment": ["positive"]}, [], "has no column 'label' (it has: post_id, sentiment); name the right one with --label-col"),
        ({"post_id": ["a", "a"], "label": ["positive"] * 2}, [], "1 repeated ids"),
        ({"post_id": ["a"], "label": ["positive"]}, ["--reference-col", "chain"], "has no column 'chain'"),
        ({"post_id": ["a"], "label": ["positive"]}, ["--model", "nano"], "--model applies only with --score-first"),
    ],
)
def test_bad_gold_or_options_stop_the_job(tmp_path: Path, gold_frame: dict, args: list[str], message: str):
    pl.DataFrame(gold_frame).write_parquet(tmp_path / "gold.parquet")
    scored = scored_folder(tmp_path / "scored", ["a"], ["positive"])
    result = run_cli("evaluate", scored, "--gold", tmp_path / "gold.parquet", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_missing_scored_output_and_missing_gold_option(gold_file: Path, tmp_path: Path):
    assert "scored output not found" in run_cli("evaluate", tmp_path / "nope", "--gold", gold_file).stderr
    assert "--gold is required" in run_cli("evaluate", tmp_path / "nope").stderr


def test_score_first_scores_a_labelled_input_then_evaluates(tmp_path: Path, tiny_model: Path):
    """The real scoring job on a tiny random Qwen2.5-VL, then the evaluation of what it wrote."""
    posts = tmp_path / "posts.parquet"
    pl.DataFrame(
        {"post_id": ["p1", "p2", "p3"], "text": ["I love it", "It is fine", "I hate it"], "gold": ["positive", "neutral", "negative"]}
    ).write_parquet(posts)
    out = tmp_path / "scored"
    args = ["--score-first", "--out", out, "--model", tiny_model, "--label-col", "gold", "--json", tmp_path / "r.json"]
    result = run_cli("evaluate", posts, *args, "--rationales", "none", "--workers", "0", "--dtype", "float32", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rows"]["evaluated"] == 3 and report["labels"]["no_prediction"] == 0
    assert report["models"] == [tiny_model.name] and (out / "job.json").is_file()


def test_score_first_needs_an_output_folder(tmp_path: Path, gold_file: Path):
    result = run_cli("evaluate", gold_file, "--score-first")
    assert result.exit_code == 2 and "--score-first needs --out DIR" in result.stderr


@pytest.mark.skipif(not (SHARED_T15 / "rationales.parquet").is_file(), reason="../shared/data/t15 is not beside the repository")
def test_teacher_chains_as_scored_output_on_real_t15(tmp_path: Path):
    """60 real teacher chains posing as a scored output, against the whole rationales.parquet."""
    from mulcot_batch.prompts import extract_label

    rationales = SHARED_T15 / "rationales.parquet"
    sample = pl.read_parquet(rationales).head(60)
    sample.write_parquet(tmp_path / "scored.parquet")
    args = ["--gold", rationales, "--allow-partial", "--json", tmp_path / "r.json", "--quiet", "--no-meteor", "--no-cosine"]
    result = run_cli("evaluate", tmp_path / "scored.parquet", *args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["labels"]["accuracy"] == 1.0 and report["rows"]["gold_not_in_scored"] == 688 - 60
    agree = sum(extract_label(c) == g for c, g in zip(sample["rationale"], sample["label"])) / 60
    assert report["chains"]["label_agreement"] == pytest.approx(agree)
    assert report["chains"]["bleu"] == pytest.approx(1.0) and report["chains"]["rouge_l_f1"] == pytest.approx(1.0)


def test_an_unscored_input_passed_as_scored_says_to_score_it_first(tmp_path: Path):
    posts = tmp_path / "posts.parquet"
    pl.DataFrame({"post_id": ["a"], "text": ["hi"], "gold": ["positive"]}).write_parquet(posts)
    result = run_cli("evaluate", posts, "--gold", posts, "--label-col", "gold")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "has no column 'label' (it has: post_id, text, gold)" in result.stderr and "--score-first" in result.stderr
