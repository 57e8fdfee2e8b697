from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from mulcot_batch.errors import JobError
from mulcot_batch.reading import ID, TEXT, Columns, discover_inputs, iter_chunks, plan_inputs


def dump(path: Path, **columns) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(columns).write_parquet(path)
    return path


def test_folders_are_searched_recursively_in_sorted_order(tmp_path: Path):
    dump(tmp_path / "b" / "2.parquet", post_id=["x"], text=["t"])
    dump(tmp_path / "a.parquet", post_id=["y"], text=["t"])
    files = discover_inputs([str(tmp_path)])
    assert [f.name for f in files] == ["a.parquet", "2.parquet"]


def test_missing_input_and_empty_folder_are_job_errors(tmp_path: Path):
    with pytest.raises(JobError, match="input not found"):
        discover_inputs([str(tmp_path / "nope.parquet")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobError, match="no .parquet files"):
        discover_inputs([str(tmp_path / "empty")])


def test_required_and_kept_columns_are_checked_in_every_file(tmp_path: Path):
    good = dump(tmp_path / "good.parquet", post_id=["x"], text=["t"], author=["a"])
    bad = dump(tmp_path / "bad.parquet", post_id=["y"], body=["t"])
    with pytest.raises(JobError, match=r"input .*bad.parquet has no column 'text' \(it has: .*\); name the right one with --text-col"):
        plan_inputs([good, bad], Columns())
    with pytest.raises(JobError, match="not found in any input file: nope"):
        plan_inputs([good], Columns(keep=("nope",)))
    with pytest.raises(JobError, match="clash"):
        plan_inputs([good], Columns(keep=("label",)))


def test_not_parquet_is_a_job_error(tmp_path: Path):
    fake = tmp_path / "posts.parquet"
    fake.write_text("post_id,text\n1,hello\n")
    with pytest.raises(JobError, match="not a readable Parquet file"):
        plan_inputs([fake], Columns())


def test_chunks_stream_in_order_with_limit_and_mixed_schemas(tmp_path: Path):
    first = dump(tmp_path / "1.parquet", post_id=[1, 2, 3, 4, 5], text=list("abcde"), author=list("uvwxy"))
    second = dump(tmp_path / "2.parquet", post_id=[6, 7, 8], text=list("fgh"))  # no author, no image column
    columns = Columns(keep=("author",))
    plan = plan_inputs([first, second], columns)
    chunks = list(iter_chunks(plan, columns, chunk_rows=2, limit=7))
    assert [c.key for c in chunks] == ["00000-0000000", "00000-0000001", "00000-0000002", "00001-0000000"]
    ids = [i for c in chunks for i in c.table[ID].to_pylist()]
    assert ids == ["1", "2", "3", "4", "5", "6", "7"]  # integer ids become strings, limit respected
    last = chunks[-1].table
    assert last["author"].to_pylist() == [None, None] and last[TEXT].to_pylist() == ["f", "g"]
    assert all(c.table.schema == chunks[0].table.schema for c in chunks)
    assert chunks[0].table["author"].type == pa.string()
