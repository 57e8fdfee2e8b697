"""`train-assistant` and `distill` for Hugging Face image-text-to-text models (Qwen2.5-VL first).

The model loads from a local folder exactly as `score --model` loads it (`HFVLMStudent.from_folder`),
and every prompt is built by the scoring preparer (`HFVLMPreparer.prepare`), so training sees the
tokens scoring sends. LoRA (peft) on the language model's attention and MLP projections, or a full
fine-tune of the language model; the vision tower stays frozen either way. The best epoch is saved
as `OUT/best/adapter` (LoRA: `score --model BASE --adapter OUT/best/adapter`) or `OUT/best/model`
(a whole model folder: `score --model OUT/best/model`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import JobError
from ..images import load_image
from ..students import check_model, is_nano_folder
from ..students.base import Post
from ..students.hf_vlm import HFVLMPreparer, HFVLMStudent
from ..students.loading import quiet_loading
from .batches import LazyBatches, Prompt, build_sequences, collate, in_order
from .data import Example
from .loop import Trainer, training_accelerator
from .run import (
    LORA_TARGETS,
    TrainOptions,
    cached_teacher_logits,
    load_run_data,
    training_sequences,
    without_teacher,
    write_summary,
)

#: The language model's projections only: the vision tower has modules of the same names.
LANGUAGE_LORA_TARGETS = rf"^(?!.*visual).*\.({'|'.join(LORA_TARGETS)})$"
#: What the base model's forward takes from a training batch.
_MODEL_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids", "token_type_ids")


class HFPrompts:
    """The two prompts of a post, tokenized by the scoring preparer.

    Every image is resized to the same square before tokenization, so the number of image tokens
    does not depend on the image: a blank square of that size gives the same ids as the real one,
    which is only decoded when its batch is built.
    """

    def __init__(self, preparer: HFVLMPreparer, use_images: bool) -> None:
        self.preparer, self.use_images = preparer, use_images
        self.tokenizer = preparer.processor.tokenizer
        self.image_token_id = getattr(preparer.processor, "image_token_id", None)
        self._blank = Image.new("RGB", (preparer.image_size, preparer.image_size))
        self._last: tuple[Example, Any] | None = None  # both prompts come from one `prepare` call

    def prompt(self, example: Example, reasoning: bool) -> Prompt:
        if self._last is None or self._last[0] is not example:
            image = self._blank if (self.use_images and example.image is not None) else None
            self._last = (example, self.preparer.prepare(Post(example.text, example.aspect, image)))
        row = self._last[1].inputs["explain" if reasoning else "classify"]
        ids = row["input_ids"].tolist()
        extra = {key: value.tolist() for key, value in row.items() if key != "input_ids"}
        return Prompt(ids, [i == self.image_token_id for i in ids], extra)


class HFImages:
    """The image tensors of a batch (pixel values, grid sizes), made by the scoring preparer."""

    def __init__(self, preparer: HFVLMPreparer) -> None:
        self.preparer = preparer

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        parts = [self.preparer.prepare(Post("", None, load_pil(e.image, self.preparer.image_size))).inputs["image"] for e in examples]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]} if parts else {}


def load_pil(path: Path, size: int) -> Image.Image:
    """A training image, decoded the way scoring decodes it (its readability was checked at load)."""
    return load_image(path.name, path.parent, size).image


class HFTrainModel(nn.Module):
    """The trainer's view of an HF VLM: last hidden states and the vocabulary head."""

    def __init__(self, vlm: nn.Module) -> None:
        super().__init__()
        self.vlm = vlm

    def hidden_states(self, batch: dict[str, Any]) -> torch.Tensor:
        inputs = {key: batch[key] for key in _MODEL_KEYS if batch.get(key) is not None}
        return self.vlm.model(**inputs, use_cache=False).last_hidden_state

    def get_output_embeddings(self) -> nn.Module:
        return self.vlm.get_output_embeddings()


