"""`mulcot-batch evaluate`: a scored output against gold labels (and reference chains).

The scored output and the gold file are matched on the id column. Ids on one side only make the
job fail with both counts, unless the user asks for the rows in both (`allow_partial`): a silently
shrunk evaluation set would make numbers from different runs incomparable. With `score_first`, the
labelled input is scored into a folder first (the same job as `mulcot-batch score`), then evaluated.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .console import say
from .errors import JobError, missing_column
from .metrics import evaluate_calibration, evaluate_chains, evaluate_labels
from .prompts import extract_label
from .schema import LABELS

DEFAULT_REFERENCE_COL = "rationale"
#: Internal column names after the join; the user's names only matter when reading.
ID, PRED, CHAIN, STATUS, GOLD, REFERENCE = "__id", "__pred", "__chain", "__status", "__gold", "__reference"
#: The scored output's probability columns, in `LABELS` order.
PROBABILITIES = [f"p_{label}" for label in LABELS]


@dataclass
class EvaluateOptions:
    """Every option of `mulcot-batch evaluate`."""

    scored: str
    gold: str | None = None
    label_col: str = "label"
    reference_col: str | None = None  # None: `rationale` when the gold file has it
    id_col: str = "post_id"
    json_path: str | None = None
    allow_partial: bool = False
    meteor: bool = True
    cosine: bool = True
    score_first: bool = False
    score_out: str | None = None
    score_options: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False


def read_parquet_input(path: Path, what: str) -> pl.DataFrame:
    """A mulcot-batch output folder (its parts), a Parquet file, or a folder of Parquet files."""
    if (path / "parts").is_dir():
        files = sorted((path / "parts").glob("part-*.parquet"))
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise JobError(f"{what} not found: {path}")
    if not files:
        raise JobError(f"{what} holds no Parquet files: {path}")
    try:
        return pl.read_parquet(files, missing_columns="insert") if len(files) > 1 else pl.read_parquet(files[0])
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise JobError(f"{what} is not readable Parquet: {path} ({exc})") from None


def _require(frame: pl.DataFrame, columns: dict[str, str], what: str, path: Path) -> None:
    """`columns`: each required column and the option that names another."""
    for name, option in columns.items():
        if name not in frame.columns:
            raise missing_column(f"{what} {path}", name, frame.columns, f"name the right one with {option}")


def _unique_ids(frame: pl.DataFrame, what: str, path: Path) -> pl.DataFrame:
    """Null ids are dropped (a scored error row may have one); a repeated id is a bad job."""
    frame = frame.filter(pl.col(ID).is_not_null())
    duplicated = frame.height - frame[ID].n_unique()
    if duplicated:
        example = frame.filter(pl.col(ID).is_duplicated())[ID][0]
        raise JobError(f"{what} {path} has {duplicated} repeated ids (e.g. {example!r}); ids must be unique")
    return frame


def load_scored(path: Path, id_col: str) -> pl.DataFrame:
    """Id, predicted label, chain (null when none), status and label probabilities of every scored row."""
    frame = read_parquet_input(path, "scored output")
    _require(frame, {id_col: "--id-col"}, "scored output", path)
    if "label" not in frame.columns:
        raise missing_column(f"scored output {path}", "label", frame.columns,
                             "SCORED is an output of `mulcot-batch score`; to score a labelled input first, add --score-first")
    exprs = [
        pl.col(id_col).cast(pl.String).alias(ID),
        pl.col("label").cast(pl.String).alias(PRED),
        (pl.col("rationale").cast(pl.String) if "rationale" in frame.columns else pl.lit(None, pl.String)).alias(CHAIN),
        (pl.col("status") if "status" in frame.columns else pl.lit("ok")).alias(STATUS),
        (pl.col("model") if "model" in frame.columns else pl.lit(None, pl.String)).alias("model"),
        *[(pl.col(p) if p in frame.columns else pl.lit(None)).cast(pl.Float64).alias(p) for p in PROBABILITIES],
    ]
    return _unique_ids(frame.select(exprs), "scored output", path)


def _normalised(labels: pl.Expr) -> pl.Expr:
    """As `metrics.labels.normalise_label`: case and surrounding spaces ignored, anything else null."""
    cleaned = labels.str.strip_chars().str.to_lowercase()
    return pl.when(cleaned.is_in(list(LABELS))).then(cleaned).otherwise(None)


def load_gold(path: Path, id_col: str, label_col: str, reference_col: str | None) -> tuple[pl.DataFrame, str | None]:
    """Id, gold label and reference chain; every gold label must be one of the three."""
    frame = read_parquet_input(path, "gold file")
    required = {id_col: "--id-col", label_col: "--label-col"} | ({reference_col: "--reference-col"} if reference_col else {})
    _require(frame, required, "gold file", path)
    if reference_col is None and DEFAULT_REFERENCE_COL in frame.columns:
        reference_col = DEFAULT_REFERENCE_COL
    gold = frame.select(
        pl.col(id_col).cast(pl.String).alias(ID),
        _normalised(pl.col(label_col).cast(pl.String)).alias(GOLD),
        (pl.col(reference_col).cast(pl.String) if reference_col else pl.lit(None, pl.String)).alias(REFERENCE),
        pl.col(label_col).cast(pl.String).alias("__raw_label"),
    )
    bad = gold.filter(pl.col(GOLD).is_null())
    if bad.height:
        examples = ", ".join(repr(v) for v in bad["__raw_label"].unique().head(3).to_list())
        raise JobError(
            f"gold file {path}: {bad.height} rows have a {label_col!r} value that is not "
            f"{'/'.join(LABELS)} (e.g. {examples})"
        )
    return _unique_ids(gold.drop("__raw_label"), "gold file", path), reference_col


def match_ids(scored: pl.DataFrame, gold: pl.DataFrame, allow_partial: bool) -> tuple[pl.DataFrame, dict[str, int]]:
    """Rows in both, in scored order; ids on one side only fail the job unless `allow_partial`."""
    only_scored = scored.join(gold, on=ID, how="anti").height
    only_gold = gold.join(scored, on=ID, how="anti").height
    joined = scored.join(gold, on=ID, how="inner", maintain_order="left")
    counts = {
        "scored": scored.height,
        "gold": gold.height,
        "evaluated": joined.height,
        "scored_not_in_gold": only_scored,
        "gold_not_in_scored": only_gold,
    }
    if (only_scored or only_gold) and not allow_partial:
        raise JobError(
            f"the gold file does not match the scored ids: {only_scored} scored ids are missing from the gold "
            f"file and {only_gold} gold ids are missing from the scored output ({joined.height} in both); "
            "pass --allow-partial to evaluate only the ids in both"
        )
    if joined.height == 0:
        raise JobError("no id is in both the scored output and the gold file")
    return joined, counts


def evaluate_frame(joined: pl.DataFrame, has_reference: bool, meteor: bool = True, cosine: bool = True) -> dict:
    """Label metrics over every matched row, calibration over those with probabilities, chain
    metrics when the scored rows carry chains."""
    report: dict[str, Any] = {
        "error_rows": int((joined[STATUS] == "error").sum()),
        "labels": evaluate_labels(joined[GOLD].to_list(), joined[PRED].to_list()),
        "calibration": evaluate_calibration(joined[GOLD].to_list(), joined.select(PROBABILITIES).to_numpy()),
        "chains": None,
    }
    chains = joined[CHAIN].to_list()
    if any(c and c.strip() for c in chains):
        references = joined[REFERENCE].to_list() if has_reference else None
        report["chains"] = evaluate_chains(chains, references, joined[GOLD].to_list(), meteor=meteor, cosine=cosine)
        with_chain = joined.filter(pl.col(CHAIN).str.strip_chars().str.len_chars() > 0)
        own = [extract_label(c) for c in with_chain[CHAIN].to_list()]
        agree = [o == p for o, p in zip(own, with_chain[PRED].to_list()) if p is not None]
        report["chains"]["agreement_with_scored_label"] = sum(agree) / len(agree) if agree else None
    return report


def score_first(opts: EvaluateOptions) -> Path:
    """Score the labelled input into `score_out` (resuming as `score` does); returns that folder."""
    from .engine import ScoreOptions
    from .scoring_job import execute

    execute(ScoreOptions(inputs=[opts.scored], out=opts.score_out, id_col=opts.id_col, **opts.score_options))
    return Path(opts.score_out)


@dataclass
class MatchedRows:
    """The scored rows joined to their gold labels, and where each side came from."""

    joined: pl.DataFrame
    counts: dict[str, int]
    scored_path: Path
    gold_path: Path
    reference_col: str | None


def matched_rows(opts: EvaluateOptions) -> MatchedRows:
    """(Score,) read and match: the gold file is checked before any time is spent on scoring."""
    if not opts.gold and not opts.score_first:
        raise JobError("--gold is required (or --score-first, which takes the labels from the input)")
    if opts.score_first and not opts.score_out:
        raise JobError("--score-first needs --out DIR, the folder the labelled input is scored into")
    gold_path = Path(opts.gold or opts.scored)
    gold, reference_col = load_gold(gold_path, opts.id_col, opts.label_col, opts.reference_col)
    scored_path = score_first(opts) if opts.score_first else Path(opts.scored)
    scored = load_scored(scored_path, opts.id_col)
    partial = opts.allow_partial or (opts.score_first and opts.score_options.get("limit") is not None)
    joined, counts = match_ids(scored, gold, partial)
    return MatchedRows(joined, counts, scored_path, gold_path, reference_col)


def run_evaluation(opts: EvaluateOptions) -> dict:
    """The whole job: (score,) read, match, measure, write JSON; returns the report."""
    matched = matched_rows(opts)
    joined, reference_col = matched.joined, matched.reference_col
    if reference_col is not None and (opts.meteor or opts.cosine):
        # MiniLM on CPU takes minutes for a thousand long chains (about 2 chains/s on 2 busy cores)
        say(f"measuring {joined.height:,} rows (chain similarity may take a few minutes on CPU)...", opts.quiet)
    report = {
        "scored": str(matched.scored_path),
        "gold": str(matched.gold_path),
        "label_col": opts.label_col,
        "reference_col": reference_col,
        "models": sorted(m for m in joined["model"].unique().to_list() if m is not None),
        "rows": matched.counts,
        **evaluate_frame(joined, reference_col is not None, opts.meteor, opts.cosine),
    }
    if opts.json_path:
        write_json(Path(opts.json_path), report)
    return report


def write_json(path: Path, report: dict) -> None:
    """Written under a temporary name and renamed, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
