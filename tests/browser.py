"""A real headless Chromium driven over the DevTools protocol on a pipe (no websocket library).

`--remote-debugging-pipe` makes Chromium read commands from fd 3 and write replies and events to
fd 4, one JSON object per message, NUL-terminated. That is all a test needs to load a page, record
console messages, exceptions and network requests, query the rendered layout and take a
full-page screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing resolves: a page that fetches anything fails visibly
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageVisit:
    """What loading a page produced."""

    console: list[dict] = field(default_factory=list)  # console API calls and log entries
    exceptions: list[dict] = field(default_factory=list)  # uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    failed: list[str] = field(default_factory=list)  # requests that did not load

    def problems(self) -> list[str]:
        found = [f"console {m.get('type') or m.get('level')}: {json.dumps(m)[:300]}" for m in self.console]
        found += [f"exception: {json.dumps(e)[:300]}" for e in self.exceptions]
        found += [f"failed request: {url}" for url in self.failed]
        found += [
            f"network request: {url}" for url in self.requests if not url.startswith(("file:", "data:", "about:"))
        ]
        return found


class Chromium:
    def __init__(self, binary: str, width: int = 1280, height: int = 2400) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:
            # In the child: fd 3 = Chromium's input, fd 4 = its output. Move both above 10 first so
            # neither dup2 can clobber the other; pass_fds=(3, 4) keeps them when the rest close.
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=wire_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session = self._attach()

    def _attach(self) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=None)["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=None)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", {}, session=session)
        return session

    def call(
        self, method: str, params: dict | None = None, session: str | None | bool = True, timeout: float = 60
    ) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        sid = self.session if session is True else session
        if sid:
            message["sessionId"] = sid
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self._next_id, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _wait(self, wanted, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if wanted(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk

    def visit(self, url: str, settle: float = 0.5) -> PageVisit:
        """Load `url`, wait for the load event and a short settle, and sort what happened."""
        start = len(self.events)
        self.call("Page.navigate", {"url": url})
        self._wait(lambda m: m.get("method") == "Page.loadEventFired", 60)
        time.sleep(settle)
        self.evaluate("1")  # drains the events that arrived while settling
        visit = PageVisit()
        for event in self.events[start:]:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                visit.console.append({"type": params.get("type"), "args": params.get("args")})
            elif method == "Log.entryAdded":
                visit.console.append(params.get("entry", {}))
            elif method == "Runtime.exceptionThrown":
                visit.exceptions.append(params.get("exceptionDetails", {}))
            elif method == "Network.requestWillBeSent":
                visit.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                visit.failed.append(params.get("errorText", "?"))
        return visit

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """The whole page, not only the window, as a PNG."""
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", {}, session=None, timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)
