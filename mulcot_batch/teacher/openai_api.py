"""A teacher behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, ...).

Standard library only (urllib + threads): a few hundred small JSON requests need no HTTP stack.
Images travel inline as base64 data URLs. Each request is retried with exponential backoff and
jitter on 429, 5xx, 408, timeouts, dropped connections and malformed or empty answers (a server
under load sends all of these), honouring Retry-After. Other 4xx answers are final at once.

The API key is read from the environment variable the user names, held in memory, and sent only
in the Authorization header: it is never written to the cache, the output, the logs or an error.

When an endpoint is down, retrying every remaining post would take hours; after `give_up_after`
posts in a row failed, the rest are recorded as failed without a request (a rerun retries them).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .base import AnswerHook, Teacher, TeacherAnswer, TeacherRequest
from .prompting import instruction, user_text

RETRY_STATUSES = frozenset({408, 409, 425, 429})
MAX_ERROR_BODY = 200


class TransientError(Exception):
    """Worth another try: rate limit, server error, timeout, dropped connection, garbage answer."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FinalError(Exception):
    """Another try would get the same answer (401, 404, 400, ...)."""


@dataclass
class APISettings:
    """How to reach the endpoint and how patiently; `api_key_env` names the variable, never the key."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_tokens: int = 1024
    temperature: float = 0.0
    give_up_after: int = 20


def data_url(image: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


class OpenAITeacher(Teacher):
    """Chat completions over HTTP, `concurrency` requests in flight."""

    def __init__(self, settings: APISettings) -> None:
        self.settings = settings
        self.model_id = settings.model
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.__api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        self._lock = threading.Lock()
        self._failures_in_a_row = 0
        self._last_failure = ""
        self._random = random.Random()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAITeacher(url={self.url!r}, model={self.model_id!r})"

    def messages(self, request: TeacherRequest, image_url: str | None) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if request.image is not None:
            content.append({"type": "image_url", "image_url": {"url": image_url}})
        text = user_text(request.text, request.aspect, request.image is not None, request.hint)
        content.append({"type": "text", "text": text})
        return [{"role": "system", "content": instruction(request.aspect)}, {"role": "user", "content": content}]

    def body(self, request: TeacherRequest) -> dict[str, Any]:
        url = data_url(request.image, request.image_mime or "image/jpeg") if request.image is not None else None
        return {
            "model": self.settings.model,
            "messages": self.messages(request, url),
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }

    def prompt_fingerprint(self, request: TeacherRequest) -> str:
        """The request body with the image left out (its bytes are a separate part of the cache key)."""
        fingerprint = {
            "messages": self.messages(request, "<image>"),
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        return json.dumps(fingerprint, sort_keys=True, ensure_ascii=False)

    def ask_many(self, requests: list[TeacherRequest], on_answer: AnswerHook) -> None:
        def one(index: int) -> None:
            on_answer(index, self.ask(requests[index]))

        with ThreadPoolExecutor(max_workers=max(1, self.settings.concurrency)) as pool:
            for future in [pool.submit(one, i) for i in range(len(requests))]:
                future.result()

    def ask(self, request: TeacherRequest) -> TeacherAnswer:
        """One post: the first good answer, or the last error after every retry."""
        body = json.dumps(self.body(request)).encode()
        error = ""
        for attempt in range(self.settings.max_retries + 1):
            if self._given_up():
                return TeacherAnswer(None, self._given_up_message())
            try:
                answer = TeacherAnswer(self._post(body))
                self._record(success=True)
                return answer
            except FinalError as exc:
                error = str(exc)
                break
            except TransientError as exc:
                error = str(exc)
                if attempt < self.settings.max_retries:
                    time.sleep(self._delay(attempt, exc.retry_after))
        self._record(success=False, error=error)
        tries = attempt + 1
        return TeacherAnswer(None, f"{error} (after {tries} {'try' if tries == 1 else 'tries'})")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, so many threads do not come back at the same instant."""
        wait = min(self.settings.max_backoff, self.settings.backoff * 2**attempt)
        wait *= self._random.uniform(0.5, 1.0)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.settings.max_backoff))
        return wait

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.__api_key:
            headers["Authorization"] = f"Bearer {self.__api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (TimeoutError, socket.timeout):
            raise TransientError(f"no answer within {self.settings.timeout:g} s") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransientError(f"connection failed: {reason}") from None
        return chat_content(raw)

    def _given_up(self) -> bool:
        with self._lock:
            return self._failures_in_a_row >= self.settings.give_up_after

    def _given_up_message(self) -> str:
        return (
            f"not sent: the teacher failed {self.settings.give_up_after} posts in a row "
            f"(last: {self._last_failure}); rerun to retry"
        )

    def _record(self, success: bool, error: str = "") -> None:
        with self._lock:
            if success:
                self._failures_in_a_row = 0
            else:
                self._failures_in_a_row += 1
                self._last_failure = error


def _http_error(exc: urllib.error.HTTPError) -> Exception:
    try:
        detail = exc.read()[:MAX_ERROR_BODY].decode("utf-8", "replace").strip()
    except OSError:
        detail = ""
    message = f"HTTP {exc.code}" + (f": {detail}" if detail else "")
    if exc.code in RETRY_STATUSES or exc.code >= 500:
        return TransientError(message, _retry_after(exc.headers.get("Retry-After") if exc.headers else None))
    return FinalError(message)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # the HTTP-date form: fall back to our own backoff


def chat_content(raw: bytes) -> str:
    """The first choice's message text; anything else is a malformed answer (worth a retry)."""
    try:
        payload = json.loads(raw)
        content = payload["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise TransientError(f"malformed answer: {raw[:MAX_ERROR_BODY].decode('utf-8', 'replace')!r}") from None
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str) or not content.strip():
        raise TransientError("empty answer")
    return content.strip()
