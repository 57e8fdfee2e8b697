"""Speculative chain decoding: the n-gram drafter, and that verified drafts never change a chain."""

from __future__ import annotations

import functools

import pytest
import torch

from mulcot_batch.students import decoding
from mulcot_batch.students.base import Post
from mulcot_batch.students.drafting import NgramDrafter
from mulcot_batch.students.nano import NanoStudent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_row_drafts_what_followed_its_last_tokens_in_its_chain_then_the_jobs_then_its_prompt():
    drafter = NgramDrafter(ngrams=(2,))
    first = drafter.row([1, 2, 3])
    first.extend([7, 8, 9, 10])  # a chain: shared with later rows
    assert first.draft(3) == []  # (9, 10) never continued anywhere
    second = drafter.row([5, 7, 8, 4])  # its prompt says (7, 8) -> 4, the job's chains (7, 8) -> 9
    second.extend([7, 8])
    assert second.draft(2) == [9, 10]
    loop = drafter.row([7, 8, 4])
    loop.extend([6, 7, 8, 6, 7, 8])  # its own chain repeating itself beats everything else
    assert loop.draft(4) == [6, 7, 8, 6]


def test_a_draft_runs_on_across_pieces_and_stops_at_the_limit():
    drafter = NgramDrafter(ngrams=(1,))
    row = drafter.row([])
    row.extend([1, 2, 3, 4])
    assert row.draft(2) == []  # 4 never continued
    other = drafter.row([])
    other.extend([9, 2])
    assert other.draft(10) == [3, 4]  # 2 -> 3, 3 -> 4, then nothing known
    assert other.draft(1) == [3]


def test_the_job_index_is_bounded():
    drafter = NgramDrafter(ngrams=(1,), shared_limit=3)
    drafter.row([]).extend(list(range(10)))
    assert len(drafter.shared) > 3
    drafter.row([])  # a new row finds the index over its limit and starts it again
    assert drafter.shared == {}


@pytest.fixture(scope="module")
def nano() -> NanoStudent:
    return NanoStudent.load(dtype=torch.float32)


def test_drafted_chains_equal_one_token_steps_in_fewer_steps(nano: NanoStudent, monkeypatch: pytest.MonkeyPatch):
    """Same chains as plain greedy decoding (float32), from fewer forward passes once chains repeat."""
    preparer = nano.preparer()
    texts = ("What a great day !", "Awful service , never again", "ok", "The match is on tonight")
    labels = ["positive", "negative", "neutral", "neutral"]
    batch = preparer.collate([preparer.prepare(Post(t, None, None)) for t in texts], "explain", labels)
    steps = []
    forward = nano.model.lm.model.forward

    @functools.wraps(forward)
    def counted(*args, **kwargs):
        steps.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(nano.model.lm.model, "forward", counted)

    nano.use_drafts(False)
    plain = nano.explain(batch, 120)
    plain_steps = len(steps)
    nano.use_drafts(True)
    cold = nano.explain(batch, 120)
    cold_steps = len(steps) - plain_steps
    warm = nano.explain(batch, 120)  # the job's index now holds these very chains
    warm_steps = len(steps) - plain_steps - cold_steps
    nano.use_drafts(False)
    assert len({len(c) for c in plain}) > 1  # rows end at different steps
    assert cold == plain and warm == plain and plain == nano.plain_generate(batch, 120)
    assert cold_steps < plain_steps and warm_steps < cold_steps / 2


def test_drafts_respect_the_length_cap_and_stop_tokens(nano: NanoStudent):
    preparer = nano.preparer()
    batch = preparer.collate([preparer.prepare(Post("Lovely !", None, None))], "explain", ["positive"])
    lm, embeds, mask = nano.model.lm, nano.model.input_embeddings(batch), batch["attention_mask"]
    plain = decoding.greedy_decode(lm, embeds, mask.clone(), 30, nano.stop_ids)
    drafter = NgramDrafter()
    seed = drafter.row([])
    seed.extend(plain[0] * 2)  # the job has seen this chain: every draft is right
    for cap in (1, 2, 7, 30):
        rows = decoding.greedy_decode(lm, embeds, mask.clone(), cap, nano.stop_ids, [drafter.row([])], 12)
        assert rows == [plain[0][:cap]]


def test_the_used_columns_exclude_those_masked_in_every_row_at_both_ends():
    mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 1, 0]])
    assert decoding._used_columns(mask) == (1, 5)
    assert decoding._used_columns(torch.ones(2, 3, dtype=torch.long)) == (0, 3)
