"""Reasoning-chain quality: similarity to reference (teacher) chains, diversity, form and consistency.

The similarity metrics are the paper's (average per pair): BLEU (sacrebleu's sentence BLEU, its
default exponential smoothing), ROUGE-L F1 (Google's rouge-score, Porter stemming), METEOR (nltk,
WordNet synonyms) and the cosine similarity of all-MiniLM-L6-v2 embeddings. They are computed on
the whole chain text as written, field names included, and reported on a 0-1 scale (BLEU divided
by 100). distinct-1/2 (unique n-grams over all n-grams, over every chain) measures diversity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..prompts import extract_label, parse_chain
from .labels import normalise_label

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: the tokens of METEOR and distinct-n."""
    return _TOKEN_RE.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Unique n-grams / all n-grams, pooled over the texts (Li et al. 2016); None without any n-gram."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = tokens(text)
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else None


def is_complete(chain: str) -> bool:
    """All five fields present: the four analyses and a Prediction that names a label."""
    parsed = parse_chain(chain)
    return parsed.has_analyses and parsed.label is not None


def bleu_scores(candidates: Sequence[str], references: Sequence[str]) -> list[float]:
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)
    return [bleu.sentence_score(c, [r]).score / 100.0 for c, r in zip(candidates, references)]


def rouge_l_scores(candidates: Sequence[str], references: Sequence[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(r, c)["rougeL"].fmeasure for c, r in zip(candidates, references)]


def meteor_scores(candidates: Sequence[str], references: Sequence[str], wordnet: object) -> list[float]:
    from nltk.translate.meteor_score import meteor_score

    return [meteor_score([tokens(r)], tokens(c), wordnet=wordnet) for c, r in zip(candidates, references)]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def evaluate_chains(
    candidates: Sequence[str | None],
    references: Sequence[str | None] | None = None,
    labels: Sequence[str | None] | None = None,
    *,
    meteor: bool = True,
    cosine: bool = True,
) -> dict:
    """Chain metrics; rows without a candidate chain (null or blank) are left out and counted.

    Similarity metrics run over the pairs where both a candidate and a reference exist. `labels`
    (gold, or any label column) gives the share of chains whose own Prediction agrees with it.
    METEOR or cosine that cannot run offline is None, with the reason under `unavailable`;
    `meteor=False` / `cosine=False` skip them (the trainer's quick dev checks), said the same way.
    """
    n = len(candidates)
    if references is not None and len(references) != n or labels is not None and len(labels) != n:
        raise ValueError("candidates, references and labels must have the same length")
    present = [i for i, c in enumerate(candidates) if c and c.strip()]
    chains = [candidates[i] for i in present]
    result: dict = {
        "rows": n,
        "chains": len(chains),
        "complete_share": _mean([is_complete(c) for c in chains]),
        "distinct_1": distinct_n(chains, 1),
        "distinct_2": distinct_n(chains, 2),
        "unavailable": {},
    }
    if labels is not None:
        judged = [(extract_label(candidates[i]), normalise_label(labels[i])) for i in present]
        result["label_agreement"] = _mean([own == label for own, label in judged if label is not None])
    if references is not None:
        result.update(_similarity(candidates, references, meteor, cosine, result["unavailable"]))
    return result


def _similarity(
    candidates: Sequence[str | None], references: Sequence[str | None], meteor: bool, cosine: bool, unavailable: dict
) -> dict:
    pairs = [(c, r) for c, r in zip(candidates, references) if c and c.strip() and r and r.strip()]
    cands, refs = [c for c, _ in pairs], [r for _, r in pairs]
    out: dict = {"pairs": len(pairs), "bleu": _mean(bleu_scores(cands, refs)), "rouge_l_f1": _mean(rouge_l_scores(cands, refs))}
    out["meteor"] = None
    if not meteor:
        unavailable["meteor"] = "skipped on request"
    else:
        from .wordnet import load_wordnet

        wordnet = load_wordnet()
        if wordnet.reader is None:
            unavailable["meteor"] = wordnet.unavailable
        else:
            out["meteor"] = _mean(meteor_scores(cands, refs, wordnet.reader))
            out["meteor_wordnet"] = wordnet.source
    out["cosine"] = None
    if not cosine:
        unavailable["cosine"] = "skipped on request"
    else:
        from ..errors import JobError
        from .embeddings import load_encoder, pairwise_cosine

        try:
            out["cosine"] = _mean(pairwise_cosine(load_encoder(), cands, refs).tolist()) if pairs else None
        except JobError as exc:
            unavailable["cosine"] = str(exc)
    return out
