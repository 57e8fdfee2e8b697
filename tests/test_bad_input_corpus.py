"""A bad-input corpus built here (nothing downloaded), each case with its defined outcome asserted.

Two kinds of outcome: a bad *job* (the input files themselves) stops before any work with one
line and exit status 2; a bad *row* never stops a job: it is scored from what is usable, or kept
as an `error` row with a reason. The table `ROW_OUTCOMES` is the contract, also in the README.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mulcot_batch.schema import LABELS, output_schema

from .conftest import read_output, run_cli, write_image

TINY_ARGS = ["--batch-size", "4", "--rationales", "none", "--workers", "0", "--dtype", "float32", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def png_bomb(path: Path, side: int = 30_000) -> Path:
    """A real decompression bomb: a valid 1-bit PNG of side x side pixels (900 Mpx) in about 110 KB."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + side // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def invalid_utf8(values: list[bytes | None]) -> pa.Array:
    """A string column holding bytes that are not UTF-8 (how a lone surrogate arrives: CESU-8 / WTF-8).

    Arrow and polars refuse to build such strings from Python, but Parquet files written by other
    tools can hold them, and readers do not check.
    """
    data = b"".join(v or b"" for v in values)
    offsets, position = [0], 0
    for v in values:
        position += len(v or b"")
        offsets.append(position)
    validity = pa.array([v is not None for v in values]).buffers()[1]
    return pa.Array.from_buffers(pa.string(), len(values), [validity, pa.array(offsets, pa.int32()).buffers()[1], pa.py_buffer(data)])


