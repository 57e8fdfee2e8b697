"""The decoding cache: same attention results as transformers' DynamicCache, without a copy per step."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from mulcot_batch.students import attention
from mulcot_batch.students.decoding import cache_keyword
from mulcot_batch.students.kv_cache import GROWTH, columns_for_step, decoding_cache, shrink

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).eval()
    attention.install(model)
    return model


def _step(model, cache, tokens, mask, positions, pad_to_cache: bool):
    """One decoding step; the preallocated cache gets a mask padded to the columns it hands attention."""
    mask = torch.cat([mask, mask.new_ones(tokens.shape)], dim=1)
    wide = mask
    if pad_to_cache:
        wide = torch.nn.functional.pad(mask, (0, columns_for_step(cache, tokens.shape[1]) - mask.shape[1]))
    out = model.model(input_ids=tokens, attention_mask=wide, position_ids=positions, use_cache=True, **{cache_keyword(model.model): cache})
    return out.last_hidden_state, mask


@torch.inference_mode()
def test_steps_with_dropped_rows_and_trimmed_columns_match_the_dynamic_cache(tiny_llama):
    prompt = torch.randint(3, 97, (3, 5))
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    hidden = {}
    for name, cache in (("dynamic", DynamicCache(config=tiny_llama.config)), ("preallocated", decoding_cache(tiny_llama.config))):
        out = tiny_llama.model(input_ids=prompt, attention_mask=prompt_mask, position_ids=positions, use_cache=True, **{cache_keyword(tiny_llama.model): cache})
        states, mask, last = [out.last_hidden_state[:, -1]], prompt_mask, positions[:, -1]
        tokens_of = torch.Generator().manual_seed(1)  # the same tokens for both caches
        for step in range(GROWTH + 4):  # past the first room, so the buffer grows once
            width = 1 + step % 3  # a token and up to 2 drafted ones
            tokens = torch.randint(3, 97, (mask.shape[0], width), generator=tokens_of)
            state, mask = _step(tiny_llama, cache, tokens, mask, last[:, None] + 1 + torch.arange(width), name == "preallocated")
            states.append(state[:, -1])
            last = last + width
            if step == 5:  # the long row (no padding) leaves: its neighbours' leading padding goes with it
                rows = torch.tensor([0, 2])
                mask, last = mask[rows], last[rows]
                shrink(cache, rows, 1, mask.shape[1])
                mask = mask[:, 1:]
                states.append(None)
        hidden[name] = states
    for dynamic, preallocated in zip(hidden["dynamic"], hidden["preallocated"]):
        if dynamic is not None:
            torch.testing.assert_close(preallocated, dynamic)


@torch.inference_mode()
def test_a_step_with_room_writes_in_place_and_trimming_drafts_copies_nothing(tiny_llama):
    cache = decoding_cache(tiny_llama.config)
    prompt = torch.randint(3, 97, (2, 4))
    mask = torch.ones_like(prompt)
    tiny_llama.model(input_ids=prompt, attention_mask=mask, position_ids=torch.arange(4).expand(2, 4), use_cache=True, **{cache_keyword(tiny_llama.model): cache})
    layer = cache.layers[0]
    buffer = layer.keys.data_ptr()
    _, mask = _step(tiny_llama, cache, torch.randint(3, 97, (2, 3)), mask, torch.arange(4, 7).expand(2, 3), True)
    assert layer.get_seq_length() == 7 and layer.keys.data_ptr() == buffer
    shrink(cache, None, 0, 5)  # two drafted tokens no row kept
    assert layer.get_seq_length() == 5 and layer.keys.data_ptr() == buffer
