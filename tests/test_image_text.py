"""The OCR text of images: read once and cached, shown to an assistant trained with it, never to `score`."""

import json
from pathlib import Path

import pytest
import torch

from mulcot_batch.image_text import ImageTextCache, with_image_text
from mulcot_batch.training.data import Example, load_examples
from mulcot_batch.training.loop import TrainConfig
from mulcot_batch.training.recipes import TrainOptions, _teacher_logits, train_nano

from .conftest import run_cli


def test_images_are_read_once_and_the_cache_survives_a_restart(tmp_path: Path):
    images = [tmp_path / "a.jpg", tmp_path / "b.jpg", None]
    calls = []

    def read(name: str) -> str:
        calls.append(name)
        return "HAPPY BIRTHDAY" if name.endswith("a.jpg") else ""

    said = []
    ImageTextCache(tmp_path / "text.json").ensure(images, log=said.append, read=read)
    assert said[0] == "reading the text in 2 images" and said[-1].startswith("  read 2/2 images")  # a long pass reports progress
    again = ImageTextCache(tmp_path / "text.json")
    again.ensure(images, log=lambda m: None, read=read)  # nothing left to read
    assert len(calls) == 2
    posts = [Example("1", "what a day", None, images[0], "positive", None), Example("2", "ok", None, images[1], "neutral", None)]
    shown = with_image_text(posts, again)
    assert shown[0].text == "what a day\nText in the image: HAPPY BIRTHDAY"
    assert shown[1].text == "ok"  # nothing read: the post is left as it was


def test_ocr_reads_the_words_printed_in_an_image(tmp_path: Path):
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra (rapidocr-onnxruntime) is not installed")
    from PIL import Image, ImageDraw, ImageFont

    from mulcot_batch.image_text import ocr_engine

    image = Image.new("RGB", (480, 160), "white")
    ImageDraw.Draw(image).text((20, 50), "FREE THE WHALES", fill="black", font=ImageFont.load_default(size=40))
    image.save(tmp_path / "poster.png")
    assert "WHALES" in ocr_engine()(str(tmp_path / "poster.png")).replace(" ", "")


@pytest.mark.slow
def test_an_assistant_trained_on_image_text_teaches_a_student_that_never_sees_it(labelled, tmp_path: Path):
    train, dev, _ = labelled
    seen = [e.image for e in load_examples(train) + load_examples(dev) if e.image is not None]
    texts = {str(p): ("BEST DAY EVER" if i % 2 else "") for i, p in enumerate(seen)}
    (tmp_path / "image_text.json").write_text(json.dumps(texts))  # the OCR pass, done beforehand
    config = TrainConfig(epochs=1, max_steps=1, token_budget=512, checkpoint_every=1, w_kd=0.0)
    assistant = TrainOptions(train=str(train), dev=str(dev), out=str(tmp_path / "assistant"), lora_r=4, image_text=True, config=config)
    summary = train_nano(assistant, log=lambda m: None)
    assert summary["data"]["posts with text read in their image"] > 0
    best = tmp_path / "assistant" / "best"
    assert json.loads((best / "nano.json").read_text())["reads_image_text"] is True
    refused = run_cli("score", dev, "--out", tmp_path / "scored", "--model", best, "--workers", "0", "--quiet")
    assert refused.exit_code != 0 and "OCR text" in refused.output

    kd = TrainConfig(epochs=1, max_steps=1, token_budget=512, checkpoint_every=1, w_kd=1.0)
    student = TrainOptions(train=str(train), dev=str(dev), out=str(tmp_path / "student"), lora_r=4, assistant=str(best), config=kd)
    train_nano(student, log=lambda m: None)
    assert json.loads((tmp_path / "student" / "best" / "nano.json").read_text())["reads_image_text"] is False
    taught = torch.load(tmp_path / "student" / "teacher_logits.pt", weights_only=True)["logits"]
    (tmp_path / "image_text.json").write_text(json.dumps(dict.fromkeys(texts, "")))  # as if no image had text
    (tmp_path / "student" / "teacher_logits.pt").unlink()
    blank = _teacher_logits(student, load_examples(train), tmp_path / "student", log=lambda m: None)
    changed = (taught - blank).abs().amax(dim=1) > 1e-4
    assert changed.any() and not changed.all()  # only the posts whose image had text got a different answer
