"""`report.html` in a real headless Chromium: loads offline with no console errors, and the
rendered charts show the label colours and the sentiment line where the page puts them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from mulcot_batch.reporting.svg import COLOURS, LINE

from .browser import Chromium, find_chromium
from .conftest import run_cli
from .scored_parts import scored_rows, write_scored

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium); .ci/run installs it"
)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("page")
    scored = write_scored(root / "scored", scored_rows(400))
    out = root / "report"
    result = run_cli("report", scored, "--out", out, "--by", "aspect", "--by", "hashtag", "--time-col", "created_at",
                     "--min-posts", "30", "--no-summary")  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / "report.html"


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium not installed")
    chromium = Chromium(CHROMIUM)
    yield chromium
    chromium.close()


def test_page_is_self_contained_and_escapes_post_text(page: Path):
    html = page.read_text()
    assert not re.search(r"(src|href)\s*=|<script|@import|url\(|https?://", html, re.IGNORECASE)
    assert "&lt;script&gt;alert(&#x27;boom&#x27;)&lt;/script&gt;" in html  # a post's text, shown, not run
    for heading in ("How the posts are labelled", "Net sentiment over time", "Top groups", "How sure the model is",
                    "Text versus image", "Example posts", "Review queue", "What the numbers mean"):  # fmt: skip
        assert heading in html, heading


@needs_chromium
def test_page_loads_with_no_console_errors_and_shows_the_charts(page: Path, browser: Chromium, tmp_path: Path):
    visit = browser.visit(page.as_uri())
    assert visit.problems() == []
    assert browser.evaluate("document.title").startswith("Sentiment report: 400 posts")
    assert browser.evaluate("document.querySelectorAll('script').length") == 0  # the post with <script> stays text
    boxes = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('[data-chart]')].map(f => {"
        " const r = f.getBoundingClientRect(); return [f.dataset.chart, [r.left, r.top + scrollY, r.width, r.height]]; }))"
    )
    assert set(boxes) == {"labels", "over-time", "confidence"}
    shot = Image.open(browser.screenshot(tmp_path / "report.png")).convert("RGB")
    ratio = shot.width / browser.evaluate("document.documentElement.clientWidth")  # device pixels per CSS pixel
    regions = {
        name: shot.crop(tuple(round(v * ratio) for v in (x, y, x + w, y + h))) for name, (x, y, w, h) in boxes.items()
    }
    for name, region in regions.items():
        assert region.width > 500 and region.height > 100, (name, region.size)
    for label, colour in COLOURS.items():
        assert pixels_near(regions["labels"], colour) > 2000, f"{label} bar missing from the label chart"
        assert pixels_near(regions["confidence"], colour) > 1000, f"{label} missing from the confidence histogram"
    assert pixels_near(regions["over-time"], LINE) > 500, "net sentiment line missing"
    assert pixels_near(regions["over-time"], COLOURS["positive"]) == 0  # the line chart is not the bar chart
    text = browser.evaluate("document.body.innerText")
    assert "Most confident" in text and "Text analysis" in text and "game" in text


@needs_chromium
def test_the_check_catches_a_broken_page(browser: Chromium, tmp_path: Path):
    """Guards the test above: a script error and a network fetch do show up as problems."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<html><body><img src="https://example.invalid/x.png"><script>console.error("bad"); nope();</script></body></html>'
    )
    problems = browser.visit(broken.as_uri()).problems()
    assert any("exception" in p for p in problems) and any("console error" in p for p in problems)
    assert any("example.invalid" in p for p in problems)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def pixels_near(image: Image.Image, colour: str, tolerance: int = 12) -> int:
    """How many pixels are within `tolerance` (per channel) of `colour`."""
    r0, g0, b0 = hex_rgb(colour)
    return sum(
        count
        for count, (r, g, b) in image.getcolors(maxcolors=image.width * image.height)
        if abs(r - r0) <= tolerance and abs(g - g0) <= tolerance and abs(b - b0) <= tolerance
    )
