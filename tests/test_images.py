from pathlib import Path

import pytest

from mulcot_batch.images import load_image


@pytest.fixture
def root(hostile_dump: Path) -> Path:
    return hostile_dump.parent


@pytest.mark.parametrize(
    "value, status",
    [
        ("images/ok.jpg", "ok"),
        (None, "none"),
        ("  ", "none"),
        ("images/nowhere.jpg", "missing"),
        ("images/truncated.jpg", "unreadable"),
        ("images/garbage.jpg", "unreadable"),
        ("images/bomb.png", "too_large"),
        ("../secret.jpg", "outside_root"),
        ("images/../../secret.jpg", "outside_root"),
    ],
)
def test_every_image_outcome_is_a_status(root: Path, value, status):
    loaded = load_image(value, root, target_size=224)
    assert loaded.status == status
    assert (loaded.image is not None) == (status == "ok")
    if status not in ("ok", "none"):
        assert loaded.detail


def test_absolute_path_outside_root_is_never_opened(root: Path):
    assert load_image(str(root.parent / "secret.jpg"), root, 224).status == "outside_root"


def test_symlink_escaping_the_root_is_refused(root: Path):
    link = root / "images" / "link.jpg"
    link.symlink_to(root.parent / "secret.jpg")
    assert load_image("images/link.jpg", root, 224).status == "outside_root"


@pytest.mark.parametrize("name", ["grey.png", "palette.png", "alpha.png", "cmyk.jpg", "deep.png"])
def test_non_rgb_images_become_rgb(root: Path, name: str):
    loaded = load_image(f"images/{name}", root, 224)
    assert loaded.status == "ok" and loaded.image.mode == "RGB"


def test_oversized_file_is_refused_by_bytes(root: Path):
    assert load_image("images/ok.jpg", root, 224, max_bytes=10).status == "too_large"
