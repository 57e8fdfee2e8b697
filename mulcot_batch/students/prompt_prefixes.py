"""Chain prompts that start where the label pass left off.

With a template that puts the post first and the task last, a post's label prompt and its chain
prompt share every token up to the task line: the text and the image tokens, most of the prompt.
The label pass computes the keys and values of those tokens anyway. `PromptPrefixes` keeps them,
per post, for the chain batches that follow in the same chunk, which then feed only the rest of
each prompt (the task line, ~15 tokens) on top of them. The keys and values are the same ones a
full chain prompt would compute (same tokens, same positions, causal attention), so the chains are
the same; in bf16 a different batch can round a near-tie the other way, as any batching can.

Prefixes are keyed by a hash of their token ids and image (`prefix_key`), so posts of the same
text and image under different aspects share one. They are dropped when the next chunk's label
pass starts, and all at once when `MAX_PREFIXES` are kept (a chunk is 256 posts by default); a chain
batch with a post whose prefix is not kept computes its prompts in full.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from transformers.cache_utils import Cache

from .kv_cache import GROWTH, prefix_cache

MAX_PREFIXES = 512  # ~0.4 GB of SmolLM2 prefixes in bf16


def shared_prefix_length(label_prompt: list[int], chain_prompts: list[list[int]]) -> int:
    """Tokens every chain prompt shares with the label prompt, leaving each chain prompt at least one
    token of its own (the one whose output starts the chain)."""
    shared = min(len(prompt) - 1 for prompt in chain_prompts)
    for prompt in chain_prompts:
        same = 0
        for a, b in zip(label_prompt, prompt):
            if a != b:
                break
            same += 1
        shared = min(shared, same)
    return max(shared, 0)


def prefix_key(ids: list[int], image_key: str | None) -> str:
    """Identity of a prompt prefix: its token ids and the image whose embeddings fill its image slots."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    digest.update((image_key or "").encode())
    return digest.hexdigest()


class PromptPrefixes:
    """Keys and values of prompt prefixes, kept by the label pass for the chain batches after it."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._chains_started = False

    def wanted(self, batch: dict[str, Any]) -> bool:
        """Whether this label batch has prefixes to keep (its posts will have chain prompts)."""
        if self._chains_started:  # a new chunk: the last one's chains are done
            self._kept.clear()
            self._chains_started = False
        return any(batch.get("prefix_lengths") or [])

    def keep(self, batch: dict[str, Any], cache: Cache) -> None:
        """Remember each row's prefix from the label pass `cache` (left-padded rows)."""
        width = batch["attention_mask"].shape[1]
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        for row, (key, shared) in enumerate(zip(batch["prefix_keys"], batch["prefix_lengths"])):
            if not shared or key in self._kept:
                continue
            if len(self._kept) >= MAX_PREFIXES:  # a chunk that asked for no chain left its prefixes here
                self._kept.clear()
            columns = slice(width - lengths[row], width - lengths[row] + shared)
            # (layers, heads, prefix tokens, dim): a copy of the prefix alone, so the batch's cache is freed.
            self._kept[key] = (
                torch.stack([layer.keys[row, :, columns] for layer in cache.layers]),
                torch.stack([layer.values[row, :, columns] for layer in cache.layers]),
            )

    def resume(self, batch: dict[str, Any]) -> tuple[Cache, torch.Tensor, torch.Tensor] | None:
        """For a chain batch whose every prefix is kept: a cache holding them, the rest of each prompt
        (ids, left-padded) and the attention mask over both. None: compute the prompts in full."""
        self._chains_started = True
        kept = [self._kept.get(key) for key in batch.get("prefix_keys") or []]
        if not kept or any(k is None for k in kept):
            return None
        ids, attention = batch["input_ids"], batch["attention_mask"]
        shared = [k.shape[2] for k, _ in kept]
        rest = [int(n) - s for n, s in zip(attention.sum(dim=1).tolist(), shared)]
        width, longest_prefix = max(rest), max(shared)
        rest_mask = (torch.arange(width, device=ids.device)[None, :] >= width - torch.tensor(rest, device=ids.device)[:, None]).long()
        if (batch["image_mask"][:, -width:] & rest_mask.bool()).any():
            return None  # image slots after the shared part: their embeddings are not in the ids
        layers, heads, _, dim = kept[0][0].shape  # (layers, heads, prefix tokens, dim) per post
        keys = kept[0][0].new_zeros((layers, len(kept), heads, longest_prefix + width + GROWTH, dim))
        values = torch.zeros_like(keys)
        prefix_mask = torch.zeros((len(kept), longest_prefix), dtype=attention.dtype, device=ids.device)
        for row, (k, v) in enumerate(kept):
            start = longest_prefix - k.shape[2]
            keys[:, row, :, start:longest_prefix] = k
            values[:, row, :, start:longest_prefix] = v
            prefix_mask[row, start:] = 1
        return prefix_cache(keys, values, longest_prefix), ids[:, -width:], torch.cat([prefix_mask, rest_mask.to(attention.dtype)], dim=1)
