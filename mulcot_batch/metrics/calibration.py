"""Calibration of the label probabilities: does a p_* of 0.8 come true four times in five?

Analysts filter on `confidence` and sum probabilities into expected counts per label, so a model
whose argmax is right but whose 0.9 means 0.7 still misleads them. Three numbers answer it:
the expected calibration error (ECE; the top label's confidence against how often it is right,
in equal-width bins, as Guo et al. 2017), the log loss and the multi-class Brier score (both from
scikit-learn). The bins are reported too, so a reliability diagram can be drawn from the JSON.

`fit_temperature` is the repair (temperature scaling, Guo et al. 2017): one number T that divides
the label logits, chosen for the lowest log loss on a dev split. It never changes a label (the
argmax of z / T is the argmax of z), only how sure the probabilities say the model is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import brier_score_loss, log_loss

from ..schema import LABELS
from .labels import normalise_label

#: Equal-width confidence bins; 10 keeps each bin populated on a dev split of about a thousand posts.
ECE_BINS = 10
#: Temperatures searched by `fit_temperature` (on a log scale); outside it a model is broken, not miscalibrated.
TEMPERATURE_RANGE = (0.05, 20.0)


def usable_probabilities(probs: np.ndarray) -> np.ndarray:
    """Rows whose three probabilities are all present, finite, non-negative and not all zero."""
    finite = np.isfinite(probs).all(axis=1)
    safe = np.where(finite[:, None], probs, 0.0)
    return finite & (safe >= 0).all(axis=1) & (safe.sum(axis=1) > 0)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin (lower edge excluded, upper included): posts, mean confidence, accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        count = int(inside.sum())
        table.append(
            {
                "from": round(float(low), 6),
                "to": round(float(high), 6),
                "n": count,
                "confidence": float(confidence[inside].mean()) if count else None,
                "accuracy": float(correct[inside].mean()) if count else None,
            }
        )
    return table


def expected_calibration_error(bins: list[dict]) -> float:
    """Sum over bins of (share of posts) x |accuracy - mean confidence|."""
    total = sum(b["n"] for b in bins)
    return float(sum(b["n"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]))


def _usable_rows(gold: Sequence[str], probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask of rows with probabilities, their renormalised probabilities, their gold indices)."""
    names = [normalise_label(g) for g in gold]
    if None in names:
        raise ValueError(f"gold labels must be one of {', '.join(LABELS)}; found {gold[names.index(None)]!r}")
    probs = np.asarray(probs, dtype=np.float64).reshape(len(gold), len(LABELS))
    usable = usable_probabilities(probs)
    kept = probs[usable] / probs[usable].sum(axis=1, keepdims=True)
    truth = np.array([LABELS.index(name) for name, ok in zip(names, usable) if ok], dtype=np.int64)
    return usable, kept, truth


def evaluate_calibration(gold: Sequence[str], probs: np.ndarray) -> dict:
    """ECE, log loss, Brier score and reliability bins over the rows that carry probabilities.

    `probs` holds one row per gold label, columns in `LABELS` order; a row with a missing or
    invalid probability (an error row) is left out and counted. Each row is renormalised to sum
    to one first: the output stores float32, whose rounding alone would make scikit-learn warn.
    """
    usable, kept, truth = _usable_rows(gold, probs)
    result: dict = {"n": int(usable.sum()), "without_probabilities": int((~usable).sum())}
    if not usable.any():
        return result
    confidence = kept.max(axis=1)
    bins = reliability_bins(confidence, kept.argmax(axis=1) == truth)
    classes = list(range(len(LABELS)))
    result.update(
        {
            "ece": expected_calibration_error(bins),
            "log_loss": float(log_loss(truth, kept, labels=classes)),
            "brier": float(brier_score_loss(truth, kept, labels=classes)),
            "mean_confidence": float(confidence.mean()),
            "accuracy": float((kept.argmax(axis=1) == truth).mean()),
            "bins": bins,
        }
    )
    return result


def rescaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities the same logits give at temperature T (rows of LABELS)."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    exp = np.exp(logp)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(gold: Sequence[str], probs: np.ndarray) -> float:
    """The temperature T that minimises the log loss of `rescaled(probs, T)` on these rows.

    Fitted from the probabilities (log p differs from the logits by a constant per row, which the
    softmax ignores), so a scored output is all it needs; rows without probabilities are skipped.
    T > 1 softens an overconfident model, T < 1 sharpens a timid one.
    """
    usable, kept, truth = _usable_rows(gold, probs)
    if not usable.any():
        raise ValueError("no row has probabilities to fit a temperature on")
    rows = np.arange(len(truth))

    def loss(log_t: float) -> float:
        return float(-np.log(rescaled(kept, np.exp(log_t))[rows, truth] + 1e-300).mean())

    low, high = np.log(TEMPERATURE_RANGE)
    return float(np.exp(minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-4}).x))