# id -> (status, image_status, substring of the error or None); the contract for each hostile row.
ROW_OUTCOMES: dict[str, tuple[str, str, str | None]] = {
    "plain": ("ok", "ok", None),
    "null-text-with-image": ("ok", "ok", None),
    "null-text-no-image": ("error", "none", "empty text and no usable image"),
    "empty-text-no-image": ("error", "none", "empty text and no usable image"),
    "blank-text-missing-image": ("error", "missing", "empty text and no usable image (image file not found"),
    "text-100k-chars": ("ok", "none", None),
    "emoji": ("ok", "none", None),
    "right-to-left": ("ok", "none", None),
    "zero-width-and-combining": ("ok", "none", None),
    "undecodable-text": ("ok", "none", None),
    "duplicate-id": ("ok", "none", None),  # twice in the input, twice in the output, each scored
    "long-aspect": ("ok", "none", None),
    "image-zero-bytes": ("ok", "unreadable", None),
    "image-truncated-jpeg": ("ok", "unreadable", None),
    "image-not-an-image": ("ok", "unreadable", None),
    "image-png-alpha": ("ok", "ok", None),
    "image-cmyk-jpeg": ("ok", "ok", None),
    "image-16-bit-png": ("ok", "ok", None),
    "image-animated-gif": ("ok", "ok", None),
    "image-30000x30000-bomb": ("ok", "too_large", None),
    "image-very-wide": ("ok", "ok", None),
    "image-missing": ("ok", "missing", None),
    "image-a-folder": ("ok", "missing", None),
    "image-a-fifo": ("ok", "missing", None),  # never opened: a read would block forever
    "image-dot-dot": ("ok", "outside_root", None),
    "image-absolute-outside": ("ok", "outside_root", None),
    "image-absolute-inside": ("ok", "ok", None),
    "image-symlink-outside": ("ok", "outside_root", None),
    "image-symlink-inside": ("ok", "ok", None),
    "image-symlink-loop": ("ok", "missing", None),
    "image-nul-byte": ("ok", "missing", None),
    "image-name-too-long": ("ok", "missing", None),
    "image-blank-path": ("ok", "none", None),
    "undecodable-id-\ufffd\ufffd\ufffd": ("ok", "none", None),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Parquet dump with one row per hostile case (plus a null id and a duplicate id)."""
    root = tmp_path_factory.mktemp("corpus")
    images = root / "dump" / "images"
    write_image(images / "ok.jpg")
    write_image(images / "alpha.png", "RGBA", fmt="PNG")
    write_image(images / "cmyk.jpg", "CMYK")
    write_image(images / "deep.png", "I;16", fmt="PNG")
    write_image(images / "wide.png", "RGB", size=(20_000, 2), fmt="PNG")
    (images / "empty.jpg").write_bytes(b"")
    whole = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 120, 240)).save(whole, "JPEG")
    (images / "truncated.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 3])
    (images / "text.jpg").write_bytes(b"%PDF-1.4 not an image\n" * 20)
    frames = [Image.new("P", (32, 32), i) for i in (1, 50, 100)]
    frames[0].save(images / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0, transparency=0)
    png_bomb(images / "bomb.png")
    (images / "a-folder.jpg").mkdir()
    os.mkfifo(images / "fifo.jpg")
    (root / "secret.jpg").write_bytes((images / "ok.jpg").read_bytes())
    (images / "out-link.jpg").symlink_to(root / "secret.jpg")
    (images / "in-link.jpg").symlink_to(images / "ok.jpg")
    (images / "loop-a.jpg").symlink_to(images / "loop-b.jpg")
    (images / "loop-b.jpg").symlink_to(images / "loop-a.jpg")

    rows: list[tuple[str | bytes | None, bytes | None, str | None, str | None]] = [
        ("plain", b"What a lovely day at the beach", "images/ok.jpg", None),
        ("null-text-with-image", None, "images/ok.jpg", None),
        ("null-text-no-image", None, None, None),
        ("empty-text-no-image", b"", None, None),
        ("blank-text-missing-image", b"   \n\t ", "images/nowhere.jpg", None),
        ("text-100k-chars", ("x" * 99_999 + "!").encode(), None, None),
        ("emoji", "😀🎉🔥👍🏽👨‍👩‍👧‍👦🇫🇷".encode(), None, None),
        ("right-to-left", "\u202eأنا أحب هذا الهاتف שלום עולם\u202c".encode(), None, None),
        ("zero-width-and-combining", "ze\u200bro\u200d wi\ufeffdth Z̷̧̛a̸l̵g̶o".encode(), None, None),
        ("undecodable-text", b"lone surrogate \xed\xa0\x80 and a stray \xff byte", None, None),
        ("duplicate-id", b"first of two rows with one id", None, None),
        ("duplicate-id", b"second of two rows with one id", None, None),
        ("long-aspect", b"the aspect is huge", None, "aspect " * 20_000),
        ("image-zero-bytes", b"zero-byte file", "images/empty.jpg", None),
        ("image-truncated-jpeg", b"cut short", "images/truncated.jpg", None),
        ("image-not-an-image", b"a pdf named .jpg", "images/text.jpg", None),
        ("image-png-alpha", b"transparent", "images/alpha.png", None),
        ("image-cmyk-jpeg", b"print colours", "images/cmyk.jpg", None),
        ("image-16-bit-png", b"deep pixels", "images/deep.png", None),
        ("image-animated-gif", b"moving picture", "images/anim.gif", None),
        ("image-30000x30000-bomb", b"decompression bomb", "images/bomb.png", None),
        ("image-very-wide", b"panorama", "images/wide.png", None),
        ("image-missing", b"file gone", "images/nowhere.jpg", None),
        ("image-a-folder", b"a folder", "images/a-folder.jpg", None),
        ("image-a-fifo", b"a named pipe", "images/fifo.jpg", None),
        ("image-dot-dot", b"escapes the root", "../../secret.jpg", None),
        ("image-absolute-outside", b"absolute path outside", str(root / "secret.jpg"), None),
        ("image-absolute-inside", b"absolute path inside", str(images / "ok.jpg"), None),
        ("image-symlink-outside", b"link out", "images/out-link.jpg", None),
        ("image-symlink-inside", b"link in", "images/in-link.jpg", None),
        ("image-symlink-loop", b"link loop", "images/loop-a.jpg", None),
        ("image-nul-byte", b"nul in path", "images/ok\x00.jpg", None),
        ("image-name-too-long", b"long path", "images/" + "x" * 5000 + ".jpg", None),
        ("image-blank-path", b"blank path", "   ", None),
        (None, b"a post whose id is null", "images/ok.jpg", None),
        (b"undecodable-id-\xed\xb0\x80", b"an id with a lone low surrogate", None, None),
    ]
    table = pa.table({
        "post_id": invalid_utf8([r[0] if r[0] is None or isinstance(r[0], bytes) else r[0].encode() for r in rows]),
        "text": invalid_utf8([r[1] for r in rows]),
        "image_path": pa.array([r[2] for r in rows], pa.string()),
        "aspect": pa.array([r[3] for r in rows], pa.string()),
        "n": pa.array(range(len(rows)), pa.int64()),
    })
    path = root / "dump" / "posts.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module", params=["hf", pytest.param("nano", marks=pytest.mark.slow)])
def corpus_scored(request, corpus: Path, tiny_qwen_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The corpus scored by both backends: the HF one (tiny Qwen2.5-VL) and the real embedded nano."""
    out = tmp_path_factory.mktemp("corpus-out") / "out"
    model = tiny_qwen_folder if request.param == "hf" else "nano"
    dtype = [] if request.param == "hf" else ["--dtype", "auto"]
    result = run_cli("score", corpus, "--out", out, "--model", model, "--keep", "n,text", "--chunk-rows", "8",
                     *TINY_ARGS, *dtype)
    assert result.exit_code == 0, result.output
    return read_output(out)


def test_every_row_comes_out_once_with_its_defined_outcome(corpus: Path, corpus_scored: pl.DataFrame):
    scored = corpus_scored
    assert scored["n"].to_list() == list(range(pq.read_metadata(corpus).num_rows))  # all rows, once, in order
    for row in scored.iter_rows(named=True):
        if row["post_id"] is None:
            assert row["status"] == "error" and row["error"] == "post id is null" and row["label"] is None
            continue
        status, image_status, error = ROW_OUTCOMES[row["post_id"]]
        assert (row["status"], row["image_status"]) == (status, image_status), row["post_id"]
        if status == "ok":
            assert row["label"] in LABELS and row["error"] is None, row["post_id"]
            assert abs(row["p_positive"] + row["p_neutral"] + row["p_negative"] - 1) < 1e-5
        else:
            assert row["label"] is None and row["p_positive"] is None and error in row["error"], row["post_id"]
    assert set(ROW_OUTCOMES) <= set(scored["post_id"].drop_nulls())


def test_duplicate_ids_are_kept_and_scored_each(corpus_scored: pl.DataFrame):
    twins = corpus_scored.filter(pl.col("post_id") == "duplicate-id")
    assert twins.height == 2 and twins["status"].to_list() == ["ok", "ok"]
    assert twins["text"].to_list() == ["first of two rows with one id", "second of two rows with one id"]


def test_undecodable_bytes_become_replacement_characters(corpus_scored: pl.DataFrame):
    row = corpus_scored.filter(pl.col("post_id") == "undecodable-text").row(0, named=True)
    assert row["text"] == "lone surrogate \ufffd\ufffd\ufffd and a stray \ufffd byte"
    assert row["status"] == "ok"


def test_output_schema_is_the_fixed_one(corpus_scored: pl.DataFrame):
    expected = pl.from_arrow(output_schema("post_id", [("n", pa.int64()), ("text", pa.string())]).empty_table())
    assert corpus_scored.schema == expected.schema


# --- bad jobs: the input files themselves -------------------------------------------------------------


def bad_job(*args) -> str:
    result = run_cli("score", *args, "--quiet")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mulcot-batch: error: ")
    return result.stderr


def good_file(path: Path, **columns) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns or {"post_id": ["a", "b"], "text": ["good", "bad"]}), path)
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing file", "input not found"),
        ("zero-byte file", "not a readable Parquet file"),
        ("CSV named .parquet", "not a readable Parquet file"),
        ("truncated Parquet (footer cut off)", "not a readable Parquet file"),
        ("text column of int64", "text column 'text' is int64"),
        ("image_path column of lists", "image column 'image_path' is list<"),
        ("id column of doubles", "id column 'post_id' is double"),
        ("required column missing", "has no column 'text' (it has: "),
    ],
)
def test_bad_input_files_stop_the_job_before_any_work(case: str, expected: str, tmp_path: Path):
    good = good_file(tmp_path / "a-good.parquet")
    bad = tmp_path / "b-bad.parquet"
    if case == "zero-byte file":
        bad.write_bytes(b"")
    elif case == "CSV named .parquet":
        bad.write_text("post_id,text\n1,hello\n")
    elif case == "truncated Parquet (footer cut off)":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) - 20])
    elif case == "text column of int64":
        good_file(bad, post_id=["x"], text=[42])
    elif case == "image_path column of lists":
        good_file(bad, post_id=["x"], text=["t"], image_path=[["a.jpg", "b.jpg"]])
    elif case == "id column of doubles":
        good_file(bad, post_id=[1.0], text=["t"])
    elif case == "required column missing":
        good_file(bad, post_id=["x"], body=["t"])
    out = tmp_path / "out"
    assert expected in bad_job(good, bad, "--out", out)
    assert not out.exists()  # nothing written


