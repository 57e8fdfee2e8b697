"""Teacher answers on disk, keyed by a hash of (model, prompt, image bytes).

A rerun after a crash, or with a higher --max-attempts, asks again only what has no answer yet:
every answer is written (temporary name, then rename) the moment it arrives. Only answers are
kept, never failures, so a rerun retries what failed. Entries hold the answer and the model name;
no request header (and so no API key) is ever written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from .base import AnswerHook, Teacher, TeacherAnswer, TeacherRequest


def cache_key(model_id: str, prompt: str, image: bytes | None) -> str:
    """sha256 over the three parts, each length-prefixed so no two different triples collide."""
    digest = hashlib.sha256()
    for part in (model_id.encode(), prompt.encode(), image or b""):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class ResponseCache:
    """One small JSON file per answer, in 256 sub-folders; safe to share between threads and runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            return json.loads(self._path(key).read_text())["response"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, or a file damaged outside our atomic writes: ask again

    def put(self, key: str, response: str, model_id: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump({"model": model_id, "response": response}, handle)
        os.replace(tmp, path)


class CacheStats:
    def __init__(self) -> None:
        self.hits = 0
        self.sent = 0


def ask_cached(
    teacher: Teacher, cache: ResponseCache | None, requests: list[TeacherRequest], on_answer: AnswerHook, stats: CacheStats
) -> None:
    """Answer from the cache where possible; ask the teacher the rest and store each answer at once.

    `on_answer` is called under a lock, so the caller's bookkeeping needs none of its own.
    """
    lock = threading.Lock()

    def report(index: int, answer: TeacherAnswer) -> None:
        with lock:
            on_answer(index, answer)

    if cache is None:
        stats.sent += len(requests)
        teacher.ask_many(requests, report)
        return
    keys = [cache_key(teacher.model_id, teacher.prompt_fingerprint(r), r.image) for r in requests]
    missing: list[int] = []
    for index, key in enumerate(keys):
        found = cache.get(key)
        if found is None:
            missing.append(index)
        else:
            stats.hits += 1
            report(index, TeacherAnswer(found, cached=True))
    stats.sent += len(missing)

    def store_then_report(position: int, answer: TeacherAnswer) -> None:
        index = missing[position]
        if answer.text:
            cache.put(keys[index], answer.text, teacher.model_id)
        report(index, answer)

    if missing:
        teacher.ask_many([requests[i] for i in missing], store_then_report)
