"""`mulcot-batch report`: tables checked against an eager recomputation of the same parts."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mulcot_batch.schema import LABELS

from .conftest import run_cli
from .scored_parts import scored_rows, write_scored

BY = ["aspect", "hashtag", "mention", "author"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    return write_scored(tmp_path_factory.mktemp("scored") / "job", scored_rows(400))


@pytest.fixture(scope="module")
def report(scored: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "rep"
    result = run_cli("report", scored, "--out", out, "--by", "aspect,hashtag", "--by", "mention", "--by", "author",
                     "--time-col", "created_at", "--every", "1d", "--min-posts", "30", "--top", "3", "--no-summary")  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def posts(scored: Path) -> pl.DataFrame:
    return pl.read_parquet(scored / "parts")


def table(report: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(report / f"{name}.parquet")


def expected_measures(frame: pl.DataFrame) -> dict:
    """The documented measures, recomputed eagerly in plain Python."""
    ok = frame.filter(pl.col("status") == "ok")
    counts = {label: ok.filter(pl.col("label") == label).height for label in LABELS}
    return {
        "posts": frame.height,
        "scored": ok.height,
        "errors": frame.height - ok.height,
        **{f"n_{label}": counts[label] for label in LABELS},
        **{f"share_{label}": counts[label] / ok.height for label in LABELS},
        **{f"mean_p_{label}": ok[f"p_{label}"].cast(pl.Float64).mean() for label in LABELS},
        "mean_confidence": ok["confidence"].cast(pl.Float64).mean(),
        "net_sentiment": (counts["positive"] - counts["negative"]) / ok.height,
    }


def assert_measures(row: dict, expected: dict) -> None:
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_writes_every_documented_file(report: Path):
    names = {p.name for p in report.iterdir()}
    assert {"overall.parquet", "over_time.parquet", "modality.parquet", "exemplars.parquet", "confidence.parquet",
            "report.html", "report.json"} <= names  # fmt: skip
    assert {f"by_{k}.parquet" for k in BY} <= names
    assert not [n for n in names if n.startswith(".")], "temporary files left behind"


def test_overall_counts_errors_apart_from_label_shares(report: Path, posts: pl.DataFrame):
    row = table(report, "overall").row(0, named=True)
    assert_measures(row, expected_measures(posts))
    assert row["errors"] > 0 and row["n_positive"] + row["n_neutral"] + row["n_negative"] == row["scored"]
    assert sum(row[f"share_{label}"] for label in LABELS) == pytest.approx(1.0)
    reasons = {r["reason"]: r["posts"] for r in row["errors_by_reason"]}
    assert reasons == dict(posts.filter(pl.col("status") == "error")["error"].value_counts().iter_rows())
    assert row["with_rationale"] == posts["rationale"].is_not_null().sum()
    assert row["models"] == ["nano"] and row["posts_without_time"] == 0
    assert row["time_min"] == posts["created_at"].min() and row["time_max"] == posts["created_at"].max()


def test_by_column_matches_group_by_and_folds_small_groups(scored: Path, posts: pl.DataFrame, tmp_path: Path):
    out = tmp_path / "rep"
    assert (
        run_cli("report", scored, "--out", out, "--by", "aspect", "--min-posts", "101", "--no-summary").exit_code == 0
    )
    by = table(out, "by_aspect")
    # 150 game, 100 Obama, 50 iPhone, 100 without aspect: Obama and iPhone fold, null never does
    assert by["group"].to_list() == ["game", None, "(other)"]
    assert by["groups"].to_list() == [1, 1, 2]
    for row in by.iter_rows(named=True):
        members = {"(other)": ["Obama", "iPhone"]}.get(row["group"], [row["group"]])
        subset = posts.filter(
            pl.col("aspect").is_in([m for m in members if m]) if row["group"] else pl.col("aspect").is_null()
        )
        assert_measures(row, expected_measures(subset))
        assert row["share_of_posts"] == pytest.approx(subset.height / posts.height)


def test_hashtags_and_mentions_come_from_the_text(report: Path):
    tags = dict(table(report, "by_hashtag").select("group", "posts").iter_rows())
    # 80 posts per text: "# Game" (tokenised) and "#Game" are one tag; #1, C#, a@b.com are not tags
    assert tags == {"game": 160, "ibm": 80, "watson": 80, "win": 80, None: 160}
    mentions = dict(table(report, "by_mention").select("group", "posts").iter_rows())
    assert mentions == {"coach": 80, "qz": 80, "oneperfectshot": 80, None: 160}


def test_a_post_counts_once_per_distinct_tag(scored: Path, tmp_path: Path):
    rows = scored_rows(20)
    rows = rows.set_column(rows.schema.get_field_index("text"), "text", pa.array(["#a #A # a #b"] * 20))
    folder = write_scored(tmp_path / "tags", rows, parts=1)
    assert run_cli("report", folder, "--out", tmp_path / "rep", "--by", "hashtag", "--min-posts", "1").exit_code == 0
    assert dict(table(tmp_path / "rep", "by_hashtag").select("group", "posts").iter_rows()) == {"a": 20, "b": 20}


def test_over_time_series_overall_and_per_top_group(report: Path, posts: pl.DataFrame):
    series = table(report, "over_time")
    overall = series.filter(pl.col("by").is_null())
    days = posts.with_columns(pl.col("created_at").dt.truncate("1d").alias("bucket"))
    assert overall["bucket"].to_list() == sorted(days["bucket"].unique().to_list())
    for row in overall.iter_rows(named=True):
        assert_measures(row, expected_measures(days.filter(pl.col("bucket") == row["bucket"])))
    aspect = series.filter(pl.col("by") == "aspect")
    # --top 3: game, Obama and (none) get series; iPhone is in (other)
    assert aspect["group"].unique(maintain_order=True).to_list() == ["game", "Obama", None, "(other)"]
    assert aspect["posts"].sum() == posts.height
    other = aspect.filter(pl.col("group") == "(other)")
    assert other["posts"].sum() == posts.filter(pl.col("aspect") == "iPhone").height


def test_modality_reads_text_and_image_sentiment_from_the_chain(report: Path, posts: pl.DataFrame):
    modality = table(report, "modality")
    chained = posts.filter(pl.col("rationale").is_not_null())
    word = lambda text: re.search(r"(positive|neutral|negative)", text).group(1)  # noqa: E731
    pairs = [
        (word(t), word(i), lab) for t, i, lab in chained.select("text_analysis", "image_analysis", "label").iter_rows()
    ]
    assert modality["posts"].sum() == len(pairs)
    conflicts = modality.filter(pl.col("conflict"))
    assert conflicts["posts"].sum() == sum(t != i for t, i, _ in pairs)
    assert conflicts["final_follows_text"].sum() == sum(t != i and lab == t for t, i, lab in pairs)
    assert conflicts["final_follows_image"].sum() == sum(t != i and lab == i for t, i, lab in pairs)
    assert modality["share"].sum() == pytest.approx(1.0)


def test_exemplars_are_the_most_and_least_confident_with_their_chains(report: Path, posts: pl.DataFrame):
    ex = table(report, "exemplars")
    ok = posts.filter(pl.col("status") == "ok")
    for label in LABELS:
        mine = ok.filter(pl.col("label") == label).sort("confidence", descending=True)
        most = ex.filter((pl.col("kind") == "most_confident") & pl.col("by").is_null() & (pl.col("label") == label))
        assert most["post_id"].to_list() == mine["post_id"].head(3).to_list()
        assert most["rank"].to_list() == [1, 2, 3]
        least = ex.filter((pl.col("kind") == "least_confident") & (pl.col("label") == label))
        assert least["post_id"].to_list() == mine["post_id"].tail(3).reverse().to_list()
    joined = ex.join(posts, on="post_id", suffix="_src")
    for column in ("text", "confidence", "rationale", "text_analysis", "image_analysis"):
        assert joined[column].equals(joined[f"{column}_src"], check_names=False, null_equal=True), column
    aspect = ex.filter(pl.col("by") == "aspect")
    assert aspect["group"].unique(maintain_order=True).to_list() == ["game", "Obama"]  # top 3 minus (none)
    for (group, label), frame in aspect.group_by("group", "label"):
        src = ok.filter((pl.col("aspect") == group) & (pl.col("label") == label)).sort("confidence", descending=True)
        assert frame.sort("rank")["post_id"].to_list() == src["post_id"].head(3).to_list()


def test_confidence_histogram_covers_every_scored_post(report: Path, posts: pl.DataFrame):
    hist = table(report, "confidence")
    assert hist.height == 3 * 14 and hist["posts"].sum() == posts.filter(pl.col("status") == "ok").height
    for label in LABELS:
        mine = posts.filter((pl.col("status") == "ok") & (pl.col("label") == label))
        high = hist.filter((pl.col("label") == label) & (pl.col("bin_low") == 0.95))["posts"][0]
        assert high == mine.filter(pl.col("confidence") >= 0.95).height


def test_several_scored_folders_add_up_and_one_named_twice_counts_once(scored: Path, tmp_path: Path):
    other = write_scored(tmp_path / "second", scored_rows(100, seed=1))
    out = tmp_path / "rep"
    assert run_cli("report", scored, other, scored, "--out", out).exit_code == 0
    row = table(out, "overall").row(0, named=True)
    assert row["posts"] == 500 and len(row["sources"]) == 2


def test_kept_column_missing_from_one_job_reads_as_null(scored: Path, tmp_path: Path):
    rows = scored_rows(50, seed=2).drop_columns(["author"])
    other = write_scored(tmp_path / "no-author", rows, parts=1)
    out = tmp_path / "rep"
    assert run_cli("report", scored, other, "--out", out, "--by", "author", "--min-posts", "1").exit_code == 0
    by = table(out, "by_author")
    assert by.filter(pl.col("group").is_null())["posts"].to_list() == [50]
    assert by["posts"].sum() == 450


def test_string_timestamps_are_converted(tmp_path: Path):
    rows = scored_rows(60)
    stamps = [None if i == 0 else f"2015-03-0{1 + i % 3}T1{i % 10}:00:00Z" for i in range(60)]
    rows = rows.set_column(rows.schema.get_field_index("author"), "author", pa.array(stamps))
    folder = write_scored(tmp_path / "s", rows, parts=2)
    out = tmp_path / "rep"
    assert run_cli("report", folder, "--out", out, "--time-col", "author").exit_code == 0
    series = table(out, "over_time")
    assert series["bucket"].dtype == pl.Datetime("us", "UTC")
    assert series["posts"].to_list() == [20 - 1, 20, 20]  # the null one has no time
    assert table(out, "overall")["posts_without_time"][0] == 1


def test_all_error_archive_has_no_shares_and_still_renders(tmp_path: Path):
    rows = pl.from_arrow(scored_rows(30)).with_columns(
        pl.lit("error").alias("status"), pl.lit("post id is null").alias("error"),
        *(pl.lit(None, pl.Float32).alias(c) for c in ("p_positive", "p_neutral", "p_negative", "confidence")),
        pl.lit(None, pl.String).alias("label"), pl.lit(None, pl.String).alias("rationale"),
    )  # fmt: skip
    folder = write_scored(tmp_path / "errs", rows.to_arrow().cast(scored_rows(1).schema), parts=1)
    out = tmp_path / "rep"
    result = run_cli("report", folder, "--out", out, "--by", "aspect", "--time-col", "created_at", "--summary")
    assert result.exit_code == 0, result.output
    row = table(out, "overall").row(0, named=True)
    assert (row["posts"], row["scored"], row["errors"]) == (30, 0, 30)
    assert row["share_positive"] is None and row["net_sentiment"] is None
    assert table(out, "exemplars").is_empty()
    assert "Posts that could not be scored: 30" in (out / "report.html").read_text()


def test_rerun_with_other_keys_removes_stale_tables_only(scored: Path, tmp_path: Path):
    out = tmp_path / "rep"
    assert run_cli("report", scored, "--out", out, "--by", "author").exit_code == 0
    (out / "notes.txt").write_text("mine")
    assert run_cli("report", scored, "--out", out, "--by", "aspect", "--no-html").exit_code == 0
    names = {p.name for p in out.iterdir()}
    assert "by_aspect.parquet" in names and "by_author.parquet" not in names and "report.html" not in names
    assert "notes.txt" in names


def test_terminal_summary(scored: Path, tmp_path: Path):
    result = run_cli(
        "report", scored, "--out", tmp_path / "rep", "--by", "aspect", "--time-col", "created_at", "--summary"
    )
    assert result.exit_code == 0
    text = result.stderr
    for expected in ("posts", "positive", "neutral", "negative", "net sentiment", "by aspect", "game", "modality:"):
        assert expected in text, expected
    assert re.search("[▁▂▃▄▅▆▇█]{7}", text), "sparkline of the 7 daily buckets"
    quiet = run_cli("report", scored, "--out", tmp_path / "rep", "--quiet")
    assert quiet.exit_code == 0 and quiet.output == ""


# --- bad input: one line, exit 2, before any work --------------------------------------------------


def refused(*args) -> str:
    result = run_cli("report", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = result.stderr.strip()
    assert line.startswith("mulcot-batch: error: ") and "\n" not in line
    return line


def test_folder_without_parts(tmp_path: Path):
    (tmp_path / "empty" / "parts").mkdir(parents=True)
    assert "holds no scored parts" in refused(tmp_path / "empty", "--out", tmp_path / "rep")
    assert "not found" in refused(tmp_path / "nowhere", "--out", tmp_path / "rep")
    assert not (tmp_path / "rep").exists()


def test_parts_of_different_models(scored: Path, tmp_path: Path):
    other = write_scored(tmp_path / "qwen", scored_rows(10, model="Qwen2.5-VL-3B-Instruct"), model="qwen")
    line = refused(scored, other, "--out", tmp_path / "rep")
    assert "different models" in line and "Qwen2.5-VL-3B-Instruct" in line and "nano" in line
    mixed = tmp_path / "mixed"
    shutil.copytree(scored, mixed)
    shutil.copy(next((other / "parts").iterdir()), mixed / "parts" / "part-00009-0000000.parquet")
    assert "different models" in refused(mixed, "--out", tmp_path / "rep")


def test_parts_with_mixed_schemas(scored: Path, tmp_path: Path):
    bad = tmp_path / "bad"
    shutil.copytree(scored, bad)
    part = pq.read_table(next((bad / "parts").iterdir()))
    author = part.schema.get_field_index("author")
    pq.write_table(
        part.set_column(author, "author", pa.array(range(part.num_rows))), bad / "parts" / "part-00001-0000000.parquet"
    )
    assert "mixed schemas" in refused(bad, "--out", tmp_path / "rep")
    foreign = tmp_path / "foreign" / "parts"
    foreign.mkdir(parents=True)
    pq.write_table(pa.table({"post_id": ["a"], "score": [1.0]}), foreign / "part-0.parquet")
    assert "not a mulcot-batch scored part" in refused(foreign.parent, "--out", tmp_path / "rep")
    float64 = tmp_path / "f64"
    shutil.copytree(scored, float64)
    index = part.schema.get_field_index("confidence")
    pq.write_table(
        part.set_column(index, "confidence", part["confidence"].cast(pa.float64())),
        float64 / "parts" / "part-00002-0000000.parquet",
    )
    assert "column 'confidence' is double" in refused(float64, "--out", tmp_path / "rep")


def test_unknown_or_unusable_columns(scored: Path, tmp_path: Path):
    out = tmp_path / "rep"
    line = refused(scored, "--out", out, "--by", "topic")
    assert "--by 'topic'" in line and "available: aspect, created_at, author, text" in line
    assert "score or chain column" in refused(scored, "--out", out, "--by", "rationale")
    no_text = write_scored(tmp_path / "no-text", scored_rows(10).drop_columns(["text"]), parts=1)
    assert "--keep text" in refused(no_text, "--out", out, "--by", "hashtag")
    assert "--time-col 'when'" in refused(scored, "--out", out, "--time-col", "when")
    assert "not ISO 8601" in refused(scored, "--out", out, "--time-col", "text")
    ints = write_scored(
        tmp_path / "ints",
        pl.from_arrow(scored_rows(10)).with_columns(pl.int_range(10).alias("author")).to_arrow(),
        parts=1,
    )
    assert "is Int64, not a timestamp" in refused(ints, "--out", out, "--time-col", "author")
    assert "not a polars duration" in refused(scored, "--out", out, "--time-col", "created_at", "--every", "1fortnight")
    assert "positive duration" in refused(scored, "--out", out, "--time-col", "created_at", "--every", "0d")
    assert "--every needs --time-col" in refused(scored, "--out", out, "--every", "1d")
    assert "scored output folder" in refused(scored, "--out", scored / "parts")
    assert not out.exists()


# --- at the end of a scoring job ---------------------------------------------------------------


def test_keep_text_passes_the_text_role_column_through(sample_copy: Path):
    from mulcot_batch.reading import TEXT, Columns, iter_chunks, plan_inputs

    columns = Columns(keep=("created_at", "text"))
    plan = plan_inputs([sample_copy], columns)
    chunk = next(iter_chunks(plan, columns, chunk_rows=5))
    assert chunk.table["text"].to_pylist() == chunk.table[TEXT].to_pylist()


def fake_scoring(rows: int = 120):
    """Stands in for the model: writes a scored folder, then runs the job's `after` step."""
    calls = []

    def execute(opts, after=None):
        write_scored(Path(opts.out), scored_rows(rows), parts=2)
        calls.append(opts)
        if after is not None:
            after()
        return {}

    return execute, calls