def test_empty_parquet_files_are_fine(tiny_qwen_folder: Path, tmp_path: Path):
    empty = good_file(tmp_path / "in" / "0-empty.parquet", post_id=pa.array([], pa.string()), text=pa.array([], pa.string()))
    alone = run_cli("score", empty, "--out", tmp_path / "alone", "--model", tiny_qwen_folder, *TINY_ARGS)
    assert alone.exit_code == 0, alone.output
    assert list((tmp_path / "alone" / "parts").iterdir()) == []
    good_file(tmp_path / "in" / "1-posts.parquet")
    both = run_cli("score", tmp_path / "in", "--out", tmp_path / "both", "--model", tiny_qwen_folder, *TINY_ARGS)
    assert both.exit_code == 0, both.output
    assert read_output(tmp_path / "both")["post_id"].to_list() == ["a", "b"]


def test_mixed_schemas_across_files_give_one_output_schema(tiny_qwen_folder: Path, tmp_path: Path):
    folder = tmp_path / "in"
    write_image(folder / "ok.jpg")
    good_file(folder / "1.parquet", post_id=["a"], text=["with everything"], image_path=["ok.jpg"], aspect=["day"],
              author=["ann"], likes=pa.array([3], pa.int32()))
    good_file(folder / "2.parquet", likes=pa.array([5], pa.int64()), text=pa.array(["reordered, int ids"], pa.large_string()),
              post_id=pa.array([7], pa.int64()))
    good_file(folder / "3.parquet", post_id=["c"], text=pa.array(["dictionary text"]).dictionary_encode(),
              image_path=pa.nulls(1), author=pa.array([b"raw bytes"], pa.binary()).cast(pa.string()))
    good_file(folder / "4.parquet", post_id=["d"], text=pa.array([b"binary text"], pa.binary()), aspect=pa.nulls(1, pa.string()))
    out = tmp_path / "out"
    result = run_cli("score", folder, "--out", out, "--model", tiny_qwen_folder, "--keep", "author,likes", *TINY_ARGS)
    assert result.exit_code == 0, result.output
    scored = read_output(out)
    assert scored["post_id"].to_list() == ["a", "7", "c", "d"]
    assert scored["author"].to_list() == ["ann", None, "raw bytes", None]
    assert scored["likes"].to_list() == [3, 5, None, None] and scored.schema["likes"] == pl.Int64
    assert scored["aspect"].to_list() == ["day", None, None, None]
    assert scored["image_status"].to_list() == ["ok", "none", "none", "none"]
    assert scored["status"].to_list() == ["ok"] * 4


def test_a_damaged_page_in_an_input_file_stops_the_job_in_one_resumable_line(tiny_qwen_folder: Path, tmp_path: Path):
    """The footer reads (so planning accepts the file) but a data page further in is garbage."""
    path = tmp_path / "posts.parquet"
    texts = [f"post number {i} says something different from post {i + 1}" for i in range(300)]
    pq.write_table(pa.table({"post_id": [f"p{i}" for i in range(300)], "text": texts}), path, row_group_size=100,
                   compression="zstd")
    column = pq.read_metadata(path).row_group(2).column(1)
    data = bytearray(path.read_bytes())
    end = (column.dictionary_page_offset or column.data_page_offset) + column.total_compressed_size
    for i in range(column.data_page_offset + 16, end - 4):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = run_cli("score", path, "--out", out, "--model", tiny_qwen_folder, "--chunk-rows", "100", *TINY_ARGS)
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1 and "is damaged after row 200" in result.stderr
    assert read_output(out).height == 200  # the chunks before the damage are kept, and only whole ones
