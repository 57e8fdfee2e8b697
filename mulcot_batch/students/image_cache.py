"""A job-level cache of image-encoder outputs, keyed by the image's pixels.

The image encoder is frozen, so the same pixels always give the same features. A post's image is
read twice per job when it is explained (label pass, then chain pass), and an image shared by
several posts (retweets with new text, posts of one campaign) more often still; with this cache
each distinct image is encoded once per job. Keys are a digest of the resized pixels computed by
the preparer in a worker, so identity does not depend on file names.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch

#: About 10 KB per image for nano's pooled features in bf16 (20 KB in float32): at most ~100 MB,
#: and memory stays flat however long the job; repeats of an image are usually close in an archive.
DEFAULT_MAX_IMAGES = 10_000


def pixel_key(pixels: torch.Tensor) -> str:
    """A digest of an image tensor's bytes and shape: equal keys mean equal encoder input."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(tuple(pixels.shape)).encode())
    digest.update(pixels.contiguous().numpy().tobytes())
    return digest.hexdigest()


class ImageFeatureCache:
    """Least-recently-used map from image key to encoder features; counts what it saved."""

    def __init__(self, max_images: int = DEFAULT_MAX_IMAGES) -> None:
        self.max_images = max_images
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.encoded = 0

    def __len__(self) -> int:
        return len(self._features)

    def features(self, keys: list[str], images: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Features for every row of `images`; only images not seen before go through `encode`."""
        missing: dict[str, int] = {}
        for row, key in enumerate(keys):
            if key not in self._features and key not in missing:
                missing[key] = row
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            fresh = dict(zip(missing, encode(images[list(missing.values())])))
            self.encoded += len(missing)
        self.hits += len(keys) - len(missing)
        rows = [fresh[key] if key in fresh else self._take(key) for key in keys]
        for key, value in fresh.items():
            self._store(key, value)
        return torch.stack(rows)

    def _take(self, key: str) -> torch.Tensor:
        self._features.move_to_end(key)
        return self._features[key]

    def _store(self, key: str, value: torch.Tensor) -> None:
        self._features[key] = value.clone()  # not a view that would keep the whole batch alive
        while len(self._features) > self.max_images:
            self._features.popitem(last=False)
