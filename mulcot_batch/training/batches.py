"""Training and evaluation batches, for every model family: prompts from the inference preparers.

The label task is the label prompt (ending in `"Prediction":`) followed by ` <label><|im_end|>`;
the reasoning task is the reasoning prompt followed by the teacher chain and `<|im_end|>`. A
family's `PromptSource` builds the prompts with the same preparer that scoring uses
(`NanoPreparer.prompt_ids`, `HFVLMPreparer.prepare`), so training sees exactly what scoring sends.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..schema import LABELS
from ..students.base import Post
from ..students.nano import NanoPreparer
from .data import Example

IGNORE = -100


@dataclass
class Prompt:
    """A tokenized prompt: ids, which positions are image tokens, and any per-token ids a processor adds."""

    ids: list[int]
    image_mask: list[bool]
    extra: dict[str, list[int]] = field(default_factory=dict)  # e.g. Qwen's mm_token_type_ids


class PromptSource(Protocol):
    """What a model family gives the sequence builder: its tokenizer and its two prompts per post."""

    tokenizer: Any

    def prompt(self, example: Example, reasoning: bool) -> Prompt: ...


@dataclass
class Sequence:
    ids: list[int]
    image_mask: list[bool]
    targets: list[int]  # IGNORE on the prompt
    label_pos: int  # position whose next-token logits hold the label (label task); -1 otherwise
    example: int  # index into the example list
    task: str
    extra: dict[str, list[int]] = field(default_factory=dict)


class NanoPrompts:
    """The nano family's prompts; chain prompts name the gold label (the chain explains it)."""

    def __init__(self, preparer: NanoPreparer, use_images: bool) -> None:
        self.preparer, self.use_images, self.tokenizer = preparer, use_images, preparer.tokenizer

    def prompt(self, example: Example, reasoning: bool) -> Prompt:
        post = Post(example.text, example.aspect, _marker if (self.use_images and example.image is not None) else None)
        ids, mask = self.preparer.prompt_ids(post, reasoning=reasoning, label=example.label if reasoning else None)
        return Prompt(ids, mask)


def build_sequences(
    examples: list[Example], prompts: PromptSource, max_chain_tokens: int, reasoning: bool = True
) -> list[Sequence]:
    """One label sequence per example, plus one reasoning sequence per example with a chain."""
    tok = prompts.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    sequences = []
    for index, ex in enumerate(examples):
        answer = [tok.encode(" " + ex.label, add_special_tokens=False)[0], end]
        sequences.append(_sequence(prompts.prompt(ex, reasoning=False), answer, index, "label"))
        if reasoning and ex.chain:
            chain = tok.encode(ex.chain, add_special_tokens=False)[:max_chain_tokens] + [end]
            sequences.append(_sequence(prompts.prompt(ex, reasoning=True), chain, index, "reason"))
    return sequences


def _sequence(prompt: Prompt, answer: list[int], example: int, task: str) -> Sequence:
    n, k = len(prompt.ids), len(answer)
    label_pos = n - 1 if task == "label" else -1
    extra = {key: values + [0] * k for key, values in prompt.extra.items()}
    return Sequence(prompt.ids + answer, prompt.image_mask + [False] * k, [IGNORE] * n + answer, label_pos, example, task, extra)


class _ImageMarker:
    """Stands in for a PIL image: prompt building only needs to know that an image is there."""


_marker = _ImageMarker()


def plan_batches(sequences: list[Sequence], token_budget: int, seed: int) -> list[list[int]]:
    """Length-bucketed batches under a token budget, in a seeded random order."""
    rng = random.Random(seed)
    order = sorted(range(len(sequences)), key=lambda i: (sequences[i].task, len(sequences[i].ids) + rng.random()))
    batches, current, width = [], [], 0
    for i in order:
        length = len(sequences[i].ids)
        same_task = not current or sequences[current[0]].task == sequences[i].task
        if current and (not same_task or max(width, length) * (len(current) + 1) > token_budget):
            batches.append(current)
            current, width = [], 0
        current.append(i)
        width = max(width, length)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def in_order(count: int, size: int) -> list[list[int]]:
    """Consecutive index batches of `size` (evaluation keeps the input order)."""
    return [list(range(i, min(i + size, count))) for i in range(0, count, size)]


ImageInputs = Callable[[list[Example]], dict[str, Any]]


def collate(
    sequences: list[Sequence],
    indices: list[int],
    examples: list[Example],
    image_inputs: ImageInputs,
    pad_id: int,
    teacher: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Right-padded tensors; `image_inputs` gives the image tensors of the rows with an image, in row order."""
    rows = [sequences[i] for i in indices]
    width = max(len(r.ids) for r in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    targets = torch.full((n, width), IGNORE, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    image_mask = torch.zeros((n, width), dtype=torch.bool)
    extra = {key: torch.zeros((n, width), dtype=torch.long) for key in rows[0].extra}
    for row, seq in enumerate(rows):
        k = len(seq.ids)
        ids[row, :k] = torch.tensor(seq.ids)
        targets[row, :k] = torch.tensor(seq.targets)
        attention[row, :k] = 1
        image_mask[row, :k] = torch.tensor(seq.image_mask)
        for key, values in seq.extra.items():
            extra[key][row, :k] = torch.tensor(values)
    batch = {
        "input_ids": ids,
        "attention_mask": attention,
        "image_mask": image_mask,
        "targets": targets,
        "label_pos": torch.tensor([r.label_pos for r in rows]),
        "gold": torch.tensor([LABELS.index(examples[r.example].label) for r in rows]),
        "task": rows[0].task,
        **extra,
        **image_inputs([examples[r.example] for r in rows if any(r.image_mask)]),
    }
    if teacher is not None:
        batch["teacher"] = teacher[[r.example for r in rows]]
    return batch


class LazyBatches:
    """Batches built when iterated (each evaluation), so image tensors never pile up in memory."""

    def __init__(self, plan: list[list[int]], make: Callable[[list[int]], dict[str, Any]]) -> None:
        self.plan, self.make = plan, make

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.make(indices) for indices in self.plan)

    def __len__(self) -> int:
        return len(self.plan)
