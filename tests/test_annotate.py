"""`mulcot-batch annotate` against a misbehaving OpenAI-compatible server on loopback."""

from __future__ import annotations

import base64
from pathlib import Path

import polars as pl
import pytest

from mulcot_batch.prompts import format_chain

from .conftest import SHARED_T15, run_cli, write_image
from .openai_stub import StubTeacher

FIELDS = {
    "text_analysis": "The text is about {}.",
    "image_analysis": "The image shows a scene.",
    "conflict_resolution": "No conflict.",
    "final_conclusion": "The sentiment follows the text.",
}
POSTS = [  # id, text, aspect, image, label
    ("p1", "Great game tonight", "game", "images/a.jpg", "positive"),
    ("p2", "The meeting is at noon", "meeting", "images/b.png", "neutral"),
    ("p3", "Terrible service again", None, None, "negative"),
    ("p4", "Lovely weather", "weather", "images/a.jpg", "positive"),
]
SECRET = "sk-test-do-not-write-me-0123456789"
# Fast retries and a short timeout, so faults cost milliseconds.
FAST = ["--backoff", "0.01", "--timeout", "0.5", "--max-retries", "3", "--quiet"]


def chain_for(text: str, label: str) -> str:
    return format_chain({k: v.format(text) for k, v in FIELDS.items()}, label)


@pytest.fixture
def posts_file(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_image(root / "images" / "a.jpg")
    write_image(root / "images" / "b.png", "P", fmt="PNG")
    frame = pl.DataFrame(
        {
            "post_id": [p[0] for p in POSTS],
            "text": [p[1] for p in POSTS],
            "aspect": [p[2] for p in POSTS],
            "image_path": [p[3] for p in POSTS],
            "label": [p[4] for p in POSTS],
        }
    )
    frame.write_parquet(root / "train.parquet")
    return root / "train.parquet"


@pytest.fixture
def stub():
    server = StubTeacher({(p[1], p[2]): chain_for(p[1], p[4]) for p in POSTS}, slow_seconds=1.0).start()
    yield server
    server.stop()


def annotate(posts: Path, stub: StubTeacher, out: Path, *extra: object, cache: Path | None = None):
    cache_args = ["--cache", cache] if cache else ["--no-cache"]
    return run_cli("annotate", posts, "--out", out, "--model", "teacher-72b", "--api-base", stub.url, *FAST, *cache_args, *extra)


def test_chains_for_every_post_in_the_shape_of_rationales(posts_file: Path, stub: StubTeacher, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", SECRET)
    out = tmp_path / "chains.parquet"
    result = annotate(posts_file, stub, out, "--api-key-env", "TEACHER_KEY", cache=tmp_path / "cache")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out)
    assert table.columns[:6] == ["post_id", "text", "aspect", "image_path", "label", "rationale"]
    assert table["status"].to_list() == ["ok"] * 4 and table["agrees"].all()
    assert table["attempts"].to_list() == [1] * 4
    assert table["rationale"].to_list() == [chain_for(p[1], p[4]) for p in POSTS]
    assert table["rationale_label"].to_list() == [p[4] for p in POSTS]
    # images inline as data URLs of the file's own bytes; the text-only post sends none
    first = next(b for b in stub.bodies if "Great game" in b["messages"][1]["content"][-1]["text"])
    url = first["messages"][1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == (posts_file.parent / "images" / "a.jpg").read_bytes()
    assert "aspect 'game'" in first["messages"][0]["content"] and first["model"] == "teacher-72b"
    third = next(b for b in stub.bodies if "Terrible" in b["messages"][1]["content"][-1]["text"])
    assert [p["type"] for p in third["messages"][1]["content"]] == ["text"]
    # the key goes in the header, and nowhere on disk
    assert set(stub.authorizations) == {f"Bearer {SECRET}"}
    for path in [out, *(tmp_path / "cache").rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()


def test_faults_are_retried_until_answered(posts_file: Path, stub: StubTeacher, tmp_path: Path):
    stub.faults.extend(["429", "500", "slow", "garbage", "no-choices", "empty"])  # all six on the first post
    result = annotate(posts_file, stub, tmp_path / "out.parquet", "--concurrency", "1", "--max-retries", "6")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "out.parquet")
    assert table["status"].to_list() == ["ok"] * 4 and table["agrees"].all()
    assert stub.requests == 4 + 6
    assert table["attempts"].to_list() == [1] * 4  # retries are not teacher attempts


def test_a_teacher_that_keeps_answering_nothing_gives_a_failed_row(posts_file: Path, stub: StubTeacher, tmp_path: Path):
    stub.faults.extend(["empty", "empty"])
    result = annotate(posts_file, stub, tmp_path / "out.parquet", "--concurrency", "1", "--max-retries", "1")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "out.parquet")
    assert table["status"].to_list() == ["failed", "ok", "ok", "ok"]
    assert table["error"][0] == "empty answer (after 2 tries)" and table["rationale"][0] is None


def test_a_refused_request_is_not_retried(posts_file: Path, stub: StubTeacher, tmp_path: Path):
    stub.faults.append("401")
    result = annotate(posts_file, stub, tmp_path / "out.parquet", "--concurrency", "1")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "out.parquet")
    assert table["status"].to_list() == ["failed", "ok", "ok", "ok"]
    assert table["error"][0] == 'HTTP 401: {"error": {"message": "invalid api key"}} (after 1 try)'
    assert stub.requests == 4


