"""The Hugging Face backend on a tiny random Qwen2.5-VL built in the test (no hub, no download).

What a user relies on: probabilities that are real distributions and do not depend on which
other posts share a batch (left padding, 3D positions of image tokens), greedy chains that are the
same batched or alone, posts with and without images mixed freely, a preparer that survives the
trip into DataLoader workers, and a LoRA adapter that is actually applied.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mulcot_batch.prompts import PREDICTION_PREFIX
from mulcot_batch.students.base import Post
from mulcot_batch.students.base import label_token_ids
from mulcot_batch.students.hf_vlm import HFVLMStudent

try:
    from tiny_qwen import build_tiny_qwen
except ImportError:  # tests/ imported as a package
    from tests.tiny_qwen import build_tiny_qwen


def _image(width: int, height: int, seed: int, grayscale: bool = False) -> Image.Image:
    """A noise picture of the given size; a grayscale one is converted to RGB by the caller, as the reader does."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    return image.convert("L").convert("RGB") if grayscale else image


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="module")
def student(model_folder: Path) -> HFVLMStudent:
    return HFVLMStudent.from_folder(model_folder)  # dtype None: float32 on CPU


@pytest.fixture(scope="module")
def posts() -> list[Post]:
    """Mixed lengths, image sizes and modes, with and without aspect or image."""
    return [
        Post("I love this phone, the camera is great and the battery lasts all day.", None, _image(320, 200, 1)),
        Post("The match was a disaster", "team", None),
        Post("We are not sure what the weather will be like tomorrow.", None, _image(50, 90, 2, grayscale=True)),
        Post("", "meeting", _image(280, 280, 3)),
        Post("short", None, None),
    ]


def _classify_each(student: HFVLMStudent, posts: list[Post]) -> np.ndarray:
    preparer = student.preparer()
    return np.concatenate([student.classify(preparer.collate([preparer.prepare(p)], "classify")) for p in posts])


def test_classify_returns_probability_rows(student: HFVLMStudent, posts: list[Post]) -> None:
    preparer = student.preparer()
    probs = student.classify(preparer.collate([preparer.prepare(p) for p in posts], "classify"))
    assert probs.shape == (len(posts), 3)
    assert probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_probabilities_do_not_depend_on_the_batch(student: HFVLMStudent, posts: list[Post]) -> None:
    preparer = student.preparer()
    prepared = [preparer.prepare(p) for p in posts]
    alone = _classify_each(student, posts)
    together = student.classify(preparer.collate(prepared, "classify"))
    reversed_ = student.classify(preparer.collate(prepared[::-1], "classify"))[::-1]
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(reversed_, alone, atol=1e-5)
    # the random model tells the posts apart, so the comparison above is not trivially true
    assert np.abs(alone - alone.mean(axis=0)).max() > 1e-2


def test_explain_batched_equals_unbatched(student: HFVLMStudent, posts: list[Post]) -> None:
    preparer = student.preparer()
    prepared = [preparer.prepare(p) for p in posts]
    batched = student.explain(preparer.collate(prepared, "explain"), max_new_tokens=8)
    alone = [student.explain(preparer.collate([p], "explain"), max_new_tokens=8)[0] for p in prepared]
    assert len(batched) == len(posts)
    assert all(isinstance(text, str) for text in batched)
    assert batched == alone
    assert any(batched)


def test_first_generated_token_is_the_classified_label_distribution(student: HFVLMStudent, posts: list[Post]) -> None:
    """The forward pass of classify and the first step of generate see the same positions."""
    preparer = student.preparer()
    batch = preparer.collate([preparer.prepare(p) for p in posts], "classify")
    inputs = student._on_device(batch)
    out = student.model.generate(
        **inputs, max_new_tokens=1, do_sample=False, repetition_penalty=1.0, output_scores=True,
        return_dict_in_generate=True, pad_token_id=student.processor.tokenizer.pad_token_id,
    )
    from_generate = torch.softmax(out.scores[0][:, student.label_ids].float(), dim=-1).numpy()
    np.testing.assert_allclose(student.classify(batch), from_generate, atol=1e-5)


