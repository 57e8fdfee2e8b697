"""`annotate --backend hf`: a local VLM as teacher, through HFVLMStudent.explain (tiny random Qwen2.5-VL)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch
from PIL import Image

from mulcot_batch.teacher.annotate import AnnotateOptions, annotate
from mulcot_batch.teacher.hf_local import HFTeacher, HintedPost
from mulcot_batch.teacher.prompting import instruction

from .conftest import write_image
from .tiny_qwen import build_tiny_qwen


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_teacher_prompt_has_the_instruction_and_the_hint(tiny_model: Path):
    teacher = HFTeacher.from_folder(str(tiny_model), None, torch.float32, "cpu")
    post = HintedPost("Great game <|image_pad|> tonight", "game", Image.new("RGB", (32, 32)), hint="positive")
    prompt = teacher.preparer.prompt(post, "explain")
    assert instruction("game") in prompt
    assert "Hint: the correct sentiment label is positive" in prompt
    assert prompt.count("<|image_pad|>") == 1  # the one typed in the post is neutralised
    plain = teacher.preparer.prompt(HintedPost("Great game", None, None), "explain")
    assert "Hint" not in plain and "(The post has no image.)" in plain


def test_local_teacher_rounds_and_cache(tiny_model: Path, tmp_path: Path):
    write_image(tmp_path / "images" / "a.jpg")
    pl.DataFrame(
        {
            "post_id": ["p1", "p2"],
            "text": ["Great game tonight", "Terrible service"],
            "aspect": ["game", None],
            "image_path": ["images/a.jpg", None],
            "label": ["positive", "negative"],
        }
    ).write_parquet(tmp_path / "train.parquet")
    opts = dict(
        input=str(tmp_path / "train.parquet"),
        backend="hf",
        model=str(tiny_model),
        max_attempts=2,
        max_tokens=4,
        batch_size=2,
        dtype="float32",
        cache=str(tmp_path / "cache"),
        quiet=True,
    )
    first = annotate(AnnotateOptions(out=str(tmp_path / "a.parquet"), **opts))
    table = pl.read_parquet(tmp_path / "a.parquet")
    # A random 4-token "chain" names no label, so every post is asked twice (the second time with the hint).
    assert table["attempts"].to_list() == [2, 2] and first["requests_sent"] == 4
    assert table["status"].to_list() == ["ok", "ok"] and table["agrees"].to_list() == [False, False]
    assert table["teacher"][0].startswith("hf:")
    again = annotate(AnnotateOptions(out=str(tmp_path / "b.parquet"), **opts))
    assert again["requests_sent"] == 0 and again["cache_hits"] == 4
    assert pl.read_parquet(tmp_path / "b.parquet").equals(table)
