"""The evaluation report as rich tables: headline numbers, per class, confusion matrix, chains;
and the before/after table of `calibrate`."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def headline_table(report: dict) -> Table:
    rows, labels = report["rows"], report["labels"]
    table = Table(title=f"mulcot-batch evaluate: {report['scored']} vs {report['gold']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("model", ", ".join(report["models"]) or "n/a")
    table.add_row("rows evaluated", f"{rows['evaluated']:,} (scored {rows['scored']:,}, gold {rows['gold']:,})")
    if rows["scored_not_in_gold"] or rows["gold_not_in_scored"]:
        table.add_row(
            "left out (--allow-partial)",
            f"{rows['scored_not_in_gold']:,} scored ids not in gold, {rows['gold_not_in_scored']:,} gold ids not scored",
        )
    table.add_row("error rows / no prediction", f"{report['error_rows']:,} / {labels['no_prediction']:,}")
    table.add_row("accuracy", _num(labels.get("accuracy")))
    table.add_row("weighted-F1", _num(labels.get("weighted_f1")))
    table.add_row("macro-F1", _num(labels.get("macro_f1")))
    calibration = report["calibration"]
    if calibration.get("ece") is None:
        table.add_row("calibration", "n/a (no row has p_* probabilities)")
    else:
        table.add_row(
            "ECE / log loss / Brier",
            f"{_num(calibration['ece'])} / {_num(calibration['log_loss'])} / {_num(calibration['brier'])}",
        )
        if calibration["without_probabilities"]:
            table.add_row("rows without probabilities", f"{calibration['without_probabilities']:,}")
    return table


def per_class_table(labels: dict) -> Table:
    table = Table(title="per class")
    for name in ("label", "precision", "recall", "F1", "support"):
        table.add_column(name, justify="left" if name == "label" else "right")
    for label, values in labels["per_class"].items():
        table.add_row(label, _num(values["precision"]), _num(values["recall"]), _num(values["f1"]), f"{values['support']:,}")
    return table


def confusion_table(labels: dict) -> Table:
    matrix = labels["confusion_matrix"]
    table = Table(title="confusion matrix (rows: gold, columns: predicted)")
    table.add_column("gold \\ predicted")
    for name in matrix["columns_predicted"]:
        table.add_column(name, justify="right")
    for gold, counts in zip(matrix["rows_gold"], matrix["counts"]):
        table.add_row(gold, *(f"{c:,}" for c in counts))
    return table


def reliability_table(calibration: dict) -> Table:
    """One row per populated confidence bin: a reliability diagram in text."""
    table = Table(title="reliability: top label's probability vs how often it is right")
    for name in ("confidence bin", "posts", "mean confidence", "accuracy"):
        table.add_column(name, justify="left" if name == "confidence bin" else "right")
    for row in calibration["bins"]:
        if row["n"]:
            bounds = f"{row['from']:.1f}-{row['to']:.1f}"
            table.add_row(bounds, f"{row['n']:,}", _num(row["confidence"], 3), _num(row["accuracy"], 3))
    return table


def chains_table(chains: dict) -> Table:
    table = Table(title="reasoning chains", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("rows with a chain", f"{chains['chains']:,} of {chains['rows']:,}")
    table.add_row("complete (all five fields)", _share(chains["complete_share"]))
    table.add_row("Prediction agrees with gold", _share(chains.get("label_agreement")))
    table.add_row("Prediction agrees with scored label", _share(chains.get("agreement_with_scored_label")))
    table.add_row("distinct-1 / distinct-2", f"{_num(chains['distinct_1'])} / {_num(chains['distinct_2'])}")
    if "pairs" in chains:
        table.add_row("pairs with a reference chain", f"{chains['pairs']:,}")
        for key, name in (("bleu", "BLEU"), ("rouge_l_f1", "ROUGE-L F1"), ("meteor", "METEOR"), ("cosine", "MiniLM cosine")):
            reason = chains["unavailable"].get(key)
            table.add_row(name, f"unavailable: {reason}" if reason else _num(chains.get(key)))
    else:
        table.add_row("similarity to references", "n/a (the gold file has no reference chains)")
    return table


def report_tables(report: dict) -> Group:
    """Everything a person reads after `evaluate`; the JSON holds the same numbers."""
    parts = [headline_table(report), per_class_table(report["labels"]), confusion_table(report["labels"])]
    if report["calibration"].get("ece") is not None:
        parts.append(reliability_table(report["calibration"]))
    if report["chains"] is not None:
        parts.append(chains_table(report["chains"]))
    return Group(*parts)


def calibration_fit_table(report: dict) -> Group:
    """`calibrate`: the fitted temperature and the dev split's calibration before and after it."""
    before, after = report["before"], report["after"]
    table = Table(title=f"mulcot-batch calibrate: {report['model']} on {report['dev']}")
    for name in ("", "before", "after"):
        table.add_column(name, justify="left" if not name else "right")
    table.add_row("label temperature", _num(report["temperature_before"]), _num(report["temperature"]))
    for key, name in (("ece", "ECE"), ("log_loss", "log loss"), ("brier", "Brier"), ("mean_confidence", "mean confidence")):
        table.add_row(name, _num(before.get(key)), _num(after.get(key)))
    table.add_row("accuracy (unchanged)", _num(before.get("accuracy")), _num(after.get("accuracy")))
    return Group(table, reliability_table(after))