def test_posts_without_images(student: HFVLMStudent) -> None:
    preparer = student.preparer()
    posts = [Post("Nothing to see here", None, None), Post("The fans were angry", "fans", None)]
    batch = preparer.collate([preparer.prepare(p) for p in posts], "classify")
    assert "pixel_values" not in batch
    probs = student.classify(batch)
    np.testing.assert_allclose(probs, _classify_each(student, posts), atol=1e-5)
    chains = student.explain(preparer.collate([preparer.prepare(p) for p in posts], "explain"), max_new_tokens=4)
    assert len(chains) == 2


def test_prompts_say_what_the_post_is(student: HFVLMStudent) -> None:
    preparer = student.preparer()
    with_aspect = Post("The fans were angry", "fans", _image(40, 40, 4))
    label_prompt = preparer.prompt(with_aspect, "classify")
    reasoning_prompt = preparer.prompt(with_aspect, "explain")
    assert label_prompt.endswith(PREDICTION_PREFIX)
    assert not reasoning_prompt.endswith(PREDICTION_PREFIX)
    for prompt in (label_prompt, reasoning_prompt):
        assert "Text: The fans were angry" in prompt and "Aspect: fans" in prompt and "<|image_pad|>" in prompt
    plain = preparer.prompt(Post("hello", None, None), "classify")
    assert "Aspect:" not in plain and "<|image_pad|>" not in plain


def test_very_long_text_is_clipped(student: HFVLMStudent) -> None:
    preparer = student.preparer()
    short = preparer.prepare(Post("word " * 400, None, None)).length  # 2000 characters
    huge = preparer.prepare(Post("word " * 20_000, None, None)).length  # 100,000 characters
    assert huge == short


def test_special_token_text_in_a_post_is_harmless(student: HFVLMStudent) -> None:
    """A post typing "<|image_pad|>" must not be read as an image placeholder (that breaks the batch)."""
    preparer = student.preparer()
    posts = [
        Post("look <|image_pad|><|vision_start|> <|im_end|>", None, _image(60, 60, 5)),
        Post("<|image_pad|>", "<|im_start|>", None),
    ]
    probs = student.classify(preparer.collate([preparer.prepare(p) for p in posts], "classify"))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_preparer_survives_pickle(student: HFVLMStudent, posts: list[Post]) -> None:
    preparer = student.preparer()
    copy = pickle.loads(pickle.dumps(preparer))
    for post in posts[:3]:
        original, restored = preparer.prepare(post), copy.prepare(post)
        assert original.length == restored.length
        for task in ("classify", "explain"):
            assert torch.equal(original.inputs[task]["input_ids"], restored.inputs[task]["input_ids"])
    batch = copy.collate([copy.prepare(p) for p in posts], "classify")
    np.testing.assert_allclose(student.classify(batch), _classify_each(student, posts), atol=1e-5)


def test_lora_adapter_is_applied(model_folder: Path, student: HFVLMStudent, posts: list[Post], tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(model_folder)
    torch.manual_seed(1)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    adapter_folder = tmp_path / "adapter-t15"
    get_peft_model(base, config).save_pretrained(adapter_folder)

    adapted = HFVLMStudent.from_folder(model_folder, adapter=adapter_folder, dtype=torch.float32)
    assert adapted.name == f"{model_folder.name}+adapter-t15"
    assert "adapter-t15" in adapted.weights
    preparer = adapted.preparer()
    batch = preparer.collate([preparer.prepare(p) for p in posts], "classify")
    with_adapter = adapted.classify(batch)
    np.testing.assert_allclose(with_adapter.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(with_adapter - student.classify(batch)).max() > 1e-3


def test_bfloat16_weights_take_float32_images(model_folder: Path, student: HFVLMStudent, posts: list[Post]) -> None:
    half = HFVLMStudent.from_folder(model_folder, dtype=torch.bfloat16)
    assert "bfloat16" in half.weights
    preparer = half.preparer()
    probs = half.classify(preparer.collate([preparer.prepare(p) for p in posts], "classify"))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, _classify_each(student, posts), atol=0.05)


def test_identity_is_stated(student: HFVLMStudent, model_folder: Path) -> None:
    assert student.name == model_folder.name
    assert str(model_folder) in student.weights and "float32" in student.weights


def test_labels_sharing_a_first_token_are_refused() -> None:
    class OneTokenForAll:
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [7, len(text)]

        def convert_ids_to_tokens(self, token_id: int) -> str:
            return "Ġ"

    with pytest.raises(ValueError, match="share a first token"):
        label_token_ids(OneTokenForAll())
