"""Chain prompts resumed from the label pass's cached prefix give the same chains as full prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mulcot_batch.schema import LABELS
from mulcot_batch.students.base import Post
from mulcot_batch.students.nano import NanoConfig, NanoStudent
from mulcot_batch.students.prompt_prefixes import PromptPrefixes, shared_prefix_length
from mulcot_batch.training.recipes import COMPACT_TASKS, COMPACT_TEMPLATE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_shared_prefix_leaves_every_chain_prompt_a_token_of_its_own():
    assert shared_prefix_length([1, 2, 3, 9], [[1, 2, 3, 4, 5], [1, 2, 7]]) == 2
    assert shared_prefix_length([1, 2, 3], [[1, 2, 3]]) == 2
    assert shared_prefix_length([5], [[1, 2]]) == 0


@pytest.fixture(scope="module")
def post_first_nano(tmp_path_factory: pytest.TempPathFactory) -> NanoStudent:
    """The base LM with the post-first template of the training recipe (untrained parts: the test is
    about equal computation, not good chains)."""
    folder = tmp_path_factory.mktemp("post-first")
    NanoConfig(template=COMPACT_TEMPLATE, tasks=COMPACT_TASKS).save(folder)
    return NanoStudent.load(folder, dtype=torch.float32)


def _posts() -> list[Post]:
    red, blue = Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (30, 40), (20, 40, 210))
    return [
        Post("Great game by Messi and Neymar tonight", "Messi", red),
        Post("Great game by Messi and Neymar tonight", "Neymar", red),  # same text and image, other aspect
        Post("Rain again , the trains are late", None, blue),
        Post("ok", "Monday", None),
    ]


def test_chains_from_kept_prefixes_equal_chains_from_full_prompts(post_first_nano: NanoStudent):
    nano = post_first_nano
    nano.use_image_cache(True)
    preparer = nano.preparer()
    prepared = [preparer.prepare(post) for post in _posts()]
    assert all(p.inputs["prefix_length"] > 4 for p in prepared[:3])
    assert prepared[0].inputs["prefix_key"] == prepared[1].inputs["prefix_key"]

    nano.prefixes = PromptPrefixes()
    probs = np.concatenate([nano.classify(preparer.collate(prepared[:2], "classify")), nano.classify(preparer.collate(prepared[2:], "classify"))])
    labels = [LABELS[int(i)] for i in probs.argmax(axis=1)]
    chain_batch = preparer.collate(prepared, "explain", labels)
    before = nano.counters["prompt_tokens_reused"]
    resumed = nano.explain(chain_batch, 40)
    reused = nano.counters["prompt_tokens_reused"] - before

    nano.prefixes = PromptPrefixes()  # nothing kept: full prompts
    full = nano.explain(chain_batch, 40)
    assert reused == sum(p.inputs["prefix_length"] for p in prepared)
    assert resumed == full and all(resumed)


def test_the_next_chunk_starts_with_no_prefixes_kept(post_first_nano: NanoStudent):
    nano = post_first_nano
    preparer = nano.preparer()
    first, second = (preparer.prepare(post) for post in _posts()[2:])
    nano.prefixes = PromptPrefixes()
    nano.classify(preparer.collate([first], "classify"))
    nano.explain(preparer.collate([first], "explain", ["neutral"]), 5)
    nano.classify(preparer.collate([second], "classify"))  # the next chunk's label pass
    before = nano.counters["prompt_tokens_reused"]
    nano.explain(preparer.collate([first], "explain", ["neutral"]), 5)
    assert nano.counters["prompt_tokens_reused"] == before  # computed in full: its prefix was dropped


def test_a_model_folder_without_a_shared_prefix_still_scores(tmp_path: Path):
    """The shipped template of earlier versions put the task first: chains are computed in full."""
    NanoConfig(tasks=COMPACT_TASKS).save(tmp_path)
    nano = NanoStudent.load(tmp_path, dtype=torch.float32)
    preparer = nano.preparer()
    prepared = [preparer.prepare(post) for post in _posts()[2:]]
    nano.classify(preparer.collate(prepared, "classify"))
    assert len(nano.explain(preparer.collate(prepared, "explain", ["neutral", "neutral"]), 5)) == 2


def test_kept_prefixes_are_bounded(monkeypatch: pytest.MonkeyPatch):
    from types import SimpleNamespace

    from mulcot_batch.students import prompt_prefixes

    monkeypatch.setattr(prompt_prefixes, "MAX_PREFIXES", 2)
    layer = SimpleNamespace(keys=torch.zeros(3, 1, 4, 2), values=torch.zeros(3, 1, 4, 2))
    batch = {"attention_mask": torch.ones(3, 4, dtype=torch.long), "prefix_lengths": [2, 2, 3], "prefix_keys": ["a", "b", "c"]}
    kept = PromptPrefixes()
    assert kept.wanted(batch)
    kept.keep(batch, SimpleNamespace(layers=[layer, layer]))
    assert list(kept._kept) == ["c"] and kept._kept["c"][0].shape == (2, 1, 3, 2)