def test_score_report_reports_into_out_report(monkeypatch, sample_copy: Path, tmp_path: Path):
    execute, calls = fake_scoring()
    monkeypatch.setattr("mulcot_batch.scoring_job.execute", execute)
    out = tmp_path / "scored"
    result = run_cli("score", sample_copy, "--out", out, "--keep", "created_at,text", "--report", "--quiet")
    assert result.exit_code == 0, result.output
    assert calls and (out / "report" / "report.html").is_file()
    about = json.loads((out / "report" / "report.json").read_text())
    assert about["by"] == ["aspect", "hashtag", "mention"] and about["time_col"] == "created_at"


def test_job_file_report_table(monkeypatch, sample_copy: Path, tmp_path: Path):
    execute, calls = fake_scoring()
    monkeypatch.setattr("mulcot_batch.scoring_job.execute", execute)
    job = tmp_path / "job.toml"
    out = tmp_path / "scored"
    job.write_text(
        f'[score]\ninputs = ["{sample_copy}"]\nout = "{out}"\nkeep = ["created_at", "author", "text"]\n'
        f'[report]\nscored = ["{out}"]\nout = "{out / "report"}"\n'
        'by = ["aspect", "author"]\ntime_col = "created_at"\nevery = "12h"\nmin_posts = 5\n'
    )
    assert run_cli("run", job, "--quiet").exit_code == 0
    assert (out / "report" / "by_author.parquet").is_file()
    assert table(out / "report", "over_time")["bucket"].dt.hour().unique().sort().to_list() == [0, 12]