def train_hf(opts: TrainOptions, log: Callable[[str], None] = print) -> dict:
    """Train one Hugging Face VLM end to end; returns the run summary (also written as run.json)."""
    check_training_model(opts.model)
    data = load_run_data(opts, log)
    with training_accelerator(opts.config.bf16) as accelerator:
        started = time.perf_counter()
        student, peft_model = build_hf_model(opts)
        preparer = student.preparer()
        prompts, images = HFPrompts(preparer, opts.use_images), HFImages(preparer)
        sequences, examples = training_sequences(data, prompts, opts)
        teacher = None
        if opts.config.w_kd > 0:
            compute = lambda: assistant_logits(opts, data.distilled, accelerator.device)  # noqa: E731
            teacher = without_teacher(cached_teacher_logits(opts, data.distilled, data.out, compute, log), len(data.extra))
        pad = preparer.pad_token_id
        make_batch = lambda idx: collate(sequences, idx, examples, images, pad, teacher)  # noqa: E731
        dev_seqs = build_sequences(data.dev, prompts, 0, reasoning=False)
        dev_batches = LazyBatches(in_order(len(dev_seqs), 8), lambda idx: collate(dev_seqs, idx, data.dev, images, pad))
        save = lambda folder: save_hf(student, peft_model, folder, opts)  # noqa: E731
        model = HFTrainModel(student.model)
        trainer = Trainer(model, sequences, make_batch, dev_batches, student.label_ids, opts.config, data.out, save,
                          accelerator, log)
        state = trainer.fit()
    return write_summary(opts, data, state, started)


def check_training_model(model: str) -> None:
    """Before any work: the folder is one that `score --model` would load."""
    if is_nano_folder(model):
        raise JobError(f"--model {model} holds nano parts; train the nano family with --model nano")
    check_model(model, None)


def build_hf_model(opts: TrainOptions) -> tuple[HFVLMStudent, Any]:
    """The base model as scoring loads it, made trainable: LoRA on the LM, or the whole LM.

    With LoRA the frozen base weights load in bf16 when training in bf16 (half the memory; the
    adapter itself stays fp32 under autocast); a full fine-tune keeps fp32 master weights.
    """
    dtype = torch.bfloat16 if (opts.lora_r and opts.config.bf16) else torch.float32
    student = HFVLMStudent.from_folder(opts.model, dtype=dtype)
    vlm = student.model.requires_grad_(False)
    if opts.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                          target_modules=LANGUAGE_LORA_TARGETS)
        with quiet_loading():
            return student, get_peft_model(vlm, lora)  # LoRA layers injected into `vlm` in place
    for name, param in vlm.named_parameters():
        param.requires_grad_("visual" not in name)
    return student, None


def save_hf(student: HFVLMStudent, peft_model: Any, folder: Path, opts: TrainOptions) -> None:
    """`best/adapter` (peft, safetensors) or `best/model` (a whole model folder with its processor files)."""
    folder.mkdir(parents=True, exist_ok=True)
    if peft_model is not None:
        peft_model.save_pretrained(folder / "adapter")
        return
    target = folder / "model"
    student.model.save_pretrained(target, safe_serialization=True)
    for source in Path(opts.model).iterdir():  # tokenizer, chat template, image processor settings
        if source.is_file() and source.suffix in (".json", ".jinja", ".txt", ".model") and not (target / source.name).exists():
            shutil.copy2(source, target / source.name)


def assistant_logits(opts: TrainOptions, examples: list[Example], device: torch.device) -> torch.Tensor:
    """The frozen assistant's label logits through its own scoring path (preparer + classify).

    `classify` gives probabilities; their logs are the logits up to a per-row constant, which the
    temperature-softened softmax of the KD term does not see.
    """
    assistant = load_assistant(opts, device)
    preparer = assistant.preparer()
    rows = []
    for indices in in_order(len(examples), 8):
        posts = [_post(examples[i], opts.use_images, preparer.image_size) for i in indices]
        batch = preparer.collate([preparer.prepare(post) for post in posts], "classify")
        rows.append(assistant.classify(batch))
    probabilities = torch.from_numpy(np.concatenate(rows))
    return probabilities.clamp_min(1e-30).log()


def _post(example: Example, use_images: bool, size: int) -> Post:
    image = load_pil(example.image, size) if (use_images and example.image is not None) else None
    return Post(example.text, example.aspect, image)


def load_assistant(opts: TrainOptions, device: torch.device) -> HFVLMStudent:
    """An adapter folder on its base (--assistant-model, or the base the adapter records), or a model folder."""
    folder = Path(opts.assistant)
    if (folder / "adapter_config.json").is_file():
        base = opts.assistant_model or json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise JobError(f"assistant adapter {folder} names no base model; pass --assistant-model")
        check_model(base, str(folder))
        return HFVLMStudent.from_folder(base, adapter=folder, device=device)
    check_training_model(str(folder))
    return HFVLMStudent.from_folder(folder, device=device)
