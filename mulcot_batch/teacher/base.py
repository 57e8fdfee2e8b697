"""One interface for every teacher backend: ask many questions, hear each answer as it arrives.

Answers are reported one by one through a hook (from worker threads for the HTTP backend), so the
cache can keep each one the moment it is paid for, not when a whole round ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TeacherRequest:
    """One question: a post, its image file's bytes, and the gold label as a hint on a re-ask."""

    text: str
    aspect: str | None
    image: bytes | None = None
    image_mime: str | None = None
    hint: str | None = None


@dataclass(frozen=True)
class TeacherAnswer:
    """The teacher's chain, or why there is none after every retry; `cached` when no request was sent."""

    text: str | None
    error: str | None = None
    cached: bool = False


AnswerHook = Callable[[int, TeacherAnswer], None]


class Teacher(ABC):
    """A teacher MLLM; `model_id` and `prompt_fingerprint` together decide what an answer depends on."""

    #: Names the model in the cache key and the output's `teacher` column.
    model_id: str

    @abstractmethod
    def prompt_fingerprint(self, request: TeacherRequest) -> str:
        """Everything but the image that the answer depends on: the prompt text and generation settings."""

    @abstractmethod
    def ask_many(self, requests: list[TeacherRequest], on_answer: AnswerHook) -> None:
        """Ask every request; call `on_answer(index, answer)` exactly once per request, never raise for one."""
