"""A local Hugging Face VLM as teacher, through the same backend code as `score`.

The model, its processor and its batched greedy `explain` are `students.hf_vlm.HFVLMStudent`'s;
only the chat differs: the teacher instruction as system message, and the gold-label hint in the
user message on a re-ask. `TeacherPreparer` builds that chat on top of `HFVLMPreparer`, so special
token strings typed in a post are neutralised and long texts clipped exactly as when scoring.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..students.base import Post
from ..students.hf_vlm import MAX_ASPECT_CHARS, HFVLMPreparer, HFVLMStudent, _clip
from .base import AnswerHook, Teacher, TeacherAnswer, TeacherRequest
from .prompting import NO_IMAGE, hint_text, instruction


@dataclass
class HintedPost(Post):
    """A post plus the gold label to hint at (None on a first ask)."""

    hint: str | None = None


class TeacherPreparer(HFVLMPreparer):
    """HFVLMPreparer's chat with the teacher's instruction and, on a re-ask, the hint."""

    def messages(self, post: Post, reasoning: bool) -> list[dict[str, Any]]:
        chat = super().messages(post, reasoning=True)
        aspect = self._neutralise(_clip(post.aspect, MAX_ASPECT_CHARS)) if post.aspect else None
        chat[0]["content"] = [{"type": "text", "text": instruction(aspect)}]
        extra = [] if post.image is not None else [NO_IMAGE]
        hint = getattr(post, "hint", None)
        if hint:
            extra.append(hint_text(hint))
        if extra:
            chat[1]["content"][-1]["text"] += "\n" + "\n".join(extra)
        return chat


class HFTeacher(Teacher):
    """Batched greedy chains from a local image-text-to-text model folder."""

    def __init__(self, student: HFVLMStudent, model_id: str, batch_size: int = 4, max_new_tokens: int = 512) -> None:
        self.student = student
        self.model_id = model_id
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.preparer = TeacherPreparer(student.processor, image_size=student.preparer().image_size)

    @classmethod
    def from_folder(cls, path: str, adapter: str | None, dtype: Any, device: Any, **kwargs: Any) -> "HFTeacher":
        student = HFVLMStudent.from_folder(path, adapter=adapter, dtype=dtype, device=device)
        model_id = f"hf:{Path(path).resolve()}" + (f"+{Path(adapter).resolve()}" if adapter else "")
        return cls(student, model_id, **kwargs)

    def _post(self, request: TeacherRequest) -> HintedPost:
        image = None
        if request.image is not None:
            with Image.open(io.BytesIO(request.image)) as opened:
                image = opened.convert("RGB")
        return HintedPost(request.text, request.aspect, image, hint=request.hint)

    def prompt_fingerprint(self, request: TeacherRequest) -> str:
        """The exact prompt text the model reads, and the generation length."""
        post = self._post(request)
        return f"{self.preparer.prompt(post, 'explain')}\n<max_new_tokens={self.max_new_tokens}>"

    def ask_many(self, requests: list[TeacherRequest], on_answer: AnswerHook) -> None:
        """Length-sorted batches through `HFVLMStudent.explain`; a failing batch fails its posts only."""
        prepared = [self.preparer.prepare(self._post(r)) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: -prepared[i].length)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            try:
                texts = self.student.explain(self.preparer.collate([prepared[i] for i in batch], "explain"), self.max_new_tokens)
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory on a long batch
                for i in batch:
                    on_answer(i, TeacherAnswer(None, f"generation failed: {type(exc).__name__}: {exc}"[:300]))
                continue
            for i, text in zip(batch, texts):
                on_answer(i, TeacherAnswer(text) if text.strip() else TeacherAnswer(None, "empty answer"))
