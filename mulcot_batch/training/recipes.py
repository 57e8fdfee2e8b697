"""`train-assistant` and `distill` for the nano family: model, cached image features, teacher logits.

The assistant is the same architecture with the whole LM fine-tuned (stronger, 540 MB, kept in
its work folder); the student trains only a LoRA adapter and the projector (small enough to ship
inside the package) on the same two tasks, plus distillation from the assistant's label logits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import weights
from ..image_text import ImageTextCache, with_image_text
from ..students.base import label_token_ids
from ..students.loading import quiet_loading
from ..students.nano import (
    NanoConfig,
    NanoModel,
    NanoPreparer,
    NanoStudent,
    load_encoder,
)
from .batches import LazyBatches, NanoPrompts, build_sequences, collate, in_order
from .data import Example, ImageFeatureCache
from .loop import TrainConfig, Trainer, predict, training_accelerator
from .run import (  # noqa: F401  (TrainOptions and chain_split are imported from here too)
    LORA_TARGETS,
    TrainOptions,
    cached_teacher_logits,
    chain_split,
    load_run_data,
    training_sequences,
    without_teacher,
    write_summary,
)

# The post first and the task last: the label prompt and the chain prompt of a post then share
# everything up to the task line, so a chain prompt is computed from the label pass's cached keys
# and values instead of again from the start (and the task sits next to the answer it asks for).
COMPACT_TEMPLATE = "<|im_start|>user\nText: {text}\nImage: {image}\n{task}<|im_end|>\n<|im_start|>assistant\n"
COMPACT_TASKS = {
    "label_msc": "Sentiment of the post:",
    "label_masc": "Sentiment toward {aspect}:",
    "reason_msc": "Explain why the sentiment of the post is {label}.",
    "reason_masc": "Explain why the sentiment toward {aspect} is {label}.",
}


def train_nano(opts: TrainOptions, log: Callable[[str], None] = print) -> dict:
    """Train one nano-family model end to end; returns the run summary (also written as run.json)."""
    data = load_run_data(opts, log)
    with training_accelerator(opts.config.bf16) as accelerator:
        model, tokenizer, peft_model = build_model(opts)
        preparer = NanoPreparer(model.config, tokenizer)
        features = ImageFeatureCache.for_grid(data.out.parent, model.config.image_grid)
        started = time.perf_counter()
        wanted = [e.image for e in data.train + data.chains + data.dev] if opts.use_images else []
        features.ensure(wanted, preparer.pixels, model.image_features)
        log(f"image features ready ({len(features.features)} images, {time.perf_counter() - started:.0f} s)")

        prompts = NanoPrompts(preparer, opts.use_images)
        sequences, examples = training_sequences(data, prompts, opts)
        teacher = None
        if opts.config.w_kd > 0:
            teacher = without_teacher(_teacher_logits(opts, data.distilled, data.out, log), len(data.extra))
        pad = tokenizer.pad_token_id
        make_batch = lambda idx: collate(sequences, idx, examples, features.inputs, pad, teacher)  # noqa: E731
        dev_seqs = build_sequences(data.dev, prompts, 0, reasoning=False)
        dev_batches = LazyBatches(in_order(len(dev_seqs), 32), lambda idx: collate(dev_seqs, idx, data.dev, features.inputs, pad))

        save = lambda folder: save_parts(model, peft_model, folder, opts)  # noqa: E731
        trainer = Trainer(model, sequences, make_batch, dev_batches, label_token_ids(tokenizer), opts.config, data.out,
                          save, accelerator, log, groups=_param_groups(model, opts.config))
        state = trainer.fit()
    return write_summary(opts, data, state, started)


def _param_groups(model: NanoModel, cfg: TrainConfig) -> list[dict]:
    """The freshly initialised projector learns at its own, higher rate."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    projector = {id(p) for p in model.projector.parameters()}
    return [
        {"params": [p for p in trainable if id(p) in projector], "lr": cfg.projector_lr},
        {"params": [p for p in trainable if id(p) not in projector], "lr": cfg.lr},
    ]


