"""Evaluation metrics: labels (scikit-learn) and reasoning chains (sacrebleu, rouge-score, nltk, MiniLM).

`evaluate_labels` and `evaluate_chains` are the entry points; the training code calls them on dev
predictions, `mulcot-batch evaluate` on a scored output.
"""

from .chains import evaluate_chains
from .labels import evaluate_labels

__all__ = ["evaluate_chains", "evaluate_labels"]
