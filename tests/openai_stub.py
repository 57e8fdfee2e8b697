"""A small OpenAI-compatible chat-completions server on loopback, for the teacher tests.

It answers each post with the chain it was given for that post's text (its Prediction swapped for
the hint's label when the request carries one), and misbehaves on purpose when told: a script of
faults for the next requests (401, 429, 500, a slow answer, a non-JSON body, JSON without choices, an
empty message), posts whose first answer has the wrong label, posts it always gets wrong, or
every request failing. It records every request body and Authorization header it received.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HINT_RE = re.compile(r"the correct sentiment label is (\w+)")
OTHER = {"positive": "negative", "neutral": "positive", "negative": "neutral"}


def set_prediction(chain: str, label: str) -> str:
    head, _, _ = chain.rpartition('"Prediction":')
    return f'{head}"Prediction": {label}'


class StubTeacher:
    """Start with `start()`, stop with `stop()`; `url` is the base URL to pass as --api-base."""

    def __init__(self, chains: dict[tuple[str, str | None], str], slow_seconds: float = 1.0) -> None:
        # (text, aspect) -> chain; one tweet may appear with several aspects
        self.chains = {self.prompt_head(text, aspect): chain for (text, aspect), chain in chains.items()}
        self.faults: deque[str] = deque()
        self.wrong_first: set[str] = set()
        self.always_wrong: set[str] = set()
        self.always_fail: set[str] = set()  # post texts answered 500 every time
        self.down = False
        self.slow_seconds = slow_seconds
        self.bodies: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "StubTeacher":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def requests(self) -> int:
        with self.lock:
            return len(self.bodies)

    @staticmethod
    def prompt_head(text: str, aspect: str | None) -> str:
        return f"Text: {text}" + (f"\nAspect: {aspect}" if aspect else "")

    def post_head(self, text_part: str) -> str:
        """Which known post the user message is about (texts may hold newlines themselves)."""
        known = [h for h in self.chains if text_part == h or text_part.startswith(f"{h}\n")]
        return max(known, key=len) if known else text_part

    def answer(self, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) for one request, faults first."""
        with self.lock:
            fault = self.faults.popleft() if self.faults else None
        text_part = next(p["text"] for p in body["messages"][1]["content"] if p["type"] == "text")
        head = self.post_head(text_part)
        post_text = head.split("\nAspect: ")[0].removeprefix("Text: ")
        if self.down or fault == "500" or post_text in self.always_fail:
            return 500, b'{"error": {"message": "internal error"}}', {}
        if fault == "401":
            return 401, b'{"error": {"message": "invalid api key"}}', {}
        if fault == "429":
            return 429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "0"}
        if fault == "slow":
            time.sleep(self.slow_seconds)
        if fault == "garbage":
            return 200, b"<html>502 Bad Gateway</html>", {}
        if fault == "no-choices":
            return 200, b'{"id": "x", "object": "chat.completion"}', {}
        hint = HINT_RE.search(text_part)
        chain = self.chains[head]
        label = hint.group(1) if hint else None
        if post_text in self.always_wrong or (post_text in self.wrong_first and not hint):
            gold = (label or chain.rpartition('"Prediction":')[2]).strip()
            chain = set_prediction(chain, OTHER[gold])
        elif label:
            chain = set_prediction(chain, label)
        content = "" if fault == "empty" else chain
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
        return 200, json.dumps(reply).encode(), {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": "not found"}', {})
                    return
                body = json.loads(raw)
                with stub.lock:
                    stub.bodies.append(body)
                    stub.authorizations.append(self.headers.get("Authorization"))
                status, payload, headers = stub.answer(body)
                try:
                    self._send(status, payload, headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the slow fault)

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        return Handler
