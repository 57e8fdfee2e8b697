"""`mulcot-batch score --model FOLDER [--adapter DIR]` on a tiny Qwen2.5-VL built in the test."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from mulcot_batch.schema import LABELS

from .conftest import read_output, run_cli
from .tiny_qwen import build_tiny_qwen

ARGS = ["--batch-size", "4", "--max-new-tokens", "5", "--workers", "0", "--quiet", "--dtype", "float32"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(1)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(base, config).save_pretrained(folder)
    return folder


def test_hf_model_folder_scores_a_real_dump(tiny_model: Path, hostile_dump: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli("score", hostile_dump, "--out", out, "--model", tiny_model, *ARGS)
    assert result.exit_code == 0, result.output
    scored = read_output(out)
    assert scored.height == pl.read_parquet(hostile_dump).height
    ok = scored.filter(pl.col("status") == "ok")
    assert set(ok["label"]) <= set(LABELS)
    assert np.allclose(ok.select("p_positive", "p_neutral", "p_negative").to_numpy().sum(axis=1), 1.0, atol=1e-5)
    assert ok["rationale"].null_count() == 0
    assert scored["model"].unique().to_list() == [tiny_model.name]
    assert scored.filter(pl.col("post_id") == "bomb")["image_status"].item() == "too_large"


def test_adapter_changes_the_scores(tiny_model: Path, tiny_adapter: Path, sample_copy: Path, tmp_path: Path):
    common = ["score", sample_copy, "--model", tiny_model, "--limit", "4", "--rationales", "none", *ARGS]
    assert run_cli(*common, "--out", tmp_path / "base").exit_code == 0
    result = run_cli(*common, "--out", tmp_path / "lora", "--adapter", tiny_adapter)
    assert result.exit_code == 0, result.output
    base, lora = read_output(tmp_path / "base"), read_output(tmp_path / "lora")
    assert not np.allclose(base["p_positive"].to_numpy(), lora["p_positive"].to_numpy())


def test_adapter_without_config_is_a_bad_job(tiny_model: Path, sample_copy: Path, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = run_cli("score", sample_copy, "--out", tmp_path / "o", "--model", tiny_model, "--adapter", tmp_path / "empty")
    assert result.exit_code == 2 and "adapter_config.json" in result.stderr


def test_chunk_of_only_error_rows_keeps_the_schema(tiny_model: Path, tmp_path: Path):
    dump = tmp_path / "empty.parquet"
    pl.DataFrame({"post_id": ["a", None, "c"], "text": ["", "", None]}).write_parquet(dump)
    result = run_cli("score", dump, "--out", tmp_path / "out", "--model", tiny_model, *ARGS)
    assert result.exit_code == 0, result.output
    scored = read_output(tmp_path / "out")
    assert scored.height == 3 and scored["status"].to_list() == ["error"] * 3
    assert scored.schema["p_positive"] == pl.Float32 and scored["label"].null_count() == 3