def build_model(opts: TrainOptions) -> tuple[NanoModel, object, object | None]:
    """A fresh nano model: compact template, full-LM or LoRA training, projector always trained."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm_dir = weights.smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    with quiet_loading():
        lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    kind = f"LoRA r={opts.lora_r}" if opts.lora_r else "full fine-tune"
    config = NanoConfig(
        template=COMPACT_TEMPLATE,
        tasks=COMPACT_TASKS,
        trained=True,
        uses_images=opts.use_images,
        image_grid=opts.image_grid,
        reads_image_text=opts.image_text,
        notes=f"trained by mulcot-batch ({kind}, images {'on' if opts.use_images else 'off'}, "
        f"{'OCR text of the images, ' if opts.image_text else ''}"
        f"KD weight {opts.config.w_kd})",
    )
    model = NanoModel(config, load_encoder(), lm)
    peft_model = None
    if opts.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout, target_modules=LORA_TARGETS)
        with quiet_loading():
            peft_model = get_peft_model(lm, lora)  # injects LoRA layers into `lm` in place, freezes the rest
    model.encoder.requires_grad_(False)
    model.projector.requires_grad_(True)
    return model, tokenizer, peft_model


def save_parts(model: NanoModel, peft_model, folder: Path, opts: TrainOptions) -> None:
    """The deliverable: nano.json + projector, and a LoRA adapter or the whole LM's weights."""
    folder.mkdir(parents=True, exist_ok=True)
    projector = {k: v.detach().float().contiguous() for k, v in model.projector.state_dict().items()}
    save_file(projector, folder / "projector.safetensors")
    model.config.save(folder)
    if peft_model is not None:
        peft_model.save_pretrained(folder / "adapter")
        _adapter_to_bf16(folder / "adapter" / "adapter_model.safetensors")
        _name_base_portably(folder / "adapter" / "adapter_config.json")
    else:
        state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.lm.state_dict().items() if k != "lm_head.weight"}
        save_file(state, folder / "lm.safetensors")


def _name_base_portably(config_path: Path) -> None:
    """peft records the base model's local path (a cache folder on the training machine); the
    adapter ships to other machines, where the nano loader passes the base model itself, so name
    the weight package it comes from instead of leaking a path that exists nowhere else."""
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = f"{weights.SMOLLM2_PACKAGE}/{weights.SMOLLM2_GGUF}"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _adapter_to_bf16(path: Path) -> None:
    """Halve the shipped adapter: inference runs in bf16 anyway, and peft upcasts on load if needed."""
    tensors = load_file(path)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, path)


def _teacher_logits(opts: TrainOptions, examples: list[Example], out: Path, log) -> torch.Tensor:
    """The nano assistant's label logits for every training post, computed once and cached."""

    def compute() -> torch.Tensor:
        assistant = NanoStudent.load(Path(opts.assistant), dtype=torch.float32)
        shown = examples
        if assistant.model.config.reads_image_text:  # the assistant reads what the student is not given
            read = ImageTextCache(out.parent / "image_text.json")
            read.ensure([e.image for e in examples], log)
            shown = with_image_text(examples, read)
        preparer = assistant.preparer()
        features = ImageFeatureCache.for_grid(out.parent, assistant.model.config.image_grid)
        features.ensure([e.image for e in examples] if opts.use_images else [], preparer.pixels, assistant.model.image_features)
        seqs = build_sequences(shown, NanoPrompts(preparer, opts.use_images), 0, reasoning=False)
        pad = assistant.tokenizer.pad_token_id
        batches = LazyBatches(in_order(len(seqs), 32), lambda idx: collate(seqs, idx, shown, features.inputs, pad))
        logits, _ = predict(assistant.model, batches, assistant.label_ids, opts.config.bf16)
        return torch.from_numpy(logits)

    return cached_teacher_logits(opts, examples, out, compute, log)
