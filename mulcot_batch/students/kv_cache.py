"""A key/value cache for `decoding.greedy_decode` that writes each step into room kept for it.

`transformers.DynamicCache` appends a step's keys and values with `torch.cat`: every step copies the
whole cache of every layer into a new, slightly larger allocation (which the allocator takes fresh
from the OS each time, paying page faults). At 64 rows x ~200 cached tokens of SmolLM2 on 2 CPU cores
that was a quarter of a decoding step (19 of 77 ms).

This cache keeps each layer's keys and values in a zero-filled buffer with room after the filled
columns, and writes a step into that room in place. Attention reads the whole buffer, room
included, so that the tensor it multiplies stays contiguous (CPU bf16 `bmm` on a strided view is
~4x slower than on a contiguous tensor); the room is masked out, as padding is. The buffer is copied
only when its room runs out (`GROWTH` more columns then) and when rows leave the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

GROWTH = 32  # columns of room added when a layer's buffer is full (a decoding step adds 1-13)


class PreallocatedLayer(DynamicLayer):
    """One decoder layer's cache: the first `filled` columns of its buffers are cached tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.filled = 0

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, filled: int) -> "PreallocatedLayer":
        """A layer whose first `filled` columns of `keys`/`values` (rows, heads, columns, dim; the
        rest is room) are already cached: a prompt prefix computed earlier."""
        layer = cls()
        layer.keys, layer.values, layer.filled = keys, values, filled
        layer.is_initialized = True
        return layer

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if not self.is_initialized:  # the prompt: attention reads these very tensors
            self.is_initialized = True
            self.keys = _with_room(key_states, GROWTH)
            self.values = _with_room(value_states, GROWTH)
            self.filled = new
            return key_states, value_states
        self.make_room(new)
        self.keys[..., self.filled : self.filled + new, :] = key_states
        self.values[..., self.filled : self.filled + new, :] = value_states
        self.filled += new
        return self.keys, self.values

    def make_room(self, new: int) -> None:
        if self.filled + new > self.keys.shape[-2]:
            self.keys = _with_room(self.keys[..., : self.filled, :], new + GROWTH)
            self.values = _with_room(self.values[..., : self.filled, :], new + GROWTH)

    def get_seq_length(self) -> int:
        return self.filled

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if not self.is_initialized:
            return query_length, 0
        return self.keys.shape[-2], 0

    def shrink(self, rows: torch.Tensor | None, start: int, end: int) -> None:
        """Keep `rows` (all when None) and the filled columns `[start, end)`; copies only when rows or
        leading columns go."""
        if rows is not None or start > 0:
            index = rows if rows is not None else slice(None)
            self.keys = self.keys[index, :, start:]
            self.values = self.values[index, :, start:]
        self.filled = end - start

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.shrink(indices, 0, self.filled)


def _with_room(states: torch.Tensor, room: int) -> torch.Tensor:
    """`states` (rows, heads, tokens, dim) copied into a zero-filled buffer `room` tokens longer."""
    rows, heads, tokens, dim = states.shape
    buffer = states.new_zeros((rows, heads, tokens + room, dim))
    buffer[..., :tokens, :] = states
    return buffer


def decoding_cache(config: Any) -> Cache:
    """An empty preallocated cache, or a `DynamicCache` where the model has layer kinds (sliding windows,
    ...) this one does not implement."""
    text_config = config.get_text_config(decoder=True)
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types is not None and any(kind != "full_attention" for kind in layer_types):
        return DynamicCache(config=config)
    return Cache(layers=[PreallocatedLayer() for _ in range(text_config.num_hidden_layers)])


def prefix_cache(keys: torch.Tensor, values: torch.Tensor, filled: int) -> Cache:
    """A cache that already holds prompt prefixes: `keys`/`values` are (layers, rows, heads, columns,
    dim), the first `filled` columns cached, the rest room."""
    return Cache(layers=[PreallocatedLayer.holding(k, v, filled) for k, v in zip(keys, values)])


def columns_for_step(cache: Cache, new: int) -> int:
    """Make room for `new` tokens; the number of key columns attention will read in that step (the
    width its padding mask must have)."""
    layers = cache.layers
    if not all(isinstance(layer, PreallocatedLayer) and layer.is_initialized for layer in layers):
        return cache.get_seq_length() + new
    for layer in layers:
        layer.make_room(new)
    return layers[0].keys.shape[-2]


def shrink(cache: Cache, rows: torch.Tensor | None, start: int, end: int) -> None:
    """Keep `rows` of the batch (all when None) and cached columns `[start, end)`, in every layer."""
    for layer in cache.layers:
        if isinstance(layer, PreallocatedLayer):
            layer.shrink(rows, start, end)
            continue
        if rows is not None:
            layer.batch_select_indices(rows)
        layer.keys = layer.keys[..., start:end, :]
        layer.values = layer.values[..., start:end, :]
