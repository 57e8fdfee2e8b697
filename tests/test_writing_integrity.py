"""What counts as a finished chunk: a whole manifest line and a whole part with the rows it records."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mulcot_batch.errors import Interrupted, JobFailed
from mulcot_batch.preparing import _encodable
from mulcot_batch.writing import OutputFolder


@pytest.fixture
def folder(tmp_path: Path) -> OutputFolder:
    out = OutputFolder(tmp_path / "out")
    out.claim({"job": 1}, overwrite=False)
    for i in range(4):
        out.write_part(f"00000-000000{i}", pa.table({"x": list(range(i + 1))}), rank=0)
    return out


def test_only_whole_parts_with_their_recorded_rows_count(folder: OutputFolder):
    parts = sorted(folder.parts.glob("part-*.parquet"))
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[:-10])  # footer cut
    parts[2].write_bytes(b"")
    pq.write_table(pa.table({"x": [0]}), parts[3])  # readable, but 1 row where the manifest says 4
    assert folder.done_chunks() == {"00000-0000000"}
    assert folder.done_rows() == 1
    assert folder.finished_parts() == [parts[0]]


def test_manifest_lines_that_are_not_entries_are_ignored(folder: OutputFolder):
    manifest = folder.manifest / "rank-00000.jsonl"
    with open(manifest, "a") as fh:
        fh.write('["a list"]\n{"chunk": "00000-0000009"}\n{"chunk": "x", "part": "../../etc/passwd", "rows": 1}\n\xff\n')
    assert len(folder.done_chunks()) == 4


def test_a_torn_line_is_ended_before_the_next_one(folder: OutputFolder):
    manifest = folder.manifest / "rank-00000.jsonl"
    with open(manifest, "a") as fh:
        fh.write('{"chunk": "00000-00000')  # killed mid-line
    folder.write_part("00000-0000009", pa.table({"x": [1]}), rank=0)
    assert "00000-0000009" in folder.done_chunks()
    assert manifest.read_text().splitlines()[-1] == json.dumps({"chunk": "00000-0000009", "part": "part-00000-0000009.parquet", "rows": 1})


def test_a_new_run_clears_temporary_parts_of_a_crashed_one(folder: OutputFolder):
    stale = folder.parts / ".part-00000-0000004.parquet.tmp-12345"
    stale.write_bytes(b"PAR1 half")
    folder.claim({"job": 1}, overwrite=False)
    assert not stale.exists() and len(folder.done_chunks()) == 4


def test_a_failed_write_leaves_nothing_half_done(folder: OutputFolder, monkeypatch):
    def no_space(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("mulcot_batch.writing._fsync", no_space)
    with pytest.raises(JobFailed, match="could not write part-00000-0000005.parquet .*No space left on device.*rerun"):
        folder.write_part("00000-0000005", pa.table({"x": [1]}), rank=0)
    assert not list(folder.parts.glob(".*")) and len(folder.done_chunks()) == 4


def test_exit_statuses():
    assert JobFailed("x").exit_code == 3
    assert Interrupted("x", signal.SIGINT).exit_code == 130 and Interrupted("x", signal.SIGTERM).exit_code == 143


def test_lone_surrogates_are_replaced_before_any_tokenizer():
    """Arrow cannot hold them (so Parquet input never brings them), but a post built in Python can."""
    with pytest.raises(UnicodeEncodeError):
        pa.array(["a\ud800b"])
    assert _encodable("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert _encodable("pair \ud83d\ude00 joined") == "pair \U0001F600 joined"
    assert _encodable("already fine 😀") == "already fine 😀"
