"""Student backends and how a `--model` value picks one."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import JobError
from .base import Post, PreparedPost, Preparer, Student

__all__ = ["Post", "PreparedPost", "Preparer", "Student", "check_model", "load_student"]

EMBEDDED = ("nano",)


#: Files that carry Hugging Face settings and may name custom code (`auto_map`).
_SETTINGS_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
#: Weight formats that are unpickled when loaded, so a crafted file can run code.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_model(model: str, adapter: str | None, trust_remote_code: bool = False) -> None:
    """Cheap validation of --model/--adapter, done before any heavy loading or work.

    Weights must be safetensors (loading them runs no code), and a folder that asks to run its own
    Python code (`auto_map`) needs --trust-remote-code.
    """
    if model not in EMBEDDED and not is_nano_folder(model):
        folder = Path(model)
        if not folder.is_dir():
            raise JobError(f"unknown model {model!r}: not an embedded model ({', '.join(EMBEDDED)}) nor a local folder")
        if not (folder / "config.json").is_file():
            raise JobError(f"model folder {model} has no config.json: not a Hugging Face model folder")
        custom = [name for name in _SETTINGS_FILES if "auto_map" in _settings(folder / name)]
        if custom and not trust_remote_code:
            raise JobError(
                f"model folder {model} asks to run its own Python code (auto_map in {', '.join(custom)}); "
                "pass --trust-remote-code only if you trust where it came from"
            )
        _check_safetensors(folder, "model")
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise JobError(f"adapter folder {adapter} has no adapter_config.json")
    if adapter is not None and (model == "nano" or is_nano_folder(model)):
        raise JobError("--adapter applies to Hugging Face model folders; nano ships its own trained parts")
    if adapter is not None:
        _check_safetensors(Path(adapter), "adapter")


def _settings(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JobError(f"{path} is not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def _check_safetensors(folder: Path, what: str) -> None:
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise JobError(
            f"{what} folder {folder} holds only pickle weights ({', '.join(pickles)}), which can run code when "
            "loaded; convert them to safetensors first"
        )
    raise JobError(f"{what} folder {folder} holds no .safetensors weights")


def is_nano_folder(model: str) -> bool:
    """A folder of nano-family trained parts (train-assistant / distill output: `OUT/best`)."""
    return (Path(model) / "nano.json").is_file()


def load_student(
    model: str,
    adapter: str | None,
    dtype: torch.dtype,
    device: torch.device,
    image_size: int | None,
    seed: int,
    trust_remote_code: bool = False,
) -> Student:
    check_model(model, adapter, trust_remote_code)
    if model == "nano" or is_nano_folder(model):
        from .nano import NANO_DIR, NanoConfig, NanoStudent

        folder = NANO_DIR if model == "nano" else Path(model)
        if NanoConfig.load(folder).reads_image_text:
            raise JobError(f"{folder} was trained on the OCR text of its images (a distill assistant); score cannot supply that text")
        return NanoStudent.load(folder, dtype=dtype, seed=seed).to(device)
    from .hf_vlm import HFVLMStudent

    return HFVLMStudent.from_folder(
        model, adapter=adapter, dtype=dtype, device=device, image_size=image_size or 280, trust_remote_code=trust_remote_code
    )
