"""The text inside images (OCR with RapidOCR's PP-OCRv4 models), read once per image and cached.

Why: a meme, a poster or a screenshot often states in words what the post text leaves out
("FREE LOLITA", "HAPPY BIRTHDAY"), and a 2x2 grid of pooled image features cannot read. The
nano assistant may be trained with this text appended to the post (`--image-text`); the student
it distils into never needs it. OCR runs about 0.4 s an image on 2 CPU cores, so the results are
kept in a JSON file beside the run (like the image features) and saved every few hundred images,
with a progress line each time (a full T15 pass is ~20 min): an interrupted pass resumes where it
stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .errors import JobError

#: Words the recogniser is less sure of than this are dropped (they are mostly noise on photos).
MIN_CONFIDENCE = 0.6
#: At most this many characters of image text per post (~40 tokens): the post text comes first.
MAX_CHARS = 160
#: How the image text is joined to the post text in the prompt.
IMAGE_TEXT_MARK = "\nText in the image: "
SAVE_EVERY = 200


def ocr_engine() -> Callable[[str], str]:
    """A function from an image file to the text read in it; needs the `ocr` extra installed."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise JobError("reading text in images needs rapidocr: pip install 'rapidocr-onnxruntime==1.4.4'") from exc
    engine = RapidOCR()

    def read(path: str) -> str:
        found, _ = engine(path)
        words = [text for _box, text, score in (found or []) if float(score) >= MIN_CONFIDENCE]
        return " ".join(words)[:MAX_CHARS].strip()

    return read


class ImageTextCache:
    """Image file -> the text read in it ("" when none), stored as JSON at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.texts: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}

    def ensure(self, images: list[Path | None], log: Callable[[str], None] = print, read: Callable[[str], str] | None = None) -> None:
        """Read the images not cached yet; `read` defaults to the OCR engine (loaded only when needed)."""
        todo = sorted({str(p) for p in images if p is not None} - set(self.texts))
        if not todo:
            return
        read = read or ocr_engine()
        log(f"reading the text in {len(todo)} images")
        start = time.perf_counter()
        for done, name in enumerate(todo, start=1):
            self.texts[name] = read(name)
            if done % SAVE_EVERY == 0 or done == len(todo):
                self._save()
                pace = (time.perf_counter() - start) / done
                log(f"  read {done}/{len(todo)} images ({pace:.2f} s an image, about {pace * (len(todo) - done) / 60:.0f} min left)")

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.texts, ensure_ascii=False))
        tmp.replace(self.path)

    def get(self, image: Path | None) -> str:
        return "" if image is None else self.texts.get(str(image), "")


def with_image_text(examples: list, cache: ImageTextCache) -> list:
    """The same training examples, each post's text followed by the text read in its image (if any)."""
    return [replace(e, text=e.text + IMAGE_TEXT_MARK + found) if (found := cache.get(e.image)) else e for e in examples]
