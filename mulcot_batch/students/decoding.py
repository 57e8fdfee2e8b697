"""Greedy decoding for the embedded student that spends compute only on rows still generating.

`transformers.generate` keeps every row of a batch in every step until the last row has finished,
so a batch of chains of 80..200 tokens pays 200 steps for every row. This loop is the same greedy
decoding (same argmax, same stop tokens, same KV cache) but removes a row from the batch, and from
the cache, the step it emits a stop token, and drops cache columns that have become padding for
every remaining row. It projects onto the vocabulary only the last position of each row.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch


def stop_token_ids(lm: Any, tokenizer: Any) -> list[int]:
    """The ids `generate` stops at: the generation config's eos ids, else the tokenizer's eos."""
    eos = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    return [int(i) for i in ids]


@torch.inference_mode()
def greedy_decode(
    lm: Any,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    stop_ids: Iterable[int],
) -> list[list[int]]:
    """New token ids per row (a row's stop token included), decoding left-padded prompts greedily.

    `lm` is a Hugging Face causal LM with `.model` (the decoder) and output embeddings.
    """
    from transformers import DynamicCache

    rows = inputs_embeds.shape[0]
    generated: list[list[int]] = [[] for _ in range(rows)]
    if rows == 0 or max_new_tokens < 1:
        return generated
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=inputs_embeds.device)
    head = lm.get_output_embeddings()
    cache = DynamicCache(config=lm.config)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache_arg = _cache_keyword(lm.model)
    out = lm.model(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=positions, use_cache=True, **{cache_arg: cache}
    )
    hidden = out.last_hidden_state[:, -1, :]
    next_position = positions[:, -1] + 1
    alive = torch.arange(rows, device=inputs_embeds.device)
    for step in range(max_new_tokens):
        # Contiguous 2-D input: one matmul, not a batched copy of the head; argmax in float32 is ~2x
        # faster than in bf16 on CPU and picks the same token (the cast is exact).
        tokens = head(hidden.contiguous()).float().argmax(dim=-1)
        for row, token in zip(alive.tolist(), tokens.tolist()):
            generated[row].append(token)
        if step == max_new_tokens - 1:
            break
        finished = torch.isin(tokens, stop)
        if finished.any():
            keep = (~finished).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            alive, tokens, next_position, attention_mask = alive[keep], tokens[keep], next_position[keep], attention_mask[keep]
            cache.batch_select_indices(keep)
            attention_mask = _trim_common_padding(attention_mask, cache)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=1)
        out = lm.model(
            input_ids=tokens[:, None],
            attention_mask=attention_mask,
            position_ids=next_position[:, None],
            use_cache=True,
            **{cache_arg: cache},
        )
        hidden = out.last_hidden_state[:, -1, :]
        next_position = next_position + 1
    return generated


def _cache_keyword(decoder: Any) -> str:
    """transformers renamed `past_key_values` to `cache` during 5.x; use whichever this version takes."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _trim_common_padding(attention_mask: torch.Tensor, cache: Any) -> torch.Tensor:
    """Drop leading columns that are padding in every remaining row, from the mask and the cache."""
    lead = int((attention_mask.cumsum(dim=1) == 0).all(dim=0).sum())
    if lead == 0:
        return attention_mask
    for layer in cache.layers:
        layer.keys = layer.keys[..., lead:, :]
        layer.values = layer.values[..., lead:, :]
    return attention_mask[:, lead:]
