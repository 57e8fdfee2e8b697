"""Greedy decoding for the embedded student that spends compute only on rows still generating.

`transformers.generate` keeps every row of a batch in every step until the last row has finished,
so a batch of chains of 80..200 tokens pays 200 steps for every row. This loop is the same greedy
decoding (same argmax, same stop tokens, same KV cache) but removes a row from the batch, and from
the cache, the step it emits a stop token, and drops cache columns that have become padding for
every remaining row. It projects onto the vocabulary only the positions whose token is read.

With drafts (`drafting`), a step also feeds each row's guessed next tokens and keeps those the
model agrees with: a few rows left at the end of a batch, or a chain copying wording the job has
seen, then take one step for several tokens. The guesses never decide a token; columns the model
rejected stay in the cache, masked, until no row needs them. In float32 the chains are exactly
those of one token per step; in bfloat16 a wider step can round a near-tie the other way.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from transformers.cache_utils import Cache

from .drafting import DraftRow
from .kv_cache import columns_for_step, decoding_cache, shrink

DRAFT_BUDGET = 96  # drafted tokens per step across the batch: 6 per row at 16 rows, 1 at 64


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
    drafts: list[DraftRow] | None = None,
    draft_tokens: int = 0,
    cache: Cache | None = None,
) -> list[list[int]]:
    """New token ids per row (a row's stop token included), decoding left-padded prompts greedily.

    `lm` is a Hugging Face causal LM with `.model` (the decoder) and output embeddings. With `drafts`
    (one per row) and `draft_tokens` > 0, each step also feeds up to that many drafted tokens per row
    and keeps the longest prefix the model agrees with, plus the model's own next token: the same
    tokens as one at a time, in fewer, wider steps.

    With `cache` (from `kv_cache.prefix_cache`), the rows' prompts start with prefixes already cached
    there: `inputs_embeds` are only the rest of each prompt, and `attention_mask` covers the cached
    columns and then those.
    """
    rows = inputs_embeds.shape[0]
    generated: list[list[int]] = [[] for _ in range(rows)]
    if rows == 0 or max_new_tokens < 1:
        return generated
    device = inputs_embeds.device
    stop = set(int(i) for i in stop_ids)
    head = lm.get_output_embeddings()
    cache = cache if cache is not None else decoding_cache(lm.config)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]
    cache_arg = cache_keyword(lm.model)
    room = columns_for_step(cache, inputs_embeds.shape[1]) - attention_mask.shape[1]
    out = lm.model(
        inputs_embeds=inputs_embeds,
        attention_mask=torch.nn.functional.pad(attention_mask, (0, room)),
        position_ids=positions,
        use_cache=True,
        **{cache_arg: cache},
    )
    predicted = _argmax_tokens(head, out.last_hidden_state[:, -1:, :])  # (rows, 1)
    fed_drafts = torch.zeros((rows, 0), dtype=torch.long, device=device)
    draft_lengths = torch.zeros(rows, dtype=torch.long, device=device)
    last_position = positions[:, -1]  # of the newest token in the cache, per row
    alive = torch.arange(rows, device=device)
    while True:
        accepted = _accepted_drafts(predicted, fed_drafts, draft_lengths)
        if fed_drafts.shape[1]:  # the drafted columns the model did not agree with stay in the cache, masked
            width = fed_drafts.shape[1] + 1
            agreed = torch.arange(width, device=device)[None, :] <= accepted[:, None]
            attention_mask[:, -width:] = agreed.to(attention_mask.dtype)
        keep, last_tokens = [], []
        for i, (row, emitted) in enumerate(zip(alive.tolist(), predicted.tolist())):
            new = _until_finished(emitted[: int(accepted[i]) + 1], stop, max_new_tokens - len(generated[row]))
            generated[row].extend(new)
            done = len(generated[row]) >= max_new_tokens or new[-1] in stop
            if drafts is not None:
                drafts[row].extend(new)
            if not done:
                keep.append(i)
                last_tokens.append(generated[row][-1])
        if not keep:
            break
        last_position = last_position + accepted + 1  # the token fed next sits right after the agreed drafts
        index = None
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            alive, last_position, attention_mask = alive[index], last_position[index], attention_mask[index]
        start, end = _used_columns(attention_mask)
        shrink(cache, index, start, end)
        attention_mask = attention_mask[:, start:end]
        tokens = torch.tensor(last_tokens, dtype=torch.long, device=device)[:, None]
        fed_drafts, draft_lengths = _next_drafts(alive, generated, drafts, draft_tokens, max_new_tokens, device)
        tokens = torch.cat([tokens, fed_drafts], dim=1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(tokens.shape)], dim=1)
        # The cache may hand attention more columns than it has filled (room for the next steps): masked.
        room = columns_for_step(cache, tokens.shape[1]) - attention_mask.shape[1]
        out = lm.model(
            input_ids=tokens,
            attention_mask=torch.nn.functional.pad(attention_mask, (0, room)),
            position_ids=last_position[:, None] + torch.arange(tokens.shape[1], device=device),
            use_cache=True,
            **{cache_arg: cache},
        )
        predicted = _argmax_tokens(head, out.last_hidden_state)
    return generated


def _argmax_tokens(head: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Greedy token ids (rows, positions) from last hidden states (rows, positions, hidden)."""
    rows, width, size = hidden.shape
    # Contiguous 2-D input: one matmul, not a batched copy of the head; argmax in float32 is ~2x
    # faster than in bf16 on CPU and picks the same token (the cast is exact).
    return head(hidden.reshape(rows * width, size).contiguous()).float().argmax(dim=-1).view(rows, width)


def _accepted_drafts(predicted: torch.Tensor, drafts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per row, how many of its drafted tokens equal what the model predicted one position earlier."""
    if drafts.shape[1] == 0:
        return torch.zeros(predicted.shape[0], dtype=torch.long, device=predicted.device)
    columns = torch.arange(drafts.shape[1], device=drafts.device)[None, :]
    agree = (drafts == predicted[:, :-1]) & (columns < lengths[:, None])
    return agree.long().cumprod(dim=1).sum(dim=1)


def _until_finished(tokens: list[int], stop: set[int], room: int) -> list[int]:
    """`tokens` up to and including the first stop token, and no more than `room` of them."""
    for i, token in enumerate(tokens[:room]):
        if token in stop:
            return tokens[: i + 1]
    return tokens[:room]


def _next_drafts(
    alive: torch.Tensor,
    generated: list[list[int]],
    drafts: list[DraftRow] | None,
    limit: int,
    max_new_tokens: int,
    device: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drafted tokens (rows, longest draft; short drafts padded) and each row's draft length."""
    rows = alive.tolist()
    if drafts is None or limit < 1:
        return torch.zeros((len(rows), 0), dtype=torch.long, device=device), torch.zeros(len(rows), dtype=torch.long, device=device)
    # A wide step costs little more than a narrow one only while the batch is small: with many rows
    # the step is compute-bound and every drafted column is paid for in full.
    limit = min(limit, max(1, DRAFT_BUDGET // len(rows)))
    # A row never drafts past its length cap: those columns could only be thrown away.
    guesses = [drafts[row].draft(min(limit, max_new_tokens - len(generated[row]) - 1)) for row in rows]
    width = max(len(g) for g in guesses)
    padded = torch.zeros((len(rows), width), dtype=torch.long)
    for i, guess in enumerate(guesses):
        padded[i, : len(guess)] = torch.tensor(guess, dtype=torch.long)
    lengths = torch.tensor([len(g) for g in guesses], dtype=torch.long)
    return padded.to(device), lengths.to(device)


def cache_keyword(decoder: Any) -> str:
    """transformers renamed `past_key_values` to `cache` during 5.x; use whichever this version takes."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _used_columns(attention_mask: torch.Tensor) -> tuple[int, int]:
    """The span of cache columns some remaining row still attends to: columns masked in every row
    at either end are dropped.

    Leading ones are left padding of rows that have left; trailing ones are drafted tokens that no
    row kept.
    """
    masked = attention_mask == 0
    lead = int(masked.long().cumprod(dim=1).all(dim=0).sum())
    trail = int(masked.flip(1).long().cumprod(dim=1).all(dim=0).sum())
    return lead, attention_mask.shape[1] - trail
