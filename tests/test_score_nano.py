"""End to end through the real CLI with the real embedded `nano` student on real images."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from mulcot_batch.schema import LABELS
from mulcot_batch.students import load_student
from mulcot_batch.students.base import Post

from .conftest import FAST, read_output, run_cli


def test_sample_dump_scores_every_row_once_with_fixed_schema(sample_copy: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli("score", sample_copy, "--out", out, "--limit", "12", "--keep", "created_at,gold_label", *FAST)
    assert result.exit_code == 0, result.output
    scored = read_output(out)
    source = pl.read_parquet(sample_copy).head(12)
    assert scored["post_id"].to_list() == source["post_id"].to_list()  # input order, no row lost or doubled
    assert scored.columns[:3] == ["post_id", "created_at", "gold_label"]
    assert scored["created_at"].to_list() == source["created_at"].to_list()
    assert scored["aspect"].to_list() == source["aspect"].to_list()
    probs = scored.select("p_positive", "p_neutral", "p_negative")
    assert all(dtype == pl.Float32 for dtype in probs.dtypes)
    assert np.allclose(probs.to_numpy().sum(axis=1), 1.0, atol=1e-5)
    assert set(scored["label"]) <= set(LABELS)
    best = np.array(LABELS)[probs.to_numpy().argmax(axis=1)]
    assert scored["label"].to_list() == best.tolist()
    assert (scored["confidence"].to_numpy() == probs.to_numpy().max(axis=1)).all()
    assert scored["rationale"].null_count() == 0  # default --rationales all
    assert scored["status"].to_list() == ["ok"] * 12
    missing = scored.filter(pl.col("post_id") == source["post_id"][10])
    assert missing["image_status"].item() == "missing" and missing["status"].item() == "ok"
    assert scored["model"].unique().to_list() == ["nano"]


def test_bad_rows_are_kept_and_marked(hostile_dump: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli("score", hostile_dump, "--out", out, "--rationales", "none", "--keep", "author", *FAST)
    assert result.exit_code == 0, result.output
    scored = read_output(out)
    source = pl.read_parquet(hostile_dump)
    assert scored.height == source.height and scored["author"].to_list() == source["author"].to_list()
    row = {r["author"]: r for r in scored.iter_rows(named=True)}
    by_id = {r["post_id"]: r for r in scored.iter_rows(named=True) if r["post_id"]}
    expected_images = {
        "ok-1": "ok", "no-text": "ok", "huge-text": "none", "grey": "ok", "palette": "ok", "alpha": "ok",
        "cmyk": "ok", "deep": "ok", "truncated": "unreadable", "garbage": "unreadable", "missing": "missing",
        "outside": "outside_root", "absolute": "outside_root", "bomb": "too_large", "unicode": "ok",
    }
    for post_id, image_status in expected_images.items():
        assert by_id[post_id]["image_status"] == image_status, post_id
        assert by_id[post_id]["status"] == "ok", post_id  # scored from what is usable
        assert by_id[post_id]["label"] in LABELS
    assert by_id["empty-no-image"]["status"] == "error"
    assert "empty text and no usable image" in by_id["empty-no-image"]["error"]
    assert by_id["empty-no-image"]["label"] is None and by_id["empty-no-image"]["p_positive"] is None
    null_id = row["user3"]
    assert null_id["post_id"] is None and null_id["status"] == "error" and "null" in null_id["error"]
    a, b = by_id["retweet-a"], by_id["retweet-b"]
    assert (a["label"], a["p_positive"]) == (b["label"], b["p_positive"])  # computed once, written twice


def test_rationale_modes(sample_copy: Path, tmp_path: Path):
    none = read_output(_score(sample_copy, tmp_path / "none", "--rationales", "none"))
    assert none["rationale"].null_count() == none.height
    assert none["text_analysis"].null_count() == none.height
    every = read_output(_score(sample_copy, tmp_path / "all", "--rationales", "uncertain", "--uncertain-below", "1.01"))
    assert every["rationale"].null_count() == 0
    some = read_output(_score(sample_copy, tmp_path / "some", "--rationales", "uncertain", "--uncertain-below", "0.55"))
    explained = some.filter(pl.col("rationale").is_not_null())
    assert (explained["confidence"] < 0.55).all()
    assert (some.filter(pl.col("rationale").is_null())["confidence"] >= 0.55).all()
    assert np.allclose(none["p_positive"].to_numpy(), some["p_positive"].to_numpy())


def _score(inputs: Path, out: Path, *extra: str) -> Path:
    result = run_cli("score", inputs, "--out", out, "--limit", "8", *FAST, *extra)
    assert result.exit_code == 0, result.output
    return out


def test_rerun_resumes_and_never_duplicates(sample_copy: Path, tmp_path: Path):
    out = tmp_path / "out"
    args = ["score", sample_copy, "--out", out, "--limit", "10", "--chunk-rows", "4", "--rationales", "none", *FAST]
    assert run_cli(*args).exit_code == 0
    first = read_output(out)
    parts_before = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}
    (out / "parts" / "part-00000-0000001.parquet").unlink()  # as if the run had died there
    again = run_cli(*args[:-1])  # not quiet: says it resumes
    assert again.exit_code == 0
    assert "resuming: 6 of 10 rows" in again.stderr
    second = read_output(out)
    assert second["post_id"].to_list() == first["post_id"].to_list()
    assert np.allclose(second["p_positive"].to_numpy(), first["p_positive"].to_numpy(), atol=1e-6)
    parts_after = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}
    assert parts_after["part-00000-0000000.parquet"] == parts_before["part-00000-0000000.parquet"]  # not redone


def test_another_jobs_folder_is_refused_then_overwritten(sample_copy: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert run_cli("score", sample_copy, "--out", out, "--limit", "4", "--rationales", "none", *FAST).exit_code == 0
    other = run_cli("score", sample_copy, "--out", out, "--limit", "5", "--rationales", "none", *FAST)
    assert other.exit_code == 2
    assert other.stderr.count("\n") == 1 and "another job's results" in other.stderr
    assert read_output(out).height == 4  # nothing touched
    replaced = run_cli("score", sample_copy, "--out", out, "--limit", "5", "--rationales", "none", "--overwrite", *FAST)
    assert replaced.exit_code == 0 and read_output(out).height == 5


def test_job_file_runs_with_the_same_options(sample_copy: Path, tmp_path: Path):
    job = tmp_path / "job.toml"
    out = tmp_path / "out"
    job.write_text(
        f'[score]\ninputs = ["{sample_copy.parent}"]\nout = "{out}"\nlimit = 6\nrationales = "none"\n'
        'keep = ["gold_label"]\nworkers = 0\nbatch_size = 8\n'
    )
    result = run_cli("run", job, "--quiet")
    assert result.exit_code == 0, result.output
    scored = read_output(out)
    assert scored.height == 6 and "gold_label" in scored.columns and scored["rationale"].null_count() == 6


def test_shipped_job_files_are_valid_command_lines():
    from mulcot_batch.cli import main
    from mulcot_batch.jobs import read_job, stage_args

    jobs = Path(__file__).resolve().parent.parent / "jobs"
    for job in sorted(jobs.glob("*.toml")):
        for name, table in read_job(job):
            command = main.commands[name.replace("_", "-")]
            args = stage_args(command, table, str(job))
            command.make_context(command.name, args)  # click validates every option and argument
    [(stage, sample)] = read_job(jobs / "score-sample.toml")
    assert stage == "score"
    assert sample["inputs"] == ["sample_data"] and sample["model"] == "nano"


def test_job_file_errors_are_one_line(tmp_path: Path):
    job = tmp_path / "job.toml"
    job.write_text('[score]\ninputs = ["x"]\nout = "y"\nbogus = 1\n')
    result = run_cli("run", job)
    assert result.exit_code == 2 and "unknown option 'bogus'" in result.stderr
    job.write_text('[explode]\nx = 1\n')
    assert "not a mulcot-batch command" in run_cli("run", job).stderr
    job.write_text("# nothing to do\n")
    assert "has no stages" in run_cli("run", job).stderr


@pytest.mark.parametrize("workers", ["2"])
def test_dataloader_workers_give_the_same_result(sample_copy: Path, tmp_path: Path, workers: str):
    base = ["score", sample_copy, "--limit", "12", "--chunk-rows", "4", "--rationales", "none", "--batch-size", "8", "--quiet"]
    assert run_cli(*base, "--out", tmp_path / "w0", "--workers", "0").exit_code == 0
    assert run_cli(*base, "--out", tmp_path / "w2", "--workers", workers).exit_code == 0
    w0, w2 = read_output(tmp_path / "w0"), read_output(tmp_path / "w2")
    assert w0["post_id"].to_list() == w2["post_id"].to_list()
    assert np.allclose(w0["p_positive"].to_numpy(), w2["p_positive"].to_numpy(), atol=1e-6)


def test_label_probabilities_are_not_rounded_to_bf16_steps(one_torch_thread):
    """With bf16 weights the three label logits are still computed in fp32: in bf16 a logit near 10
    moves in steps of 1/16, so every log-ratio of two probabilities fell on that grid and close calls
    came out as exact ties (17 of 1,122 T15 dev posts), broken by label order."""
    nano = load_student("nano", None, torch.bfloat16, torch.device("cpu"), None, 0)
    red = Image.new("RGB", (40, 30), (200, 30, 30))
    texts = [("Great game by Messi tonight", "Messi"), ("Rain again , the trains are late", None), ("Obama speaks in Chicago today", "Obama"), ("I hate mondays so much", "Monday")]
    preparer = nano.preparer()
    probs = nano.classify(preparer.collate([preparer.prepare(Post(t, a, red)) for t, a in texts], "classify")).astype(np.float64)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    log_ratios = np.log(probs[:, :2] / probs[:, 2:])
    off_grid = np.abs(log_ratios * 64 - np.round(log_ratios * 64))
    assert off_grid.max() > 1e-3, "label logits were rounded to bf16 steps"


def test_a_job_file_scores_in_float32_then_evaluates_in_bfloat16_in_one_process(sample_copy: Path, tmp_path: Path):
    """accelerate keeps one precision per process: the bf16 stage used to stop at "AcceleratorState
    has already been initialized"; and under its bf16 autocast the fp32 label head was cast back to
    bf16, which numpy cannot hold."""
    job = tmp_path / "job.toml"
    job.write_text(
        f'[score]\ninputs = ["{sample_copy}"]\nout = "{tmp_path / "fp32"}"\nlimit = 4\nrationales = "none"\nworkers = 0\n'
        'dtype = "float32"\n'
        f'[evaluate]\nscored = "{sample_copy}"\nscore_first = true\nout = "{tmp_path / "bf16"}"\nlabel_col = "gold_label"\n'
        'limit = 4\nrationales = "none"\nworkers = 0\ndtype = "bfloat16"\n'
    )
    result = run_cli("run", job, "--quiet")
    assert result.exit_code == 0, result.output
    fp32, bf16 = (read_output(tmp_path / name).select("p_positive", "p_neutral", "p_negative").to_numpy() for name in ("fp32", "bf16"))
    assert fp32.shape == bf16.shape == (4, 3)
    assert np.abs(fp32 - bf16).max() < 0.1  # the same model at two precisions


@pytest.mark.parametrize(("capability", "expected"), [("AVX512", torch.bfloat16), ("AVX2", torch.float32), ("DEFAULT", torch.float32)])
def test_auto_dtype_is_bf16_only_on_cpus_with_bf16_kernels(monkeypatch, capability: str, expected: torch.dtype):
    """On an AVX2-only CPU bf16 ran nano 3-4x slower than fp32; with AVX-512, 2.5x faster."""
    from mulcot_batch.engine import resolve_dtype

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16  # asked for by name: given
    from mulcot_batch.training.loop import TrainConfig

    assert TrainConfig().bf16 is (expected == torch.bfloat16)  # training's autocast follows the same rule
    assert TrainConfig(bf16=True).bf16 is True


def test_loading_nano_prints_no_library_chatter(capfd):
    """Every `score` run used to open with transformers' "Loading weights" bar and a FutureWarning that
    peft triggers; neither is the user's to act on. transformers' own bars come back afterwards."""
    import warnings

    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()  # a --quiet job earlier in this process turns them off
    hf_logging.enable_progress_bar()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_student("nano", None, torch.float32, torch.device("cpu"), None, 0)
        assert not [str(w.message) for w in caught if "gradient_checkpointing" in str(w.message)]
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()
    finally:
        if not bars_were_on:
            hf_logging.disable_progress_bar()
