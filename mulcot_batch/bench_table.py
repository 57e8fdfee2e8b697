"""The rich tables of `mulcot-batch bench`, printed from the same dict that `--json` writes."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


def runs_table(result: dict) -> Table:
    machine = result["machine"]
    title = (f"mulcot-batch bench: {result['input']['posts']} posts, {result['model']['name']}, "
             f"{machine['dtype']} on {machine['device']} ({machine['threads']} threads)")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for header in ("run", "posts", "s", "posts/s", "tok/s", "speed-up", "ceiling", "MiB", "labels"):
        table.add_column(header, justify="left" if header in ("run", "labels") else "right", no_wrap=header != "labels")
    for run in result["runs"]:
        table.add_row(
            run["name"],
            str(run["posts"]),
            f"{run['seconds']:.1f}",
            _num(run["posts_per_s"]) if run["stable"] else Text("unstable", style="yellow"),
            _num(run["tokens_per_s"], "{:.0f}"),
            _num(run["speedup_over_baseline"], "{:.2f}x"),
            _num(run["share_of_ceiling"], "{:.0%}"),
            _num(run["peak_memory_mb"], "{:.0f}"),
            _labels_cell(run.get("labels_vs_baseline")),
        )
    return table


def _labels_cell(check: dict | None) -> Text | str:
    if check is None:
        return ""
    if check["identical"]:
        return Text(f"same ({check['compared']})", style="green")
    return Text(f"{check['differ']}/{check['compared']} differ", style="red")


def ceiling_text(result: dict) -> Text:
    c = result["ceiling"]
    peak = c["peak_matmul_flops"] / 1e9
    line = (f"ceiling: {peak:.0f} GFLOP/s measured matmul peak ({result['machine']['dtype']}); "
            f"{_num(c['label_flops_per_post'] and c['label_flops_per_post'] / 1e9)} GFLOP per post for a label "
            f"(image encoder included) -> at best {_num(c['labels_posts_per_s'], '{:.1f}')} posts/s for labels; "
            f"{_num(c['decode_flops_per_token'] / 1e6, '{:.0f}')} MFLOP per generated token")
    return Text(line)


def duplicates_text(result: dict) -> Text | None:
    dup = result.get("duplicates")
    if not dup:
        return None
    if dup["time_ratio"] is None:
        return Text(f"duplicates: no stable figure ({dup['note']})", style="yellow")
    d, r = dup["distinct"], dup["half_repeated"]
    return Text(
        f"duplicates: {dup['posts']} posts, half exact repeats: {r['seconds']:.1f} s vs {d['seconds']:.1f} s for distinct posts "
        f"= {dup['time_ratio']:.2f}x the time ({r['computed']} vs {d['computed']} posts computed)"
    )


def bench_report(result: dict) -> Group:
    parts = [runs_table(result), ceiling_text(result)]
    dup = duplicates_text(result)
    if dup is not None:
        parts.append(dup)
    parts.append(Text("posts/s and tok/s: measured; speed-up: over the baseline (engine none over baseline labels, "
                      "the others over baseline labels+chains); ceiling: share of the best posts/s the measured "
                      "matmul FLOP/s allows; MiB: peak memory of this process; labels: engine labels equal the "
                      "baseline's generated labels", style="dim"))
    for run in result["runs"]:
        if run["note"]:
            parts.append(Text(f"{run['name']}: {run['note']}", style="yellow"))
        check = run.get("labels_vs_baseline")
        if check and check["examples"]:
            shown = ", ".join(f"{e['post_id']} engine {e['engine']} / baseline {e['baseline']}" for e in check["examples"])
            parts.append(Text(f"{run['name']}: labels differ from the baseline: {shown}", style="red"))
    parts += [Text(f"note: {note}") for note in result["notes"]]
    return Group(*parts)