def test_disagreeing_chains_are_asked_again_with_the_label_as_hint(posts_file: Path, stub: StubTeacher, tmp_path: Path):
    stub.wrong_first.add("Great game tonight")
    stub.always_wrong.add("The meeting is at noon")
    result = annotate(posts_file, stub, tmp_path / "out.parquet", "--max-attempts", "3")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "out.parquet").sort("post_id")
    assert table["attempts"].to_list() == [2, 3, 1, 1]
    assert table["agrees"].to_list() == [True, False, True, True]
    assert table["status"].to_list() == ["ok"] * 4  # kept, and flagged by `agrees`
    assert table["rationale_label"][0] == "positive" and table["rationale_label"][1] != "neutral"
    hinted = [b for b in stub.bodies if "Hint: the correct sentiment label is" in b["messages"][1]["content"][-1]["text"]]
    assert len(hinted) == 1 + 2
    assert "the correct sentiment label is positive" in next(
        b["messages"][1]["content"][-1]["text"] for b in hinted if "Great game" in b["messages"][1]["content"][-1]["text"]
    )


def test_a_rerun_pays_for_no_request_twice(posts_file: Path, stub: StubTeacher, tmp_path: Path):
    """First run: one post's endpoint keeps failing (as if the run had crashed there). Second run asks only for it."""
    cache = tmp_path / "cache"
    stub.always_fail.add("Lovely weather")
    stub.wrong_first.add("Great game tonight")
    first = annotate(posts_file, stub, tmp_path / "out.parquet", cache=cache)
    assert first.exit_code == 0, first.output
    table = pl.read_parquet(tmp_path / "out.parquet")
    assert table["status"].to_list() == ["ok", "ok", "ok", "failed"]
    assert "HTTP 500" in table["error"][3] and "after 4 tries" in table["error"][3]
    sent = stub.requests
    stub.always_fail.clear()
    second = annotate(posts_file, stub, tmp_path / "out.parquet", "--overwrite", cache=cache)
    assert second.exit_code == 0, second.output
    assert stub.requests == sent + 1  # only the post that had no answer
    assert pl.read_parquet(tmp_path / "out.parquet")["status"].to_list() == ["ok"] * 4
    third = annotate(posts_file, stub, tmp_path / "out.parquet", "--overwrite", cache=cache)
    assert third.exit_code == 0 and stub.requests == sent + 1


def test_an_endpoint_that_is_down_gives_failed_rows_and_the_run_finishes(posts_file: Path, stub: StubTeacher, tmp_path: Path):
    stub.down = True
    result = annotate(posts_file, stub, tmp_path / "out.parquet", "--concurrency", "1", "--give-up-after", "2")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "out.parquet")
    assert table["status"].to_list() == ["failed"] * 4 and table["rationale"].null_count() == 4
    assert stub.requests == 2 * 4  # two posts, 1 try + 3 retries each; then the rest are not sent
    assert table["error"][3].startswith("not sent: the teacher failed 2 posts in a row")


def test_no_server_at_all(posts_file: Path, tmp_path: Path):
    args = ["--model", "m", "--api-base", "http://127.0.0.1:9/v1", *FAST, "--max-retries", "1", "--no-cache"]
    result = run_cli("annotate", posts_file, "--out", tmp_path / "out.parquet", *args)
    assert result.exit_code == 0, result.output
    errors = pl.read_parquet(tmp_path / "out.parquet")["error"].to_list()
    assert all("connection failed" in e or "not sent" in e for e in errors)


