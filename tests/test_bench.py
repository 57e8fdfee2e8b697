"""`mulcot-batch bench` and the speed switches it measures, on the real nano student and a tiny Qwen2.5-VL.

Every run here is tiny (a few posts, a few tokens, float32 on one thread) so the figures themselves
mean nothing; what is checked is that each measurement is real: the JSON carries every field,
the labels check compares real labels, small inputs are called unstable, and each switch changes
what is computed.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from mulcot_batch.bench import (
    BenchOptions,
    build_input,
    compare_labels,
    duplicated_input,
    run_bench,
)
from mulcot_batch.engine import length_sorted_batches
from mulcot_batch.students.image_cache import ImageFeatureCache
from mulcot_batch.students.nano import NanoStudent

from .conftest import SAMPLE, run_cli, text_dump

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_RUN = dict(batch_size=2, max_new_tokens=4, label_tokens=2, workers=0, dtype="float32", min_posts=1, min_seconds=0.0, peak_seconds=0.05, quiet=True)
RUN_FIELDS = {"name", "posts", "seconds", "posts_per_s", "tokens", "tokens_per_s", "speedup_over_baseline",
              "share_of_ceiling", "ceiling_posts_per_s", "peak_memory_mb", "stable", "note"}


@pytest.fixture(scope="module")
def nano() -> NanoStudent:
    return NanoStudent.load(dtype=torch.float32)


def test_cli_bench_writes_every_figure_as_json(tiny_qwen_folder: Path, tmp_path: Path):
    """End to end through the CLI on the Hugging Face backend: table printed, JSON with every field."""
    report = tmp_path / "bench.json"
    result = run_cli(
        "bench", SAMPLE / "posts.parquet", "--model", tiny_qwen_folder, "--posts", "4", "--batch-size", "2",
        "--max-new-tokens", "3", "--label-tokens", "2", "--workers", "0", "--dtype", "float32", "--threads", "1",
        "--min-posts", "1", "--min-seconds", "0", "--json", report,
    )
    assert result.exit_code == 0, result.output
    assert "engine all" in result.output and "ceiling" in result.output
    data = json.loads(report.read_text())
    names = [run["name"] for run in data["runs"]]
    assert names == ["baseline labels", "baseline labels+chains", "engine none", "engine uncertain", "engine all"]
    for run in data["runs"]:
        assert RUN_FIELDS <= set(run), run["name"]
        assert run["posts"] == 4 and run["seconds"] > 0 and run["posts_per_s"] > 0
        assert run["peak_memory_mb"] > 0 and 0 < run["share_of_ceiling"]
    engine_all = data["runs"][-1]
    assert engine_all["tokens"] > 0 and engine_all["speedup_over_baseline"] > 0
    assert engine_all["labels_vs_baseline"]["compared"] == 4
    assert data["ceiling"]["peak_matmul_flops"] > 0 and data["ceiling"]["label_flops_per_post"] > 0


def test_labels_check_compares_real_labels(nano: NanoStudent):
    """The engine's one-pass labels equal the baseline's generated ones (greedy, float32), and a
    changed label is caught."""
    result = run_bench(BenchOptions(posts=4, modes=("none",), **TINY_RUN), student=nano)
    check = result["runs"][2]["labels_vs_baseline"]
    assert check == {"compared": 4, "differ": 0, "identical": True, "examples": []}
    engine = pl.DataFrame({"post_id": ["a", "b"], "label": ["positive", "neutral"]})
    flipped = compare_labels(engine, {"a": "positive", "b": "negative"})
    assert not flipped["identical"] and flipped["examples"] == [{"post_id": "b", "engine": "neutral", "baseline": "negative"}]
    assert compare_labels(engine, {"a": "positive", "b": None})["differ"] == 1  # no label generated counts as different


def test_duplicates_mode_and_the_dedup_switch(nano: NanoStudent):
    """Half repeated posts are computed once with dedup, every time without it."""
    opts = dict(TINY_RUN, posts=6, modes=("none",), baseline=False, duplicates=True)
    on = run_bench(BenchOptions(**opts), student=nano)["duplicates"]
    assert on["distinct"]["computed"] == 6 and on["half_repeated"]["computed"] == 3
    assert on["time_ratio"] is not None and on["time_ratio"] > 0
    off = run_bench(BenchOptions(**opts, dedup=False), student=nano)["duplicates"]
    assert off["half_repeated"]["computed"] == 6


def test_image_cache_switch_encodes_each_image_once(nano: NanoStudent, monkeypatch: pytest.MonkeyPatch):
    from mulcot_batch.students.prompt_prefixes import PromptPrefixes

    opts = dict(TINY_RUN, posts=4, modes=("all",), baseline=False)
    resumed = run_bench(BenchOptions(**opts, image_cache=False), student=nano)["runs"][0]
    # Chain prompts computed in full (a model whose two prompts share no prefix) need the image again.
    monkeypatch.setattr(PromptPrefixes, "resume", lambda self, batch: None)
    cached = run_bench(BenchOptions(**opts), student=nano)["runs"][0]
    uncached = run_bench(BenchOptions(**opts, image_cache=False), student=nano)["runs"][0]
    assert cached["explained"] == uncached["explained"] == resumed["explained"] == 4
    images = cached["images_encoded"]
    assert images >= 1 and uncached["images_encoded"] == 2 * images  # label pass and chain pass each encode
    assert resumed["images_encoded"] == images  # a chain prompt resumed from the label pass needs no image


def test_input_without_images_single_post_and_big_batch(nano: NanoStudent, tmp_path: Path):
    text_only = text_dump(tmp_path / "text.parquet", rows=3)
    result = run_bench(BenchOptions(input=str(text_only), **dict(TINY_RUN, batch_size=8, min_posts=None, modes=("none",))), student=nano)
    assert result["input"]["with_images"] == 0
    assert any("no images" in note for note in result["notes"])
    assert any("larger than the 3 posts" in note for note in result["notes"])
    engine = result["runs"][2]
    assert engine["posts"] == 3 and engine["seconds"] > 0  # measured, and said how long it took
    assert engine["stable"] is False and engine["posts_per_s"] is None and "too few posts" in engine["note"]
    single = run_bench(BenchOptions(posts=1, **dict(TINY_RUN, min_posts=None, modes=("none",))), student=nano)
    assert single["input"]["posts"] == 1 and any("single post" in n for n in single["notes"])
    assert all(run["posts_per_s"] is None and run["speedup_over_baseline"] is None for run in single["runs"])


def test_too_short_run_gives_no_figure(nano: NanoStudent):
    result = run_bench(BenchOptions(posts=2, **dict(TINY_RUN, min_seconds=3600.0, modes=("none",), baseline=False)), student=nano)
    run = result["runs"][0]
    assert run["posts_per_s"] is None and "too short" in run["note"]


def test_bench_input_copies_are_distinct_and_duplicates_are_exact(tmp_path: Path):
    data = build_input(SAMPLE / "posts.parquet", 150, tmp_path)
    assert data.frame.height == 150 and data.source_rows == 100 and data.frame["post_id"].n_unique() == 150
    assert data.frame.select("text", "image_path", "aspect").n_unique() == 150  # copies carry a marker
    twins = duplicated_input(build_input(SAMPLE / "posts.parquet", 10, tmp_path / "b"), tmp_path / "b").frame
    assert twins.height == 10 and twins["post_id"].n_unique() == 10
    assert twins.select("text", "image_path", "aspect").n_unique() == 5
    assert twins["text"][0] == twins["text"][1]  # a retweet right after its post: same chunk


def test_repeated_runs_report_the_median_and_keep_each_run(nano: NanoStudent):
    result = run_bench(BenchOptions(posts=4, modes=("none",), repeat=3, **TINY_RUN), student=nano)
    for run in result["runs"]:
        each = run["seconds_of_each_run"]
        assert len(each) == 3 and sorted(each)[1] == round(run["seconds"], 3)
    assert any("median of 3 runs" in note for note in result["notes"])
    assert result["runs"][-1]["labels_vs_baseline"]["compared"] == 4
    assert run_cli("bench", "--repeat", "0").exit_code == 2


def test_sort_switch_keeps_input_order():
    lengths = [3, 9, 1, 7]
    assert list(length_sorted_batches([0, 1, 2, 3], lengths, 2)) == [[1, 3], [0, 2]]
    assert list(length_sorted_batches([0, 1, 2, 3], lengths, 2, sort=False)) == [[0, 1], [2, 3]]


def test_greedy_decoding_equals_stock_generate(nano: NanoStudent):
    """Dropping finished rows changes the cost, never the chain (float32)."""
    from mulcot_batch.students.base import Post

    preparer = nano.preparer()
    texts = ("What a great day !", "Awful service , never again", "ok")
    posts = [preparer.prepare(Post(text, None, None)) for text in texts]
    batch = preparer.collate(posts, "explain", ["positive", "negative", "neutral"])
    chains = nano.explain(batch, 160)  # whole chains: rows finish at different steps and leave the batch
    assert len({len(c) for c in chains}) > 1 and chains == nano.plain_generate(batch, 160)


def test_image_feature_cache_encodes_once_and_evicts():
    calls = []

    def encode(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return images * 2

    cache = ImageFeatureCache(max_images=2)
    images = torch.arange(3.0).view(3, 1)
    out = cache.features(["a", "b", "a"], images, encode)
    assert calls == [2] and out.flatten().tolist() == [0.0, 2.0, 0.0]
    cache.features(["c"], torch.tensor([[5.0]]), encode)  # evicts the least recently used ("b")
    cache.features(["a", "b"], torch.tensor([[0.0], [1.0]]), encode)
    assert calls == [2, 1, 1] and cache.encoded == 4 and len(cache) == 2


def test_bad_bench_options_fail_before_work(tmp_path: Path):
    folder = tmp_path / "folder"
    folder.mkdir()
    result = run_cli("bench", folder)
    assert result.exit_code == 2 and "one Parquet file" in result.output
    assert run_cli("bench", "--posts", "0").exit_code == 2
    assert run_cli("bench", "--rationales", "some").exit_code == 2
    assert run_cli("bench", "--json", tmp_path / "nowhere" / "b.json").exit_code == 2
