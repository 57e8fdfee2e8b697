"""Attention for the embedded student: torch's SDPA, except for decoding steps on CPU.

In a decoding step each row has one query token (a few, when drafted tokens are verified or a
chain prompt resumes from a cached prefix) against its cached keys. torch's CPU flash kernel is
slow for that shape when there is a padding mask (3.0 ms per layer for 64 rows x 150 cached tokens
of SmolLM2, bf16, one thread, against 1.0 ms for two batched matmuls and a softmax), and it is a
third of a decoding step. Prompts (no cached keys before them) and blocks of more than
`MAX_EAGER_QUERIES` query tokens still go through SDPA unchanged, so the label pass is exactly the
stock computation. The decoding path is `transformers`' eager attention (scores in the model
dtype, softmax in float32) with the query heads grouped onto their key/value heads instead of
repeating keys and values.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "mulcot_sdpa"
# Speculative decoding verifies a few drafted tokens per step, and a chain prompt resumed from the
# label pass feeds its task line (~15-25 tokens) on cached keys: decoding shapes, not prompts.
# (64 rows x 21 queries x 110 keys: 21 ms of attention for the 30 layers, against 131 ms in SDPA.)
MAX_EAGER_QUERIES = 32


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The `transformers` attention-function interface: query (B, H, q, D), key/value (B, KV, T, D)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    queries = query.shape[2]
    needs_stock = query.device.type != "cpu" or dropout or kwargs.get("position_bias") is not None or kwargs.get("softcap")
    # A prompt (no cached keys before its queries) goes through SDPA, as does any query block with no
    # mask ("causal": SDPA's own causal path is right for that).
    prompt = key.shape[2] <= queries
    if needs_stock or (queries > 1 and (attention_mask is None or prompt or queries > MAX_EAGER_QUERIES)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    # (B, KV, heads per KV x q, D): the query heads that share a key/value head, against it alone
    # (a view, not a copy: broadcasting keys over the group instead would copy the whole cache).
    grouped = query.reshape(batch, kv_heads, group * queries, dim)
    scores = torch.matmul(grouped, key.transpose(-1, -2)) * (scaling if scaling is not None else dim**-0.5)
    if attention_mask is not None:
        scores = scores.view(batch, kv_heads, group, queries, -1)
        mask = attention_mask.unsqueeze(2)  # (B, 1, q, T) -> (B, 1, 1, q, T)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype).view(batch, kv_heads, group * queries, -1)
    out = torch.matmul(probs, value).view(batch, kv_heads, group, queries, dim)
    return out.permute(0, 3, 1, 2, 4).reshape(batch, queries, heads, dim), None


def install(model: Any) -> bool:
    """Make `model` (a transformers decoder-only LM) use this attention; False where it cannot."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.config._attn_implementation = NAME
    return True
