"""Training and evaluation batches for the nano family: prompts from the inference preparer.

The label task is the label prompt (ending in `"Prediction":`) followed by ` <label><|im_end|>`;
the reasoning task is the reasoning prompt followed by the teacher chain and `<|im_end|>`. Both
prompts come from `NanoPreparer.prompt_ids`, so training sees exactly what scoring will send.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from ..schema import LABELS
from ..students.base import Post
from ..students.nano import NanoPreparer
from .data import Example, ImageFeatureCache

IGNORE = -100


@dataclass
class Sequence:
    ids: list[int]
    image_mask: list[bool]
    targets: list[int]  # IGNORE on the prompt
    label_pos: int  # position whose next-token logits hold the label (label task); -1 otherwise
    example: int  # index into the example list
    task: str


def build_sequences(
    examples: list[Example], preparer: NanoPreparer, use_images: bool, max_chain_tokens: int, reasoning: bool = True
) -> list[Sequence]:
    """One label sequence per example, plus one reasoning sequence per example with a chain."""
    tok = preparer.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    sequences = []
    for index, ex in enumerate(examples):
        post = Post(ex.text, ex.aspect, _marker if (use_images and ex.image is not None) else None)
        ids, mask = preparer.prompt_ids(post, reasoning=False)
        answer = [tok.encode(" " + ex.label, add_special_tokens=False)[0], end]
        sequences.append(Sequence(ids + answer, mask + [False] * 2, [IGNORE] * len(ids) + answer, len(ids) - 1, index, "label"))
        if reasoning and ex.chain:
            ids, mask = preparer.prompt_ids(post, reasoning=True, label=ex.label)
            chain = tok.encode(ex.chain, add_special_tokens=False)[:max_chain_tokens] + [end]
            sequences.append(Sequence(ids + chain, mask + [False] * len(chain), [IGNORE] * len(ids) + chain, -1, index, "reason"))
    return sequences


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


def collate(
    sequences: list[Sequence],
    indices: list[int],
    examples: list[Example],
    features: ImageFeatureCache,
    pad_id: int,
    teacher: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Right-padded tensors; image features in row order for the image-token positions."""
    rows = [sequences[i] for i in indices]
    width = max(len(r.ids) for r in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    targets = torch.full((n, width), IGNORE, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    image_mask = torch.zeros((n, width), dtype=torch.bool)
    feats = []
    for row, seq in enumerate(rows):
        k = len(seq.ids)
        ids[row, :k] = torch.tensor(seq.ids)
        targets[row, :k] = torch.tensor(seq.targets)
        attention[row, :k] = 1
        image_mask[row, :k] = torch.tensor(seq.image_mask)
        if any(seq.image_mask):
            feats.append(features.get(examples[seq.example].image))
    batch = {
        "input_ids": ids,
        "attention_mask": attention,
        "image_mask": image_mask,
        "image_features": torch.stack(feats) if feats else None,
        "targets": targets,
        "label_pos": torch.tensor([r.label_pos for r in rows]),
        "gold": torch.tensor([LABELS.index(examples[r.example].label) for r in rows]),
        "task": rows[0].task,
    }
    if teacher is not None:
        batch["teacher"] = teacher[[r.example for r in rows]]
    return batch
