"""Classification metrics over the three sentiment labels, computed with scikit-learn.

Accuracy alone hides a neutral-heavy set (T15 train is 59% neutral), so macro-F1 and the
per-class numbers are always reported beside it, as the paper does.
"""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ..schema import LABELS

#: The column of the confusion matrix for rows with no usable prediction (error rows, unparseable chains).
NO_PREDICTION = "none"


def normalise_label(value: object) -> str | None:
    """'Positive ', 'NEGATIVE' -> the canonical label; anything else (null, 'mixed', '') -> None."""
    if not isinstance(value, str):
        return None
    label = value.strip().lower()
    return label if label in LABELS else None


def evaluate_labels(gold: Sequence[str], pred: Sequence[str | None]) -> dict:
    """Accuracy, weighted-F1, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    `gold` must hold only positive/neutral/negative (any case). A prediction that is None or not
    one of the three labels counts as wrong (it lowers accuracy and the recall of its gold class)
    and is counted in the confusion matrix's `none` column, so a model that fails to answer is
    never scored better than one that answers wrongly. F1 averages run over the three labels.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels but pred has {len(pred)}")
    gold_norm = [normalise_label(g) for g in gold]
    unknown = sorted({str(g) for g, n in zip(gold, gold_norm) if n is None})
    if unknown:
        raise ValueError(f"gold labels must be one of {', '.join(LABELS)}; found {', '.join(unknown[:5])}")
    pred_norm = [normalise_label(p) or NO_PREDICTION for p in pred]
    if not gold_norm:
        return {"n": 0, "no_prediction": 0}
    labels = list(LABELS)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold_norm, pred_norm, labels=labels, zero_division=0
    )
    matrix = confusion_matrix(gold_norm, pred_norm, labels=[*labels, NO_PREDICTION])[: len(labels)]
    return {
        "n": len(gold_norm),
        "no_prediction": sum(p == NO_PREDICTION for p in pred_norm),
        "accuracy": float(accuracy_score(gold_norm, pred_norm)),
        "weighted_f1": float(f1_score(gold_norm, pred_norm, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(gold_norm, pred_norm, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {
            "rows_gold": labels,
            "columns_predicted": [*labels, NO_PREDICTION],
            "counts": matrix.astype(int).tolist(),
        },
    }
