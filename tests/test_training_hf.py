"""train-assistant / distill of a Hugging Face VLM (a tiny random Qwen2.5-VL) on a few real posts.

Real peft, real accelerate, the real scoring preparer: the adapter a run saves is loaded by
`score --model BASE --adapter OUT/best/adapter`; a finished run resumes to nothing; the KD term
moves the student.
"""

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from mulcot_batch.prompts import format_chain
from mulcot_batch.schema import LABELS
from mulcot_batch.training.loop import TrainConfig
from mulcot_batch.training.run import TrainOptions, train_model

from .conftest import read_output, run_cli, write_labelled

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUIET = lambda message: None  # noqa: E731


def _options(data: tuple[Path, Path, Path], model: Path, out: Path, **changes) -> TrainOptions:
    train, dev, chains = data
    # 8192 tokens: one batch of every label sequence, one of every chain: the 2 steps train both tasks.
    config = TrainConfig(epochs=1, max_steps=2, token_budget=8192, checkpoint_every=1, w_kd=changes.pop("w_kd", 0.0), bf16=False)
    settings = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.2, "chain_holdout": 0.25, "max_chain_tokens": 32} | changes
    return TrainOptions(train=str(train), dev=str(dev), chains=str(chains), out=str(out), model=str(model), config=config, **settings)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The nano tests' splits, with a chain that agrees with its gold label for every training post."""
    train, dev, chains = write_labelled(tmp_path_factory.mktemp("labelled"))
    fields = {"text_analysis": "The text says it.", "image_analysis": "The image shows it.",
              "conflict_resolution": "They agree.", "final_conclusion": "So it is."}
    posts = pl.read_parquet(train).filter(pl.col("label").is_in(list(LABELS)) & pl.col("post_id").is_not_null())
    rationale = pl.col("label").map_elements(lambda label: format_chain(fields, label), return_dtype=pl.String)
    posts.unique("post_id", keep="first").with_columns(rationale.alias("rationale")).write_parquet(chains)
    return train, dev, chains


@pytest.fixture(scope="module")
def assistant(data, tiny_qwen_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step LoRA assistant; returns its work folder."""
    out = tmp_path_factory.mktemp("assistant") / "run"
    summary = train_model(_options(data, tiny_qwen_folder, out), log=QUIET)
    assert summary["best_epoch"] == 1
    return out


def test_assistant_adapter_is_trained_and_scores(assistant: Path, data, tiny_qwen_folder: Path, tmp_path: Path):
    adapter = assistant / "best" / "adapter"
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: the 2 steps trained it
    assert not any("visual" in name for name in weights)  # the vision tower stays frozen
    assert len((assistant / "metrics.jsonl").read_text().splitlines()) == 1
    summary = json.loads((assistant / "run.json").read_text())
    assert summary["data"]["chains used"] == 13 and (assistant / "heldout_chains.parquet").is_file()
    result = run_cli("score", data[1], "--out", tmp_path / "scored", "--model", tiny_qwen_folder, "--adapter", adapter,
                     "--rationales", "none", "--workers", "0", "--dtype", "float32", "--quiet")
    assert result.exit_code == 0, result.output
    scored = read_output(tmp_path / "scored")
    assert scored.height == 6 and scored["status"].unique().to_list() == ["ok"]
    assert scored["model"].unique().to_list() == [f"{tiny_qwen_folder.name}+adapter"]


def test_a_finished_run_resumes_to_nothing(assistant: Path, data, tiny_qwen_folder: Path):
    before = torch.load(assistant / "checkpoint.pt", weights_only=True)["state"]
    adapter = (assistant / "best" / "adapter" / "adapter_model.safetensors").read_bytes()
    again = train_model(_options(data, tiny_qwen_folder, assistant), log=QUIET)
    assert again["best_epoch"] == 1 and torch.load(assistant / "checkpoint.pt", weights_only=True)["state"] == before
    assert (assistant / "best" / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
    assert len((assistant / "metrics.jsonl").read_text().splitlines()) == 1


def test_distill_learns_from_the_assistant_logits(assistant: Path, data, tiny_qwen_folder: Path, tmp_path: Path):
    train, dev, chains = data
    out = tmp_path / "student"
    result = run_cli("distill", "--model", tiny_qwen_folder, "--assistant", assistant / "best" / "adapter",
                     "--train", train, "--dev", dev, "--chains", chains, "--out", out, "--lora-r", "4",
                     "--lora-alpha", "8", "--max-chain-tokens", "32", "--token-budget", "8192", "--fp32", "--w-kd", "1",
                     "--label-balance", "1")
    assert result.exit_code == 0, result.output
    assert "label loss weights: positive" in result.output  # the balanced label CE ran in a real training loop
    cached = torch.load(out / "teacher_logits.pt", weights_only=True)
    assert cached["logits"].shape == (len(cached["ids"]), 3) and torch.isfinite(cached["logits"]).all()
    assert (out / "best" / "adapter" / "adapter_model.safetensors").is_file()
    # The same 2 steps with and without the KD term end in different students.
    with_kd = _options(data, tiny_qwen_folder, tmp_path / "kd", w_kd=5.0, assistant=str(assistant / "best" / "adapter"))
    train_model(with_kd, log=QUIET)
    train_model(_options(data, tiny_qwen_folder, tmp_path / "plain"), log=QUIET)
    kd, plain = (load_file(tmp_path / name / "best" / "adapter" / "adapter_model.safetensors") for name in ("kd", "plain"))
    assert any(not torch.equal(kd[name], plain[name]) for name in kd)


def test_full_fine_tune_saves_a_model_folder_that_scores(data, tiny_qwen_folder: Path, tmp_path: Path):
    summary = train_model(_options(data, tiny_qwen_folder, tmp_path / "full", lora_r=0), log=QUIET)
    model = tmp_path / "full" / "best" / "model"
    assert summary["best_epoch"] == 1 and (model / "config.json").is_file()
    result = run_cli("score", data[1], "--out", tmp_path / "scored", "--model", model, "--rationales", "none",
                     "--workers", "0", "--dtype", "float32", "--quiet")
    assert result.exit_code == 0, result.output
    assert read_output(tmp_path / "scored")["status"].unique().to_list() == ["ok"]


def test_training_a_nano_folder_as_a_hf_model_is_a_bad_job(data, tmp_path: Path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "nano.json").write_text("{}")
    train, dev, _ = data
    result = run_cli("train-assistant", "--model", tmp_path / "parts", "--train", train, "--dev", dev, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--model nano" in result.stderr
