"""One worked example per metric, pinned, so a library upgrade that changes a number is noticed.

Each expected value is worked out by hand in the comment beside it (or is the value the library
documents), not just copied from a run.
"""

from __future__ import annotations

import pytest

import numpy as np

from mulcot_batch.metrics import evaluate_calibration, evaluate_chains, evaluate_labels
from mulcot_batch.metrics.calibration import fit_temperature, rescaled
from mulcot_batch.metrics.chains import bleu_scores, distinct_n, is_complete, meteor_scores, rouge_l_scores
from mulcot_batch.metrics.embeddings import load_encoder, pairwise_cosine
from mulcot_batch.metrics.wordnet import LEXNAMES, load_wordnet
from mulcot_batch.prompts import format_chain

FIELDS = {
    "text_analysis": "The text praises the match.",
    "image_analysis": "The image shows happy fans.",
    "conflict_resolution": "No conflict.",
    "final_conclusion": "The post is positive.",
}


def test_label_metrics_worked_example():
    gold = ["positive", "positive", "neutral", "neutral", "negative", "negative"]
    pred = ["positive", "neutral", "neutral", "neutral", "negative", None]
    result = evaluate_labels(gold, pred)
    assert result["n"] == 6 and result["no_prediction"] == 1
    assert result["accuracy"] == pytest.approx(4 / 6)
    # positive P 1/1 R 1/2 F 2/3; neutral P 2/3 R 2/2 F 4/5; negative P 1/1 R 1/2 F 2/3
    assert result["per_class"]["neutral"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)
    assert result["weighted_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)  # equal supports
    assert result["confusion_matrix"]["columns_predicted"] == ["positive", "neutral", "negative", "none"]
    assert result["confusion_matrix"]["counts"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1]]


def test_label_metrics_normalise_case_and_refuse_unknown_gold():
    assert evaluate_labels([" Positive"], ["POSITIVE"])["accuracy"] == 1.0
    with pytest.raises(ValueError, match="mixed"):
        evaluate_labels(["mixed"], ["positive"])


def test_calibration_worked_example():
    gold = ["positive", "neutral", "negative", "neutral"]
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [np.nan] * 3], dtype=np.float32)
    result = evaluate_calibration(gold, probs)
    assert result["n"] == 3 and result["without_probabilities"] == 1  # the error row is left out, counted
    # top-label confidences 0.9 (right), 0.7 (right), 0.5 (wrong), one per bin: (0.1 + 0.3 + 0.5) / 3
    assert result["ece"] == pytest.approx(0.3)
    assert result["log_loss"] == pytest.approx(-(np.log(0.9) + np.log(0.7) + np.log(0.2)) / 3)
    # sum over labels of squared error: 0.02, 0.14, 0.98
    assert result["brier"] == pytest.approx((0.02 + 0.14 + 0.98) / 3)
    assert result["mean_confidence"] == pytest.approx(0.7) and result["accuracy"] == pytest.approx(2 / 3)
    populated = [(b["from"], b["to"], b["n"], b["accuracy"]) for b in result["bins"] if b["n"]]
    assert populated == [(0.4, 0.5, 1, 0.0), (0.6, 0.7, 1, 1.0), (0.8, 0.9, 1, 1.0)]


