"""The accelerate set-up every stage shares: one fresh Accelerator per stage, and where bf16 pays.

A job file runs its stages in one process, and accelerate keeps one precision per process: a second
`Accelerator` with another precision raises. Each stage therefore clears the shared state before
making its own (the process group of `accelerate launch` is kept).

bf16 is the fast path on GPUs that support it and on x86 CPUs with AVX-512, where torch has bf16
kernels (nano scored 2.5x faster than in fp32). A CPU with AVX2 alone, like most laptops, has none:
there bf16 ran nano 3.3x slower (labels) to 4.3x slower (chains) than fp32.
"""

from __future__ import annotations

from typing import Any

import torch


def bf16_is_fast(device: torch.device) -> bool:
    """True on CUDA GPUs with bf16 and on CPUs with AVX-512 (what torch's bf16 CPU kernels need)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stage_accelerator(mixed_precision: str, **kwargs: Any) -> Any:
    """A fresh `accelerate.Accelerator` for one stage, whatever precision an earlier stage used."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    # cpu=True on a machine without CUDA is what lets accelerate join CPU ranks (gloo) at all.
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), **kwargs)
