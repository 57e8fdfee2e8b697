"""`report.html`: the report as one self-contained page for people who have never seen the tool.

No script, no web fonts, no links to fetch: inline CSS and inline SVG only, so the file opens
offline, can be mailed as it is, and cannot run anything a post's text smuggles in (every string
from the data is HTML-escaped).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ..schema import LABELS
from . import svg
from .exemplars import LEAST, MOST
from .measures import OTHER
from .modality import modality_summary

if TYPE_CHECKING:
    from .report import Report

NANO_JSON = Path(__file__).resolve().parent.parent / "models" / "nano" / "nano.json"
UNIT_WORDS = {"y": "year", "q": "quarter", "mo": "month", "w": "week", "d": "day", "h": "hour", "m": "minute", "s": "second",
              "ms": "millisecond", "us": "microsecond", "ns": "nanosecond"}  # fmt: skip
CHAIN_TITLES = {
    "text_analysis": "Text analysis",
    "image_analysis": "Image analysis",
    "conflict_resolution": "Conflict resolution",
    "final_conclusion": "Final conclusion",
    "rationale_label": "Prediction in the chain",
}

CSS = """
:root { --pos: #1a9850; --neu: #8c8c8c; --neg: #d73027; --ink: #1d1d1d; --muted: #5b5b5b; --line: #e2e2e2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink); background: #fafafa; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 24px 64px; }
h1 { font-size: 28px; margin: 0 0 4px; } h2 { font-size: 21px; margin: 40px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 17px; margin: 24px 0 6px; }
p { margin: 6px 0 10px; max-width: 78ch; } .muted { color: var(--muted); } .small { font-size: 13px; }
.note { background: #fff6dd; border: 1px solid #f0d98c; padding: 8px 12px; border-radius: 6px; max-width: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin: 16px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .value { font-size: 24px; font-weight: 650; } .card .what { color: var(--muted); font-size: 13px; }
figure { margin: 8px 0 4px; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
svg.chart { width: 100%; height: auto; display: block; } svg.cell { display: inline-block; vertical-align: middle; }
table { border-collapse: collapse; background: #fff; font-size: 14px; margin: 6px 0 12px; }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: middle; }
th { background: #f1f1f1; font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.nowrap { white-space: nowrap; } td:first-child { min-width: 11em; } tr.other td { color: var(--muted); font-style: italic; }
.legend { display: flex; gap: 16px; font-size: 13px; margin: 4px 0; } .swatch { display: inline-block; width: 12px; height: 12px; margin-right: 5px; vertical-align: -1px; border-radius: 2px; }
.chip { display: inline-block; padding: 0 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; }
.chip.positive { background: var(--pos); } .chip.neutral { background: var(--neu); } .chip.negative { background: var(--neg); }
.posts { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 10px; }
article.post { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
article.post .text { font-size: 15px; margin: 0 0 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
article.post .meta { color: var(--muted); font-size: 12.5px; margin: 0 0 6px; overflow-wrap: anywhere; }
dl.chain { margin: 6px 0 0; font-size: 13px; } dl.chain dt { font-weight: 600; margin-top: 4px; } dl.chain dd { margin: 0 0 0 12px; overflow-wrap: anywhere; }
details { margin: 8px 0; } summary { cursor: pointer; font-weight: 600; }
footer { margin-top: 48px; color: var(--muted); font-size: 13px; }
"""


def render_page(report: Report) -> str:
    body = "".join(
        [
            _header(report),
            _labels_section(report),
            _time_section(report),
            _groups_section(report),
            _confidence_section(report),
            _modality_section(report),
            _exemplars_section(report),
            _glossary(),
            _footer(report),
        ]
    )
    title = f"Sentiment report: {report.overall['posts'][0]:,} posts"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


# --- header and key figures -------------------------------------------------------------------


def _header(report: Report) -> str:
    row = report.overall.row(0, named=True)
    models = ", ".join(row["models"]) or "unknown"
    cards = [
        (f"{row['posts']:,}", "posts in the archive"),
        (f"{row['scored']:,}", "scored (got a label)"),
        (f"{row['errors']:,}", "could not be scored"),
        (_signed(row["net_sentiment"]), "net sentiment (-1 to +1)"),
        (_fixed(row["mean_confidence"], ".2f"), "mean confidence"),
        (f"{row['with_rationale']:,}", "with a reasoning chain"),
    ]
    card_html = "".join(
        f'<div class="card"><div class="value">{escape(v)}</div><div class="what">{escape(w)}</div></div>'
        for v, w in cards
    )
    return (
        "<header><h1>Sentiment report</h1>"
        f'<p class="muted">{row["posts"]:,} social-media posts scored by the model <b>{escape(models)}</b>'
        f" with mulcot-batch.</p>"
        "<p>Each post (its text, its image when it has one, and the topic it was asked about, called its "
        "<i>aspect</i>) was read by a small vision-language model that gave it one label: "
        f"{_chip('positive')}, {_chip('neutral')} or {_chip('negative')}, with a probability for each. "
        "For some posts the model also wrote down its reasoning, the <i>chain</i>: what the text says, what the "
        "image shows, how it settled any disagreement between them, and its conclusion. This page adds those "
        "labels up: overall, over time, per group, and with example posts to read.</p>"
        f"{_model_note(row['models'])}"
        f'<div class="cards">{card_html}</div></header>'
    )


def _model_note(models: list[str]) -> str:
    """Say so on the page when the labels come from the embedded nano student without trained parts."""
    if "nano" not in models:
        return ""
    try:
        trained = bool(json.loads(NANO_JSON.read_text()).get("trained"))
    except (OSError, json.JSONDecodeError):
        trained = False
    if trained:
        return ""
    return (
        '<p class="note">Caution: the embedded <b>nano</b> model has no trained weights yet; its labels are the '
        "zero-shot guesses of a small instruction model. Use this page to see what a report looks like, not to "
        "draw conclusions about the posts.</p>"
    )


# --- labels -----------------------------------------------------------------------------------------


def _labels_section(report: Report) -> str:
    row = report.overall.row(0, named=True)
    bars = svg.label_bars([(label, row[f"n_{label}"], row[f"share_{label}"] or 0.0) for label in LABELS])
    means = ", ".join(f"{label} {_fixed(row[f'mean_p_{label}'], '.2f')}" for label in LABELS)
    html = (
        '<section id="labels"><h2>How the posts are labelled</h2>'
        f"<p>Share of the {row['scored']:,} scored posts that got each label. Posts that could not be scored are "
        f"not in these shares; they are counted apart below.</p>"
        f'<figure data-chart="labels">{bars}</figure>'
        f'<p class="small muted">Mean probability the model gave each label, over scored posts: {escape(means)}.</p>'
    )
    return html + _errors_block(row) + "</section>"


def _errors_block(row: dict) -> str:
    if not row["errors"]:
        return "<p>Every post in the archive was scored.</p>"
    lines = "".join(
        f"<tr><td>{escape(r['reason'])}</td><td class=num>{r['posts']:,}</td></tr>" for r in row["errors_by_reason"]
    )
    return (
        f"<h3>Posts that could not be scored: {row['errors']:,}</h3>"
        "<p>These rows are in the archive with no label (for example a post with neither text nor a readable "
        "image). Why, most frequent first:</p>"
        f"<table><tr><th>reason</th><th class=num>posts</th></tr>{lines}</table>"
    )


# --- over time -------------------------------------------------------------------------------------


def _time_section(report: Report) -> str:
    head = '<section id="over-time"><h2>Net sentiment over time</h2>'
    if report.axis is None or report.over_time is None:
        return (
            head + "<p class=muted>No time column was given. Run the report with "
            "<code>--time-col COLUMN --every 1d</code> (any kept timestamp column) to see this chart.</p></section>"
        )
    series = report.over_time.filter(pl.col("by").is_null())
    axis = report.axis
    fmt = "%Y-%m-%d %H:%M" if axis.every[-1] in "hms" or axis.every.endswith(("ns", "us")) else "%Y-%m-%d"
    chart = svg.time_chart(
        series["bucket"].to_list(), series["net_sentiment"].to_list(), series["posts"].to_list(), fmt
    )
    row = report.overall.row(0, named=True)
    missing = row.get("posts_without_time") or 0
    untimed = (
        f" {missing:,} posts have no value in <code>{escape(axis.column)}</code> and are left out here."
        if missing
        else ""
    )
    return (
        head + f"<p>Each point is one {_duration_words(axis.every)} of <code>{escape(axis.column)}</code>. "
        "Net sentiment is (positive posts &minus; negative posts) / scored posts in the bucket: +1 would be all "
        "positive, &minus;1 all negative, 0 balanced. The bars below show how many posts each bucket holds; a point "
        f"resting on few posts says little.{untimed}</p>"
        f'<figure data-chart="over-time">{chart}</figure></section>'
    )


def _duration_words(every: str) -> str:
    """`1d` -> "day", `6h` -> "6 hours", anything unusual as written (`--every 1h30m`)."""
    match = re.fullmatch(r"(\d+)(mo|ms|us|ns|[yqwdhms])", every)
    if not match:
        return f"<b>{escape(every)}</b> bucket"
    count, unit = int(match.group(1)), UNIT_WORDS[match.group(2)]
    return f"<b>{unit}</b>" if count == 1 else f"<b>{count} {unit}s</b> bucket"


# --- groups ----------------------------------------------------------------------------------------


def _groups_section(report: Report) -> str:
    if not report.groups:
        return (
            '<section id="groups"><h2>Groups</h2><p class=muted>No grouping was asked for. Run the report with '
            "<code>--by aspect</code>, <code>--by hashtag</code>, <code>--by mention</code> or "
            "<code>--by COLUMN</code> to compare groups.</p></section>"
        )
    blocks = [_group_block(report, name, table) for name, table in report.groups.items()]
    return (
        '<section id="groups"><h2>Top groups</h2>'
        f"<p>The largest groups first; groups with fewer than {report.options.min_posts:,} posts are added up "
        f"as <i>{OTHER}</i>. {svg.legend()}</p>" + "".join(blocks) + "</section>"
    )


def _group_block(report: Report, name: str, table: pl.DataFrame) -> str:
    top = report.options.top
    shown = pl.concat([table.filter(pl.col("groups") == 1).head(top), table.filter(pl.col("groups") > 1)])
    trends = _group_trends(report, name)
    head = "<tr><th>group</th><th class=num>posts</th><th class=num>% of posts</th><th>labels</th>"
    head += "".join(f"<th class=num>{label}</th>" for label in LABELS)
    head += (
        "<th>net sentiment</th><th class=num>mean confidence</th>"
        + ("<th>trend</th>" if trends is not None else "")
        + "</tr>"
    )
    rows = [_group_row(r, trends) for r in shown.iter_rows(named=True)]
    return (
        f'<h3>By {escape(name)}</h3><p class="small muted">{escape(_key_note(name, table, top))}</p>'
        f'<table data-table="by_{escape(name)}">{head}{"".join(rows)}</table>'
    )


def _key_note(name: str, table: pl.DataFrame, top: int) -> str:
    distinct = int(table["groups"].sum())
    note = f"{distinct:,} distinct values; the top {min(top, distinct)} are shown."
    if name in ("hashtag", "mention"):
        note += (
            f" Read from the post text; a post with several {name}s counts once in each, (none) is posts without one."
        )
    elif name == "aspect":
        note += " The aspect is the topic a post was scored for; (none) is posts scored as a whole."
    return note


def _group_row(row: dict, trends: dict | None) -> str:
    group = "(none)" if row["group"] is None else row["group"]
    other = row["group"] == OTHER and row["groups"] > 1
    if other:
        group = f"{OTHER}: {row['groups']:,} smaller groups"
    shares = {label: row[f"share_{label}"] for label in LABELS}
    cells = [
        f"<td>{escape(group)}</td>",
        f"<td class=num>{row['posts']:,}</td>",
        f"<td class=num>{_pct(row['share_of_posts'])}</td>",
        f"<td>{svg.stacked_shares(shares)}</td>",
        *(f"<td class=num>{_pct(row[f'share_{label}'])}</td>" for label in LABELS),
        f"<td class=nowrap>{svg.net_bar(row['net_sentiment'])} {_signed(row['net_sentiment'])}</td>",
        f"<td class=num>{_fixed(row['mean_confidence'], '.2f')}</td>",
    ]
    if trends is not None:
        cells.append(f"<td>{trends.get(row['group'], '')}</td>")
    return f'<tr class="{"other" if other else ""}">{"".join(cells)}</tr>'


def _group_trends(report: Report, name: str) -> dict | None:
    """Sparkline of net sentiment per group, on the overall series' buckets."""
    if report.over_time is None:
        return None
    series = report.over_time
    buckets = series.filter(pl.col("by").is_null())["bucket"].to_list()
    mine = series.filter(pl.col("by") == name)
    trends = {}
    for (group,), frame in mine.group_by("group", maintain_order=True):
        net = dict(zip(frame["bucket"].to_list(), frame["net_sentiment"].to_list(), strict=False))
        trends[group] = svg.sparkline([net.get(b) for b in buckets])
    return trends


# --- confidence ------------------------------------------------------------------------------------


def _confidence_section(report: Report) -> str:
    table = report.confidence
    first = table.filter(pl.col("label") == LABELS[0])
    bins = list(zip(first["bin_low"].to_list(), first["bin_high"].to_list(), strict=False))
    counts = {label: table.filter(pl.col("label") == label)["posts"].to_list() for label in LABELS}
    return (
        '<section id="confidence"><h2>How sure the model is</h2>'
        "<p>Confidence is the probability the model gave the label it chose: 0.33 is a coin toss between the three "
        "labels, 1.00 is certainty. Posts on the left are the ones worth a second look; the least confident are "
        f"listed in the review queue below. {svg.legend()}</p>"
        f'<figure data-chart="confidence">{svg.histogram(bins, counts)}</figure></section>'
    )


# --- modality --------------------------------------------------------------------------------------


def _modality_section(report: Report) -> str:
    head = '<section id="modality"><h2>Text versus image</h2>'
    table = report.modality
    if table.is_empty():
        return head + (
            "<p class=muted>No scored post has a reasoning chain. Score with <code>--rationales all</code> or "
            "<code>--rationales uncertain</code> to see whether text and image agree.</p></section>"
        )
    s = modality_summary(table)
    intro = (
        f"<p>For the {s['with_chain']:,} posts with a reasoning chain, the sentiment the chain's text analysis "
        "and its image analysis point to is the label word each of them uses (<i>mixed</i>: several different ones, "
        "<i>unclear</i>: none, for example when there is no image). "
    )
    if s["both_labelled"]:
        intro += (
            f"Where both name a sentiment ({s['both_labelled']:,} posts), they differ in <b>{s['conflicts']:,}</b> "
            f"({s['conflicts'] / s['both_labelled']:.0%}). In those conflicts the final label followed the text "
            f"{s['followed_text']:,} times and the image {s['followed_image']:,} times.</p>"
        )
    else:
        intro += "No chain names a sentiment for both the text and the image.</p>"
    head_row = (
        "<tr><th>text says</th><th>image says</th><th class=num>posts</th><th class=num>share</th>"
        + "".join(f"<th class=num>final {label}</th>" for label in LABELS)
        + "<th class=num>final = text</th><th class=num>final = image</th></tr>"
    )
    rows = "".join(_modality_row(r) for r in table.iter_rows(named=True))
    return head + intro + f'<table data-table="modality">{head_row}{rows}</table></section>'


def _modality_row(r: dict) -> str:
    mark = " (conflict)" if r["conflict"] else ""
    return (
        f"<tr><td>{escape(r['text_sentiment'])}</td><td>{escape(r['image_sentiment'])}{mark}</td>"
        f"<td class=num>{r['posts']:,}</td><td class=num>{_pct(r['share'])}</td>"
        + "".join(f"<td class=num>{r[f'final_{label}']:,}</td>" for label in LABELS)
        + f"<td class=num>{r['final_follows_text']:,}</td><td class=num>{r['final_follows_image']:,}</td></tr>"
    )


# --- exemplars -------------------------------------------------------------------------------------


def _exemplars_section(report: Report) -> str:
    ex = report.exemplars
    head = '<section id="exemplars"><h2>Example posts</h2>'
    if ex.is_empty():
        return head + "<p class=muted>No scored posts to show.</p></section>"
    no_text = ex["text"].is_null().all()
    intro = "<p>The posts the model was most sure about, per label, with its reasoning where it wrote one.</p>"
    if no_text:
        intro += (
            '<p class="note">The post texts are not in the scored output. Score with <code>--keep text</code> to see '
            "them here (and to group by hashtag or mention).</p>"
        )
    overall = ex.filter((pl.col("kind") == MOST) & pl.col("by").is_null())
    blocks = [
        f'<h3>Most confident {_chip(label)} posts</h3><div class="posts">{_cards(overall.filter(pl.col("label") == label))}</div>'
        for label in LABELS
    ]
    return head + intro + "".join(blocks) + _group_exemplars(ex) + _review_queue(ex) + "</section>"


def _group_exemplars(ex: pl.DataFrame) -> str:
    grouped = ex.filter((pl.col("kind") == MOST) & pl.col("by").is_not_null())
    out = []
    for (by,), frame in grouped.group_by("by", maintain_order=True):
        inner = []
        for (group,), posts in frame.group_by("group", maintain_order=True):
            inner.append(f"<h4>{escape(str(group))}</h4><div class=posts>{_cards(posts, chain=False)}</div>")
        out.append(
            f"<details><summary>Most confident posts per {escape(by)} (top groups)</summary>{''.join(inner)}</details>"
        )
    return "".join(out)


def _review_queue(ex: pl.DataFrame) -> str:
    queue = ex.filter(pl.col("kind") == LEAST)
    if queue.is_empty():
        return ""
    return (
        "<h3>Review queue: the least confident posts</h3>"
        "<p>Where the model hesitated most between labels, per label it chose. Worth checking by hand.</p>"
        f'<div class="posts">{_cards(queue)}</div>'
    )


def _cards(frame: pl.DataFrame, chain: bool = True) -> str:
    if frame.is_empty():
        return '<p class="muted small">No post with this label.</p>'
    return "".join(_card(r, chain) for r in frame.iter_rows(named=True))


def _card(r: dict, chain: bool) -> str:
    text = (
        f'<p class="text">{escape(r["text"])}</p>'
        if r["text"] is not None
        else '<p class="text muted">(text not kept)</p>'
    )
    meta = [_chip(r["label"]), f"confidence {_fixed(r['confidence'], '.2f')}"]
    if r["aspect"]:
        meta.append(f"aspect: {escape(r['aspect'])}")
    if r["time"] is not None:
        meta.append(escape(str(r["time"])))
    meta.append(f"id {escape(str(r['post_id']))}")
    shares = {label: r[f"p_{label}"] for label in LABELS}
    probs = f"{svg.stacked_shares(shares, width=120, height=10)} " + " ".join(
        f"{label[:3]} {_fixed(shares[label], '.2f')}" for label in LABELS
    )
    body = f'{text}<p class="meta">{" · ".join(meta)}</p><p class="meta">{probs}</p>'
    if chain:
        body += _chain(r)
    return f'<article class="post">{body}</article>'


def _chain(r: dict) -> str:
    if r["rationale"] is None:
        return '<p class="meta">No reasoning chain was generated for this post.</p>'
    items = "".join(
        f"<dt>{title}</dt><dd>{escape(r[field])}</dd>" for field, title in CHAIN_TITLES.items() if r.get(field)
    )
    if not items:
        items = f"<dt>Chain</dt><dd>{escape(r['rationale'])}</dd>"
    return f'<dl class="chain">{items}</dl>'


# --- glossary and footer ---------------------------------------------------------------------------


def _glossary() -> str:
    terms = [
        ("posts", "rows in the scored archive, including those that could not be scored"),
        ("scored", "posts that got a label; every share and mean on this page is over these"),
        ("errors", "posts that could not be scored (the reason is kept with each one)"),
        ("share of a label", "posts with that label / scored posts"),
        ("mean probability", "the average probability the model gave a label, over scored posts"),
        ("confidence", "the probability of the label the model chose, between 1/3 and 1"),
        ("net sentiment", "(positive - negative) / scored, from -1 (all negative) to +1 (all positive)"),
        ("(other)", "all groups smaller than the --min-posts threshold, added up"),
        ("(none)", "posts without a value for the key (no aspect, no hashtag, ...)"),
    ]
    rows = "".join(f"<dt><b>{escape(t)}</b></dt><dd>{escape(d)}</dd>" for t, d in terms)
    return f'<section id="glossary"><h2>What the numbers mean</h2><dl>{rows}</dl></section>'


def _footer(report: Report) -> str:
    opts = report.options
    row = report.overall.row(0, named=True)
    settings = [f"by: {', '.join(opts.by) or 'none'}", f"min posts: {opts.min_posts}", f"top: {opts.top}"]
    if report.axis is not None:
        settings.append(f"time: {report.axis.column} every {report.axis.every}")
    sources = ", ".join(row["sources"])
    return (
        f"<footer><p>Made by <code>mulcot-batch report</code> on {datetime.now().strftime('%Y-%m-%d %H:%M')} "
        f"from {escape(sources)} ({len(report.archive.parts):,} part files). {escape('; '.join(settings))}. "
        "The numbers on this page are also in the Parquet tables beside it (overall, by_&lt;key&gt;, over_time, "
        "modality, exemplars, confidence).</p></footer>"
    )


# --- formatting ------------------------------------------------------------------------------------


def _chip(label: str | None) -> str:
    if label not in LABELS:
        return '<span class="chip neutral">none</span>'
    return f'<span class="chip {label}">{label}</span>'


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _fixed(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)