def test_job_file_runs_a_command_twice_in_file_order(monkeypatch, sample_copy: Path, tmp_path: Path):
    """[[score]] tables run once each, where their headers stand: score A, report A, score B."""
    execute, calls = fake_scoring()
    monkeypatch.setattr("mulcot_batch.scoring_job.execute", execute)
    job = tmp_path / "job.toml"
    first, second = tmp_path / "a", tmp_path / "b"
    job.write_text(
        f'[[score]]\ninputs = ["{sample_copy}"]\nout = "{first}"\n'
        f'[report]  # of the first\nscored = ["{first}"]\nout = "{first / "report"}"\n'
        f'[[score]]\ninputs = ["{sample_copy}"]\nout = "{second}"\nlimit = 5\n'
    )
    result = run_cli("run", job)
    assert result.exit_code == 0, result.output
    assert [Path(opts.out) for opts in calls] == [first, second] and calls[1].limit == 5
    stages = [line.split(":")[0] for line in result.stderr.splitlines() if line.startswith("== ")]
    assert stages == ["== score", "== report", "== score"]
    assert (first / "report" / "report.html").is_file()


def test_job_file_key_outside_a_table_is_a_clear_error(tmp_path: Path):
    job = tmp_path / "job.toml"
    job.write_text('score = "everything"\n')
    result = run_cli("run", job)
    assert result.exit_code == 2 and "'score' is not a stage; write a stage as a table, [score]" in result.stderr


