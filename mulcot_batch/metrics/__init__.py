"""Evaluation metrics: labels and their probabilities (scikit-learn), reasoning chains (sacrebleu,
rouge-score, nltk, MiniLM).

`evaluate_labels`, `evaluate_calibration` and `evaluate_chains` are the entry points; the training
code calls `evaluate_labels` on dev predictions, `mulcot-batch evaluate` all three on a scored output.
"""

from .calibration import evaluate_calibration
from .chains import evaluate_chains
from .labels import evaluate_labels

__all__ = ["evaluate_calibration", "evaluate_chains", "evaluate_labels"]
