"""Student backends and how a `--model` value picks one."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import JobError
from .base import Post, PreparedPost, Preparer, Student

__all__ = ["Post", "PreparedPost", "Preparer", "Student", "check_model", "load_student"]

EMBEDDED = ("nano",)


def check_model(model: str, adapter: str | None) -> None:
    """Cheap validation of --model/--adapter, done before any heavy loading or work."""
    if model not in EMBEDDED and not is_nano_folder(model):
        folder = Path(model)
        if not folder.is_dir():
            raise JobError(f"unknown model {model!r}: not an embedded model ({', '.join(EMBEDDED)}) nor a local folder")
        if not (folder / "config.json").is_file():
            raise JobError(f"model folder {model} has no config.json: not a Hugging Face model folder")
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise JobError(f"adapter folder {adapter} has no adapter_config.json")
    if adapter is not None and (model == "nano" or is_nano_folder(model)):
        raise JobError("--adapter applies to Hugging Face model folders; nano ships its own trained parts")


def is_nano_folder(model: str) -> bool:
    """A folder of nano-family trained parts (train-assistant / distill output: `OUT/best`)."""
    return (Path(model) / "nano.json").is_file()


def load_student(
    model: str, adapter: str | None, dtype: torch.dtype, device: torch.device, image_size: int | None, seed: int
) -> Student:
    check_model(model, adapter)
    if model == "nano" or is_nano_folder(model):
        from .nano import NANO_DIR, NanoStudent

        folder = NANO_DIR if model == "nano" else Path(model)
        return NanoStudent.load(folder, dtype=dtype, seed=seed).to(device)
    from .hf_vlm import HFVLMStudent

    return HFVLMStudent.from_folder(model, adapter=adapter, dtype=dtype, device=device, image_size=image_size or 280)
