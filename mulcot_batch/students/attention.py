"""Attention for the embedded student: torch's SDPA, except for one-token decoding steps on CPU.

In a decoding step each row has one query token against its cached keys. torch's CPU flash kernel
is slow for that shape when there is a padding mask (3.0 ms per layer for 64 rows x 150 cached
tokens of SmolLM2, bf16, one thread, against 1.0 ms for two batched matmuls and a softmax), and it
is a third of a decoding step. Prompts (many query tokens) still go through SDPA unchanged, so the
label pass is exactly the stock computation. The decoding path is `transformers`' eager attention
(scores in the model dtype, softmax in float32) with the query heads grouped onto their key/value
heads instead of repeating keys and values.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "mulcot_sdpa"


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

    if query.shape[2] != 1 or query.device.type != "cpu" or dropout or kwargs.get("position_bias") is not None or kwargs.get("softcap"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # query heads that share a key/value head
    scores = torch.matmul(grouped, key.transpose(-1, -2)) * (scaling if scaling is not None else dim**-0.5)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value)  # (B, KV, heads per KV, D)
    return out.reshape(batch, 1, heads, dim), None


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
