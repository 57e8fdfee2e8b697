"""Scored outputs built directly (no model): parts in the real output schema, as `score` writes them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mulcot_batch.prompts import format_chain
from mulcot_batch.schema import LABELS, output_schema

KEPT = [("created_at", pa.timestamp("us")), ("author", pa.string()), ("text", pa.string())]
ASPECTS = ["game", "game", "game", "Obama", "Obama", "iPhone", None, None]
TEXTS = [
    "Great # Game tonight with @ Coach , loved it #win",
    "What #IBM #Watson thinks of you @qz",
    "RT @ OnePerfectShot : BRANDED TO KILL",
    "no tags here, mail me at a@b.com , C# rocks, #1 fan",
    "<script>alert('boom')</script> & <b>bold</b> #Game",
]


def chain(text_label: str, image_label: str, final: str) -> str:
    fields = {
        "text_analysis": f"The words sound {text_label} overall.",
        "image_analysis": f"The picture looks {image_label}.",
        "conflict_resolution": "The text is more explicit than the image.",
        "final_conclusion": f"Taken together the post is {final}.",
    }
    return format_chain(fields, final)


def scored_rows(n: int, seed: int = 0, model: str = "nano", start: datetime = datetime(2015, 3, 1)) -> pa.Table:
    """`n` scored rows: mixed labels, some error rows, chains on the uncertain ones, a week of times."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 2.0
    probs = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    error = rng.random(n) < 0.08
    label_idx = probs.argmax(axis=1)
    rows: dict[str, list] = {name: [] for name in output_schema("post_id", KEPT).names}
    for i in range(n):
        label = LABELS[label_idx[i]]
        rows["post_id"].append(f"{model}-{seed}-{i:05d}")
        rows["created_at"].append(start + timedelta(hours=int(rng.integers(0, 24 * 7))))
        rows["author"].append(f"user{i % 7}")
        rows["text"].append(TEXTS[i % len(TEXTS)])
        rows["aspect"].append(ASPECTS[i % len(ASPECTS)])
        ok = not error[i]
        rows["label"].append(label if ok else None)
        for k, name in enumerate(LABELS):
            rows[f"p_{name}"].append(float(probs[i, k]) if ok else None)
        rows["confidence"].append(float(probs[i].max()) if ok else None)
        explained = ok and probs[i].max() < 0.75
        other = LABELS[(label_idx[i] + 1) % 3]
        text = chain(label if i % 3 else other, other if i % 2 else label, label) if explained else None
        rows["rationale"].append(text)
        rows["text_analysis"].append(f"The words sound {label if i % 3 else other} overall." if explained else None)
        rows["image_analysis"].append(f"The picture looks {other if i % 2 else label}." if explained else None)
        rows["conflict_resolution"].append("The text is more explicit than the image." if explained else None)
        rows["final_conclusion"].append(f"Taken together the post is {label}." if explained else None)
        rows["rationale_label"].append(label if explained else None)
        rows["image_status"].append("ok" if i % 10 else "missing")
        rows["status"].append("ok" if ok else "error")
        rows["error"].append(None if ok else ("empty text and no usable image" if i % 2 else "post id is null"))
        rows["model"].append(model)
    return pa.table(rows).cast(output_schema("post_id", KEPT))


def write_scored(out: Path, table: pa.Table, parts: int = 3, model: str = "nano") -> Path:
    """A `score --out` folder: job.json plus `parts` part files, as the scoring job lays them out."""
    (out / "parts").mkdir(parents=True, exist_ok=True)
    (out / "job.json").write_text(json.dumps({"model": model, "nano_parts": "test", "inputs": [], "options": {}}))
    step = -(-table.num_rows // parts)
    for p in range(parts):
        pq.write_table(table.slice(p * step, step), out / "parts" / f"part-00000-{p:07d}.parquet", compression="zstd")
    return out
