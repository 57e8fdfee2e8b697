from pathlib import Path

import pyarrow as pa
import pytest

from mulcot_batch.errors import JobError
from mulcot_batch.writing import OutputFolder


def test_foreign_job_is_refused_unless_overwrite(tmp_path: Path):
    folder = OutputFolder(tmp_path / "out")
    folder.claim({"model": "a"}, overwrite=False)
    folder.write_part("00000-0000000", pa.table({"x": [1, 2]}), rank=0)
    with pytest.raises(JobError, match="another job's results .*differs in: model"):
        folder.check({"model": "b"}, overwrite=False)
    folder.claim({"model": "a"}, overwrite=False)  # same job: resume keeps the work
    assert folder.done_chunks() == {"00000-0000000"}
    folder.claim({"model": "b"}, overwrite=True)
    assert folder.done_chunks() == set() and folder.part_files() == []


def test_folder_with_unrelated_files_is_never_used(tmp_path: Path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(JobError, match="not empty and holds no mulcot-batch job"):
        OutputFolder(tmp_path).claim({"model": "a"}, overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_torn_manifest_line_and_lost_part_mean_redo(tmp_path: Path):
    folder = OutputFolder(tmp_path / "out")
    folder.claim({}, overwrite=False)
    folder.write_part("00000-0000000", pa.table({"x": [1]}), rank=0)
    folder.write_part("00000-0000001", pa.table({"x": [2]}), rank=1)
    with open(folder.manifest / "rank-00000.jsonl", "a") as fh:
        fh.write('{"chunk": "00000-00000')  # kill -9 in the middle of a line
    (folder.parts / "part-00000-0000001.parquet").unlink()
    assert folder.done_chunks() == {"00000-0000000"}
    assert folder.done_rows() == 1
    assert not list(folder.parts.glob(".*tmp*"))
