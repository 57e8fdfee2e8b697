"""The one interface every student backend implements.

A backend has two halves so that CPU work never blocks the model:

- a `Preparer` (light, picklable, runs in DataLoader worker processes) turns one post into model
  inputs: prompt building, tokenization, image resizing;
- a `Student` (heavy, lives on the accelerator) runs `classify` (one forward pass, class
  probabilities from the label-token logits) and `explain` (batched greedy generation of the
  reasoning chain).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from ..schema import LABELS


Task = Literal["classify", "explain"]


@dataclass
class Post:
    """One post as the preparer sees it: the image is already decoded, RGB, or None."""

    text: str
    aspect: str | None
    image: Image.Image | None


@dataclass
class PreparedPost:
    """Model inputs for one post; `length` drives length-sorted batching."""

    inputs: dict[str, Any]
    length: int


class Preparer(ABC):
    """Builds model inputs on CPU worker processes; must be picklable."""

    #: Whether posts need their reasoning prompts too; a `--rationales none` job sets it False so
    #: that no CPU time goes to prompts it will never run (backends may ignore it).
    chains: bool = True

    @abstractmethod
    def prepare(self, post: Post) -> PreparedPost:
        """Both prompts (label and reasoning) for one post, tokenized."""

    @abstractmethod
    def collate(self, posts: list[PreparedPost], task: Task, labels: list[str] | None = None) -> dict[str, Any]:
        """Stack posts into one batch for `task` (left padding, so generation continues every row).

        `labels` are the one-pass labels of the rows, for backends whose chains explain a given
        label; the others ignore them.
        """


class Student(ABC):
    """A sentiment student: label probabilities in one pass, chains on demand."""

    #: Human-readable identity written into every output row and the logs.
    name: str
    #: Which weights this run uses, said plainly (trained parts, base weights, adapter).
    weights: str

    @abstractmethod
    def preparer(self) -> Preparer:
        """The picklable CPU half of this backend."""

    @abstractmethod
    def classify(self, batch: dict[str, Any]) -> np.ndarray:
        """Probabilities, shape (n, 3), columns in `schema.LABELS` order, rows summing to 1."""

    @abstractmethod
    def explain(self, batch: dict[str, Any], max_new_tokens: int) -> list[str]:
        """Greedy reasoning chains, one decoded string per row, prompt excluded."""

    def to(self, device: Any) -> "Student":
        """Move the model to a device; backends override when they hold modules."""
        return self

    @property
    def counters(self) -> Counter:
        """Work actually done (posts classified and explained, images encoded, tokens generated).

        The benchmark reads it to report tokens/s and to show what a switch saved.
        """
        if "_counters" not in self.__dict__:
            self._counters = Counter()
        return self._counters

    def use_image_cache(self, enabled: bool) -> bool:
        """Encode each distinct image once per job; returns whether this backend can (default: no)."""
        return False

    def use_drafts(self, enabled: bool) -> bool:
        """Speculative chain decoding from guessed tokens (same chains, fewer steps); returns whether
        this backend can (default: no)."""
        return False

    def plain_generate(self, batch: dict[str, Any], max_new_tokens: int) -> list[str]:
        """The plain way, for the benchmark's baseline: one stock `generate` call, nothing reused.

        Backends whose `explain` is already a stock `generate` call use it as it is.
        """
        return self.explain(batch, max_new_tokens)


def label_token_ids(tokenizer: Any) -> list[int]:
    """First token of " positive", " neutral", " negative" (they follow `"Prediction":`), in LABELS order."""
    ids = []
    for label in LABELS:
        tokens = tokenizer.encode(" " + label, add_special_tokens=False)
        if not tokens:
            raise ValueError(f"the tokenizer encodes {label!r} to no token")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        pieces = {label: tokenizer.convert_ids_to_tokens(i) for label, i in zip(LABELS, ids)}
        raise ValueError(
            f"the labels share a first token ({pieces}); their probabilities cannot be read from one position"
        )
    return ids
