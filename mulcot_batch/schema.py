"""The fixed output schema of a scoring job (DESIGN.md section 4).

The schema is decided before the first row is scored, so an error row, a chunk without
rationales or a chunk from a file lacking a kept column never changes it.
"""

from __future__ import annotations

import pyarrow as pa

LABELS: tuple[str, str, str] = ("positive", "neutral", "negative")
IMAGE_STATUSES = ("ok", "none", "missing", "unreadable", "too_large", "outside_root")
CHAIN_FIELDS = ("text_analysis", "image_analysis", "conflict_resolution", "final_conclusion")

SCORE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("aspect", pa.string()),
    ("label", pa.string()),
    ("p_positive", pa.float32()),
    ("p_neutral", pa.float32()),
    ("p_negative", pa.float32()),
    ("confidence", pa.float32()),
    ("rationale", pa.string()),
    *[(name, pa.string()) for name in CHAIN_FIELDS],
    ("rationale_label", pa.string()),
    ("image_status", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("model", pa.string()),
]


def output_schema(id_column: str, kept: list[tuple[str, pa.DataType]]) -> pa.Schema:
    """Id column first (as string), then the pass-through columns, then the scores."""
    fields = [pa.field(id_column, pa.string())]
    fields += [pa.field(name, dtype) for name, dtype in kept]
    fields += [pa.field(name, dtype) for name, dtype in SCORE_COLUMNS]
    return pa.schema(fields)