def test_bad_rows_are_counted_and_skipped_by_rule(tmp_path: Path):
    texts = ("Great game tonight", "Terrible service again")
    stub = StubTeacher({(text, None): chain_for(text, label) for text, label in zip(texts, ("positive", "negative"))}).start()
    root = tmp_path / "data"
    write_image(root / "ok.jpg")
    (root / "broken.jpg").write_bytes(b"not an image")
    rows = [
        ("a", "Great game tonight", "ok.jpg", "positive"),
        ("a", "Great game tonight", "ok.jpg", "positive"),  # duplicate id
        (None, "Great game tonight", "ok.jpg", "positive"),  # null id
        ("b", "Great game tonight", "gone.jpg", "positive"),  # missing image
        ("c", "Great game tonight", "broken.jpg", "positive"),  # unreadable image
        ("d", "Great game tonight", "ok.jpg", "mixed"),  # unknown label
        ("e", "", None, "neutral"),  # empty post
        ("f", "Terrible service again", None, "NEGATIVE"),  # label case is normalised
    ]
    frame = pl.DataFrame({"post_id": [r[0] for r in rows], "text": [r[1] for r in rows], "image_path": [r[2] for r in rows], "label": [r[3] for r in rows]})
    frame.write_parquet(root / "train.parquet")
    try:
        args = ["--model", "m", "--api-base", stub.url, "--no-cache", "--backoff", "0.01"]
        result = run_cli("annotate", root / "train.parquet", "--out", tmp_path / "out.parquet", *args)
    finally:
        stub.stop()
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "out.parquet")
    assert table.height == len(rows)
    assert table["status"].to_list() == ["ok", "skipped", "skipped", "skipped", "skipped", "skipped", "skipped", "ok"]
    errors = table["error"].to_list()
    assert "duplicate id (row 0 kept)" in errors[1] and "null or empty id" in errors[2]
    assert "image file not found" in errors[3] and "unreadable" in errors[4]
    assert "'mixed' is not positive/neutral/negative" in errors[5] and "neither text nor image" in errors[6]
    assert stub.requests == 2
    summary = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.stderr.splitlines() if line.count("│") == 3}
    assert summary["skipped"] == "6"
    for rule in ("duplicate id", "empty post", "missing image", "null id", "unknown label", "unreadable image"):
        assert summary[rule] == "1"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "m"], "--backend openai needs --api-base"),
        (["--model", "m", "--api-base", "localhost:8000/v1"], "--backend openai needs --api-base http(s)://"),
        (["--model", "m", "--api-base", "http://127.0.0.1:9/v1", "--label-col", "gold"], "has no column 'gold' (it has: "),
        (["--model", "m", "--api-base", "http://127.0.0.1:9/v1", "--max-attempts", "0"], "--max-attempts must be at least 1"),
        (["--backend", "hf", "--model", "nano"], "needs a local Hugging Face model folder"),
        (["--backend", "hf", "--model", "no/such/folder"], "unknown model"),
    ],
)
def test_bad_jobs_stop_before_any_request(posts_file: Path, tmp_path: Path, args: list[str], message: str):
    result = run_cli("annotate", posts_file, "--out", tmp_path / "out.parquet", *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_existing_output_needs_overwrite(posts_file: Path, tmp_path: Path):
    (tmp_path / "out.parquet").write_bytes(b"mine")
    result = run_cli("annotate", posts_file, "--out", tmp_path / "out.parquet", "--model", "m", "--api-base", "http://127.0.0.1:9/v1")
    assert result.exit_code == 2 and "exists; use --overwrite" in result.stderr
    assert (tmp_path / "out.parquet").read_bytes() == b"mine"


@pytest.mark.skipif(not (SHARED_T15 / "rationales.parquet").is_file(), reason="../shared/data/t15 is not beside the repository")
def test_real_t15_posts_and_teacher_chains(tmp_path: Path):
    """12 real posts with their real images; the stub answers with the paper teacher's own chains."""
    real = pl.read_parquet(SHARED_T15 / "rationales.parquet").head(12)
    posts = SHARED_T15 / "rationales.parquet"
    server = StubTeacher(dict(zip(zip(real["text"], real["aspect"]), real["rationale"]))).start()
    try:
        out = tmp_path / "out.parquet"
        result = run_cli("annotate", posts, "--out", out, "--model", "m", "--api-base", server.url, "--limit", "12", "--no-cache", "--quiet")
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out)
    assert table.select(real.columns).equals(real)  # same shape and content as rationales.parquet
    assert table["status"].to_list() == ["ok"] * 12 and table["agrees"].all()
    assert server.requests == 12 + int((table["attempts"] > 1).sum())