def test_calibration_tells_an_overconfident_model_from_an_honest_one():
    gold = ["positive"] * 4 + ["negative"]  # 80% of the posts are positive
    honest = np.array([[0.8, 0.1, 0.1]] * 5)  # says 0.8 and is right 4 times in 5
    overconfident = np.array([[0.99, 0.005, 0.005]] * 5)
    assert evaluate_calibration(gold, honest)["ece"] == pytest.approx(0.0, abs=1e-9)
    assert evaluate_calibration(gold, overconfident)["ece"] == pytest.approx(0.19)
    assert evaluate_calibration(gold, overconfident)["log_loss"] > evaluate_calibration(gold, honest)["log_loss"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_temperature", [2.5, 0.5])
def test_fitted_temperature_recovers_how_over_or_underconfident_a_model_is(true_temperature: float):
    """Gold labels drawn from softmax(z / T): a model that reports softmax(z) is off by exactly T."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(4000, 3))
    gold = [("negative", "neutral", "positive")[rng.choice(3, p=row)] for row in _softmax(logits / true_temperature)]
    reported = _softmax(logits)[:, [2, 1, 0]]  # columns in LABELS order: positive, neutral, negative
    fitted = fit_temperature(gold, reported)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    repaired = rescaled(reported, fitted)
    assert (repaired.argmax(axis=1) == reported.argmax(axis=1)).all()  # no label changes
    before, after = evaluate_calibration(gold, reported), evaluate_calibration(gold, repaired)
    assert after["ece"] < 0.03 < before["ece"] and after["log_loss"] < before["log_loss"]


def test_temperature_one_changes_nothing_and_rows_without_probabilities_are_skipped():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [np.nan] * 3])
    assert rescaled(probs[:2], 1.0) == pytest.approx(probs[:2])
    assert np.isfinite(fit_temperature(["positive", "negative", "neutral"], probs))
    with pytest.raises(ValueError, match="no row has probabilities"):
        fit_temperature(["positive"], np.array([[np.nan] * 3]))


def test_calibration_without_any_probability_or_with_an_unknown_gold_label():
    assert evaluate_calibration(["positive"], np.array([[np.nan] * 3])) == {"n": 0, "without_probabilities": 1}
    with pytest.raises(ValueError, match="mixed"):
        evaluate_calibration(["mixed"], np.array([[0.5, 0.3, 0.2]]))


def test_bleu_worked_example():
    # 1-4 gram precisions 5/6, 3/5, 1/4, and 0/3 smoothed to 1/(2*3); brevity penalty exp(1 - 7/6)
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25 * 2.718281828459045 ** (1 - 7 / 6)
    assert bleu_scores(["the cat sat on the mat"], ["the cat was sitting on the mat"]) == [pytest.approx(expected, abs=1e-6)]


def test_rouge_l_worked_example():
    # LCS "the cat on the mat" = 5 tokens; P 5/6, R 5/7, F 2PR/(P+R) = 10/13
    assert rouge_l_scores(["the cat sat on the mat"], ["the cat was sitting on the mat"]) == [pytest.approx(10 / 13)]


def test_distinct_worked_example():
    texts = ["a b a b", "a c"]  # unigrams 6, unique 3; bigrams ab ba ab ac: 4, unique 3
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)


def test_chain_form_and_agreement():
    good = format_chain(FIELDS, "positive")
    no_image = good.replace('"Image_analysis"', '"Picture"')
    result = evaluate_chains([good, no_image, None, "  "], labels=["positive", "negative", "positive", "neutral"])
    assert result["rows"] == 4 and result["chains"] == 2
    assert result["complete_share"] == 0.5 and is_complete(good) and not is_complete(no_image)
    assert result["label_agreement"] == 0.5
    assert "bleu" not in result  # no references given


def test_lexnames_table_is_wordnet_30():
    assert len(LEXNAMES) == 45 and LEXNAMES[3] == "noun.Tops" and LEXNAMES[44] == "adj.ppl"


@pytest.fixture(scope="module")
def wordnet():
    loaded = load_wordnet()
    if loaded.reader is None:
        pytest.skip(f"METEOR unavailable: {loaded.unavailable}")
    return loaded.reader


def test_meteor_worked_example(wordnet):
    # nltk's documented example (nltk.translate.meteor_score docstring): 0.6944
    hypothesis = "It is a guide to action which ensures that the military always obeys the commands of the party"
    reference = "It is a guide to action that ensures that the military will forever heed Party commands"
    assert meteor_scores([hypothesis], [reference], wordnet) == [pytest.approx(0.6944, abs=5e-5)]
    # "hound" matches "dog" only through a WordNet synonym set: one chunk of 5 matches
    assert meteor_scores(["this is a good hound"], ["this is a good dog"], wordnet) == [pytest.approx(1 - 0.5 / 125)]


def test_minilm_embeddings_are_the_published_ones():
    encoder = load_encoder()
    vector = encoder.encode(["This is an example sentence"])[0]
    # the model card's sentence-transformers output for this sentence starts like this
    assert vector[:5] == pytest.approx([0.0677, 0.0635, 0.0487, 0.0793, 0.0374], abs=1e-4)
    same = pairwise_cosine(encoder, ["a happy crowd at the beach"], ["a happy crowd at the beach"])
    assert same[0] == pytest.approx(1.0, abs=1e-5)


def test_evaluate_chains_against_references(wordnet):
    chain = format_chain(FIELDS, "positive")
    result = evaluate_chains([chain, None], [chain, chain], ["positive", "positive"])
    assert result["pairs"] == 1
    assert result["bleu"] == pytest.approx(1.0) and result["rouge_l_f1"] == pytest.approx(1.0)
    assert result["meteor"] > 0.99 and result["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert result["meteor_wordnet"].startswith("WordNet 3.0")


def test_meteor_reported_unavailable_not_approximated(monkeypatch):
    from mulcot_batch.metrics import wordnet as wordnet_module

    absent = wordnet_module.WordNet(None, "", "no WordNet found offline; install wordnet-base")
    monkeypatch.setattr(wordnet_module, "load_wordnet", lambda: absent)
    result = evaluate_chains(["a b c"], ["a b d"], cosine=False)
    assert result["meteor"] is None and "wordnet-base" in result["unavailable"]["meteor"]
    assert result["bleu"] is not None


def test_wordnet_folder_without_database_is_absent(monkeypatch, tmp_path):
    from mulcot_batch.metrics import wordnet as wordnet_module

    monkeypatch.setenv(wordnet_module.WORDNET_ENV, str(tmp_path))
    assert wordnet_module._database_folder() is None
