"""Prompt wording and reasoning-chain parsing shared by every student backend.

The chain format is the teacher's (MulCoT-RD): five quoted fields in a fixed order, the last one
`"Prediction": <label>`. Parsing is tolerant because small students drift from the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .schema import CHAIN_FIELDS

CHAIN_KEYS = ("Text_analysis", "Image_analysis", "Conflict_resolution", "Final_conclusion", "Prediction")
PREDICTION_PREFIX = '"Prediction":'

MSC_TASK = (
    "Analyse the sentiment of this social-media post from its text and image. "
    "Answer with the fields Text_analysis, Image_analysis, Conflict_resolution, Final_conclusion "
    "and Prediction (positive, neutral or negative)."
)
MASC_TASK = (
    "Analyse the sentiment this social-media post expresses toward the target aspect '{aspect}', "
    "from its text and image. Answer with the fields Text_analysis, Image_analysis, "
    "Conflict_resolution, Final_conclusion and Prediction (positive, neutral or negative)."
)
LABEL_TASK_MSC = "Classify the sentiment of this social-media post as positive, neutral or negative."
LABEL_TASK_MASC = (
    "Classify the sentiment this social-media post expresses toward the target aspect '{aspect}' "
    "as positive, neutral or negative."
)

def task_instruction(aspect: str | None, reasoning: bool) -> str:
    """MSC wording for posts without an aspect, MASC wording for posts with one."""
    if aspect:
        return (MASC_TASK if reasoning else LABEL_TASK_MASC).format(aspect=aspect)
    return MSC_TASK if reasoning else LABEL_TASK_MSC

_LABEL_RE = re.compile(r"\b(positive|neutral|negative)\b", re.IGNORECASE)
_PREDICTION_RE = re.compile(r"prediction", re.IGNORECASE)

def extract_label(text: str | None) -> str | None:
    """First of positive/neutral/negative after the last `Prediction` marker (DESIGN.md section 2)."""
    if not text:
        return None
    markers = list(_PREDICTION_RE.finditer(text))
    if not markers:
        return None
    match = _LABEL_RE.search(text, markers[-1].end())
    return match.group(1).lower() if match else None

@dataclass(frozen=True)
class Chain:
    """A parsed reasoning chain; a field the model did not write is None."""

    text_analysis: str | None
    image_analysis: str | None
    conflict_resolution: str | None
    final_conclusion: str | None
    label: str | None

    @property
    def has_analyses(self) -> bool:
        """All four analysis fields are there (the Prediction is checked on its own)."""
        return all((self.text_analysis, self.image_analysis, self.conflict_resolution, self.final_conclusion))

    def fields(self) -> dict[str, str | None]:
        values = (self.text_analysis, self.image_analysis, self.conflict_resolution, self.final_conclusion)
        return {**dict(zip(CHAIN_FIELDS, values)), "rationale_label": self.label}

_FIELD_RE = re.compile(r'"?(' + "|".join(CHAIN_KEYS) + r')"?\s*:\s*', re.IGNORECASE)

def parse_chain(text: str | None) -> Chain:
    """Split a generated chain into its fields, whatever order or quoting the model used."""
    if not text:
        return Chain(None, None, None, None, None)
    found: dict[str, str] = {}
    matches = list(_FIELD_RE.finditer(text))
    for match, following in zip(matches, matches[1:] + [None]):
        key = match.group(1).lower()
        end = following.start() if following else len(text)
        value = text[match.end() : end].strip().rstrip(",").strip().strip('"').strip()
        found.setdefault(key, value)
    return Chain(
        text_analysis=found.get("text_analysis") or None,
        image_analysis=found.get("image_analysis") or None,
        conflict_resolution=found.get("conflict_resolution") or None,
        final_conclusion=found.get("final_conclusion") or None,
        label=extract_label(text),
    )

def format_chain(fields: dict[str, str], label: str) -> str:
    """The teacher's layout of a chain; used as a training target and in tests."""
    parts = [f'"{key}": "{fields[key.lower()]}"' for key in CHAIN_KEYS[:-1]]
    return "\n\n".join(parts + [f'"Prediction": {label}'])

