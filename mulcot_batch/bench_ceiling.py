"""The benchmark's ceiling: what the hardware allows, from measured matmul speed and counted FLOPs.

Peak FLOP/s is measured, not looked up: square matmuls in the model's dtype on the model's device
with the thread count of the run. FLOPs are counted by `torch.utils.flop_counter` on the real model
(matmuls, convolutions of the image encoder, attention), one post at a time, for a few posts per
kind (with / without image) at the shortest, median and longest prompt, and fitted in the prompt
length; elementwise work (norms, activations) is not counted, so the ceiling is an upper bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .schema import LABELS
from .students.base import PreparedPost, Student


def peak_matmul_flops(dtype: torch.dtype, device: torch.device, seconds: float = 0.6) -> float:
    """Best FLOP/s of square matmuls (1024 and 2048) in `dtype`; what an ideal model pass would reach."""
    best = 0.0
    for n in (1024, 2048):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.matmul(a, b)
        _sync(device)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or calls < 2:
            torch.matmul(a, b)
            calls += 1
        _sync(device)
        best = max(best, 2 * n**3 * calls / (time.perf_counter() - start))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class FlopModel:
    """FLOPs of the work of one post, as functions of its prompt lengths (fitted from counted posts)."""

    label: dict[bool, np.ndarray]  # has_image -> polynomial in the label prompt length
    chain_prompt: dict[bool, np.ndarray]  # has_image -> polynomial in the chain prompt length
    per_token: float  # one decoding step of one row

    def label_flops(self, has_image: bool, length: int) -> float:
        return float(np.polyval(self._fit(self.label, has_image), length))

    def chain_flops(self, has_image: bool, length: int, tokens: int) -> float:
        """The chain prompt (image features reused from the label pass) plus one step per further token."""
        prompt = float(np.polyval(self._fit(self.chain_prompt, has_image), length))
        return prompt + max(0, tokens - 1) * self.per_token

    @staticmethod
    def _fit(fits: dict[bool, np.ndarray], has_image: bool) -> np.ndarray:
        return fits[has_image] if has_image in fits else fits[not has_image]


def count_flops(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def prompt_length(student: Student, post: PreparedPost, task: str, label: str = LABELS[0]) -> int:
    """Tokens of one post's prompt (a chain prompt that names a label is measured with `label`)."""
    return int(student.preparer().collate([post], task, [label])["input_ids"].shape[1])


def fit_flop_model(student: Student, posts: list[PreparedPost], has_image: list[bool]) -> FlopModel:
    """Count FLOPs of classify / chain prefill / one decoding step on up to 3 posts of each kind."""
    preparer = student.preparer()
    label: dict[bool, np.ndarray] = {}
    chain: dict[bool, np.ndarray] = {}
    steps: list[float] = []
    for kind in (True, False):
        members = [i for i, img in enumerate(has_image) if img == kind]
        if not members:
            continue
        xs_l, ys_l, xs_c, ys_c = [], [], [], []
        for i in _spread(members, [prompt_length(student, posts[i], "classify") for i in members]):
            student.use_image_cache(True)  # fresh: the label pass encodes the image, the chain pass reuses it
            one = [posts[i]]
            ys_l.append(count_flops(lambda one=one: student.classify(preparer.collate(one, "classify"))))
            first = count_flops(lambda one=one: student.explain(preparer.collate(one, "explain", LABELS[:1]), 1))
            second = count_flops(lambda one=one: student.explain(preparer.collate(one, "explain", LABELS[:1]), 2))
            xs_l.append(prompt_length(student, posts[i], "classify"))
            xs_c.append(prompt_length(student, posts[i], "explain"))
            ys_c.append(first)
            steps.append(max(0.0, second - first))
        label[kind] = np.polyfit(xs_l, ys_l, min(2, len(set(xs_l)) - 1))
        chain[kind] = np.polyfit(xs_c, ys_c, min(2, len(set(xs_c)) - 1))
    return FlopModel(label=label, chain_prompt=chain, per_token=float(np.mean(steps)) if steps else 0.0)


def _spread(members: list[int], lengths: list[int]) -> list[int]:
    """The shortest, median and longest prompt of a group (fewer when the group is smaller)."""
    order = [m for _, m in sorted(zip(lengths, members))]
    picks = {order[0], order[len(order) // 2], order[-1]}
    return sorted(picks)
