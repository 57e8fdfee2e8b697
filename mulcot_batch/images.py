"""Safe image loading: every outcome is an `image_status`, never an exception.

Runs in DataLoader workers. A path is resolved against the image root and never opened when it
points outside it; huge files and decompression bombs are refused before decoding.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

#: nano's image tokens per post are DEFAULT_IMAGE_GRID ** 2 cells pooled from EfficientNet's 7x7 map.
DEFAULT_IMAGE_GRID = 2

DEFAULT_MAX_PIXELS = 40_000_000  # ~6300x6300; a 1 KB PNG can claim far more (decompression bomb)
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image | None
    status: str  # one of schema.IMAGE_STATUSES
    detail: str | None = None


def resolve_under(root: Path, value: str) -> Path | None:
    """The file `value` names under `root`, or None when it escapes the root (.., absolute, symlink).

    Raises ValueError, OSError or RuntimeError for names no file can have (a NUL byte, a name over
    the system's length limit, a symlink loop).
    """
    root = root.resolve()
    candidate = (root / value).resolve()
    return candidate if candidate.is_relative_to(root) else None


def load_image(
    value: str | None,
    root: Path,
    target_size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> LoadedImage:
    """Decode one post image as RGB, scaled down to about `target_size` on its short side."""
    if value is None or not value.strip():
        return LoadedImage(None, "none")
    try:
        path = resolve_under(root, value)
        if path is None:
            return LoadedImage(None, "outside_root", f"image path {value!r} is outside the image root")
        if not path.is_file():  # folders, FIFOs and devices are not image files either
            return LoadedImage(None, "missing", f"image file not found: {value}")
        size = path.stat().st_size
    except (ValueError, OSError, RuntimeError) as exc:
        return LoadedImage(None, "missing", f"no file can have this image path ({type(exc).__name__}): {value[:200]!r}")
    if size > max_bytes:
        return LoadedImage(None, "too_large", f"image file over {max_bytes} bytes: {value}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    return LoadedImage(None, "too_large", f"image of {width}x{height} pixels: {value}")
                im.draft("RGB", (target_size, target_size))  # JPEG: decode at reduced scale, much cheaper
                im.load()
                rgb = _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return LoadedImage(None, "too_large", f"image refused as a decompression bomb: {value}")
    except Exception as exc:  # PIL raises many types for corrupt, truncated or unknown files
        return LoadedImage(None, "unreadable", f"image unreadable ({type(exc).__name__}): {value}")
    return LoadedImage(rgb, "ok")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Palette, grey, 16-bit, CMYK and alpha images all become plain RGB (alpha over white)."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode.startswith("I"):
        return im.point(lambda v: v / 256).convert("L").convert("RGB") if im.mode != "I;8" else im.convert("RGB")
    return im.convert("RGB")
