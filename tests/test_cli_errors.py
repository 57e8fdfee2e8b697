"""A bad job stops before any work: one line on stderr, exit status 2, nothing written."""

from pathlib import Path

import polars as pl
import pytest

from .conftest import run_cli


@pytest.fixture
def posts(tmp_path: Path) -> Path:
    path = tmp_path / "posts.parquet"
    pl.DataFrame({"post_id": ["a"], "text": ["hello"]}).write_parquet(path)
    return path


def bad_job(*args) -> str:
    result = run_cli("score", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mulcot-batch: error: ")
    return result.stderr


def test_input_not_found(tmp_path: Path):
    assert "input not found" in bad_job(tmp_path / "nope.parquet", "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_input_not_parquet(tmp_path: Path):
    csv = tmp_path / "posts.parquet"
    csv.write_text("post_id,text\n1,hi\n")
    assert "not a readable Parquet file" in bad_job(csv, "--out", tmp_path / "out")


def test_required_column_missing(posts: Path, tmp_path: Path):
    message = bad_job(posts, "--out", tmp_path / "o", "--id-col", "tweet_id")
    assert "has no column 'tweet_id' (it has: post_id, text" in message and message.rstrip().endswith("name the right one with --id-col")
    assert not (tmp_path / "o").exists()


def test_unknown_model(posts: Path, tmp_path: Path):
    assert "unknown model 'gpt-9'" in bad_job(posts, "--out", tmp_path / "o", "--model", "gpt-9")


def test_model_folder_without_config(posts: Path, tmp_path: Path):
    (tmp_path / "m").mkdir()
    assert "no config.json" in bad_job(posts, "--out", tmp_path / "o", "--model", tmp_path / "m")


def test_out_folder_with_other_files(posts: Path, tmp_path: Path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "holds no mulcot-batch job" in bad_job(posts, "--out", out)
    assert (out / "notes.txt").read_text() == "mine"


def test_kept_column_missing(posts: Path, tmp_path: Path):
    assert "not found in any input file: author" in bad_job(posts, "--out", tmp_path / "o", "--keep", "author")


def test_bad_image_root(posts: Path, tmp_path: Path):
    assert "--image-root is not a folder" in bad_job(posts, "--out", tmp_path / "o", "--image-root", tmp_path / "x")