def test_job_file_stages_are_all_checked_before_any_runs(monkeypatch, sample_copy: Path, tmp_path: Path):
    execute, calls = fake_scoring()
    monkeypatch.setattr("mulcot_batch.scoring_job.execute", execute)
    job = tmp_path / "job.toml"
    job.write_text(
        f'[score]\ninputs = ["{sample_copy}"]\nout = "{tmp_path / "o"}"\n'
        f'[report]\nscored = ["{tmp_path / "o"}"]\nout = "{tmp_path / "r"}"\ncolour = "red"\n'
    )
    result = run_cli("run", job)
    assert result.exit_code == 2 and "unknown option 'colour'" in result.stderr, result.stderr
    assert not calls



def test_sample_timestamps_are_a_usable_time_axis():
    """The sample's synthetic created_at spans about a week: a daily series has several points."""
    stamps = pl.read_parquet(Path(__file__).resolve().parent.parent / "sample_data" / "posts.parquet")["created_at"]
    assert stamps.dtype == pl.Datetime and (stamps.max() - stamps.min()).days >= 5
    assert isinstance(stamps.min(), datetime)


def test_exemplar_ties_go_to_the_earlier_post(tmp_path: Path):
    rows = pl.from_arrow(scored_rows(60)).with_columns(
        pl.lit("ok").alias("status"), pl.lit(None, pl.String).alias("error"), pl.lit("neutral").alias("label"),
        pl.lit(0.5, pl.Float32).alias("confidence"), pl.lit(0.25, pl.Float32).alias("p_positive"),
        pl.lit(0.5, pl.Float32).alias("p_neutral"), pl.lit(0.25, pl.Float32).alias("p_negative"),
    )  # fmt: skip
    folder = write_scored(tmp_path / "ties", rows.to_arrow().cast(scored_rows(1).schema), parts=4)
    assert run_cli("report", folder, "--out", tmp_path / "rep", "--exemplars", "4").exit_code == 0
    ex = table(tmp_path / "rep", "exemplars")
    first = rows["post_id"].head(4).to_list()
    for kind in ("most_confident", "least_confident"):
        assert ex.filter(pl.col("kind") == kind)["post_id"].to_list() == first, kind


def test_fetch_reads_rows_from_only_the_parts_that_hold_them(tmp_path: Path):
    from mulcot_batch.reporting.archive import open_archive
    from mulcot_batch.reporting.exemplars import fetch_rows

    rows = scored_rows(50)
    (tmp_path / "a" / "parts").mkdir(parents=True)
    sizes = [7, 1, 20, 0, 22]  # uneven parts, an empty one among them
    start = 0
    for i, size in enumerate(sizes):
        pq.write_table(rows.slice(start, size), tmp_path / "a" / "parts" / f"part-00000-{i:07d}.parquet")
        start += size
    archive = open_archive([str(tmp_path / "a")])
    wanted = [0, 6, 7, 8, 27, 28, 49]
    got = fetch_rows(archive, wanted, [pl.col("post_id")])
    assert got["post_id"].to_list() == [rows["post_id"][i].as_py() for i in wanted]
