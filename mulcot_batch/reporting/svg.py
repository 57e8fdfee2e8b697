"""Inline SVG charts for the report page: no script, no fonts or libraries fetched from anywhere.

Each function returns one `<svg>` element scaled by its viewBox, so the page stays readable at any
width and opens offline. Text is escaped here; callers pass plain strings and numbers.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from statistics import median

COLOURS = {"positive": "#1a9850", "neutral": "#8c8c8c", "negative": "#d73027"}
LINE = "#2b5fb8"
VOLUME = "#b9c7e3"
GRID = "#e3e3e3"
AXIS_TEXT = "#555"


def _svg(width: int, height: int, body: str, label: str, cls: str = "chart") -> str:
    size = f' width="{width}" height="{height}"' if cls == "cell" else ""  # charts scale, cells keep size
    return (
        f'<svg class="{cls}"{size} viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
        f'preserveAspectRatio="xMinYMin meet">'
        f"<title>{escape(label)}</title>{body}</svg>"
    )


def _text(
    x: float, y: float, text: str, anchor: str = "start", size: int = 12, fill: str = AXIS_TEXT, weight: str = "normal"
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
        f'font-weight="{weight}">{escape(text)}</text>'
    )


def label_bars(rows: list[tuple[str, int, float]]) -> str:
    """One horizontal bar per label: (label, count, share of scored posts)."""
    width, row_h, left, right = 720, 44, 90, 150
    height = row_h * len(rows) + 10
    span = width - left - right
    parts = []
    for i, (label, count, share) in enumerate(rows):
        y = 8 + i * row_h
        w = max(0.0, share) * span
        parts.append(_text(left - 10, y + 21, label, "end", 14, "#222", "bold"))
        parts.append(f'<rect x="{left}" y="{y}" width="{span}" height="28" fill="#f3f3f3"/>')
        parts.append(
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="28" fill="{COLOURS[label]}"><title>{escape(label)}: {count:,} posts, {share:.1%}</title></rect>'
        )
        parts.append(_text(left + span + 10, y + 20, f"{share:.1%}  ({count:,})", "start", 14, "#222"))
    return _svg(width, height, "".join(parts), "Share of scored posts per label")


def stacked_shares(shares: dict[str, float | None], width: int = 160, height: int = 14) -> str:
    """A small stacked bar of the three label shares, for table cells."""
    x, parts = 0.0, []
    for label in COLOURS:
        share = shares.get(label) or 0.0
        parts.append(f'<rect x="{x:.2f}" y="0" width="{share * width:.2f}" height="{height}" fill="{COLOURS[label]}"/>')
        x += share * width
    tip = ", ".join(f"{k} {(v or 0):.0%}" for k, v in shares.items())
    return _svg(width, height, "".join(parts) or "", f"label shares: {tip}", "cell")


def net_bar(value: float | None, width: int = 90, height: int = 14) -> str:
    """Net sentiment as a bar left (negative) or right (positive) of a centre line."""
    mid = width / 2
    body = f'<line x1="{mid}" y1="0" x2="{mid}" y2="{height}" stroke="#999"/>'
    if value is not None:
        w = abs(value) * mid
        x = mid if value >= 0 else mid - w
        colour = COLOURS["positive"] if value >= 0 else COLOURS["negative"]
        body += f'<rect x="{x:.2f}" y="2" width="{w:.2f}" height="{height - 4}" fill="{colour}"/>'
    return _svg(width, height, body, f"net sentiment {value:+.2f}" if value is not None else "nothing scored", "cell")


def sparkline(values: list[float | None], width: int = 120, height: int = 24) -> str:
    """Net sentiment per bucket of one group, on the fixed -1..1 scale, gaps where nothing was scored."""
    if len(values) < 2:
        return ""
    step = width / (len(values) - 1)
    to_y = lambda v: (1 - (v + 1) / 2) * (height - 2) + 1  # noqa: E731
    paths, current = [], []
    for i, v in enumerate(values):
        if v is None:
            if current:
                paths.append(current)
            current = []
            continue
        current.append(f"{i * step:.1f},{to_y(v):.1f}")
    if current:
        paths.append(current)
    body = f'<line x1="0" y1="{to_y(0):.1f}" x2="{width}" y2="{to_y(0):.1f}" stroke="{GRID}"/>'
    body += "".join(
        f'<polyline points="{" ".join(p)}" fill="none" stroke="{LINE}" stroke-width="1.5"/>'
        for p in paths
        if len(p) > 1
    )
    return _svg(width, height, body, "net sentiment over time", "cell")


def time_chart(buckets: list[datetime], net: list[float | None], posts: list[int], fmt: str) -> str:
    """Net sentiment per bucket as a line over the post volume as bars, on one time axis."""
    width, height, left, right, top = 960, 360, 56, 16, 14
    line_h, gap, vol_h = 190, 34, 80
    span = width - left - right
    if not buckets:
        return _svg(width, 60, _text(width / 2, 30, "no posts with a time", "middle", 14), "no data")
    t0, t1 = buckets[0].timestamp(), buckets[-1].timestamp()
    steps = [b.timestamp() - a.timestamp() for a, b in zip(buckets, buckets[1:], strict=False)]
    step = median(steps) if steps else 1.0
    scale = span / ((t1 - t0) + step)
    x_of = lambda b: left + (b.timestamp() - t0) * scale  # noqa: E731
    bar_w = max(0.6, step * scale * 0.8)
    bound = _net_bound(net)
    y_net = lambda v: top + (1 - (v + bound) / (2 * bound)) * line_h  # noqa: E731
    parts = [_net_grid(left, span, y_net, bound)]
    parts.append(_net_line(buckets, net, x_of, y_net, step, bar_w))
    vol_top = top + line_h + gap
    peak = max(posts) or 1
    bars = "".join(
        f"M{x_of(b):.1f},{vol_top + vol_h:.1f}v{-p / peak * vol_h:.1f}h{bar_w:.1f}v{p / peak * vol_h:.1f}z"
        for b, p in zip(buckets, posts, strict=False)
        if p
    )
    parts.append(f'<path d="{bars}" fill="{VOLUME}"/>')
    parts.append(_text(left - 6, vol_top + 10, f"{peak:,}", "end", 11))
    parts.append(_text(left - 6, vol_top + vol_h, "0", "end", 11))
    parts.append(_text(left, vol_top - 6, "posts per bucket", "start", 11))
    parts.append(_time_ticks(buckets, x_of, bar_w, vol_top + vol_h + 16, fmt))
    return _svg(width, height, "".join(parts), "Net sentiment and post volume over time")


def _net_bound(net: list[float | None]) -> float:
    """A symmetric y range that fits the data, in steps of 0.25 (at most -1..1)."""
    present = [abs(v) for v in net if v is not None]
    peak = max(present, default=0.0)
    return min(1.0, max(0.25, -(-peak // 0.25) * 0.25))


def _net_grid(left: float, span: float, y_net, bound: float) -> str:
    parts = []
    for v in (-bound, -bound / 2, 0.0, bound / 2, bound):
        y = y_net(v)
        stroke = "#888" if v == 0 else GRID
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + span}" y2="{y:.1f}" stroke="{stroke}"/>')
        parts.append(_text(left - 6, y + 4, f"{v:+.2f}" if v else "0", "end", 11))
    parts.append(_text(left, y_net(bound) - 2 + 12, "net sentiment", "start", 11))
    return "".join(parts)


def _net_line(buckets: list[datetime], net: list[float | None], x_of, y_net, step: float, bar_w: float) -> str:
    """A polyline per run of consecutive buckets; a missing bucket or an all-error one breaks it."""
    runs: list[list[str]] = []
    previous = None
    for b, v in zip(buckets, net, strict=False):
        if v is None:
            previous = None
            continue
        point = f"{x_of(b) + bar_w / 2:.1f},{y_net(v):.1f}"
        if previous is None or b.timestamp() - previous > 1.5 * step:
            runs.append([])
        runs[-1].append(point)
        previous = b.timestamp()
    lines = "".join(
        f'<polyline points="{" ".join(r)}" fill="none" stroke="{LINE}" stroke-width="2.5"/>' for r in runs if len(r) > 1
    )
    dots = "".join(
        f'<circle cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="3" fill="{LINE}"/>'
        for r in runs
        if len(r) == 1
    )
    return lines + dots


def _time_ticks(buckets: list[datetime], x_of, bar_w: float, y: float, fmt: str) -> str:
    if len(buckets) <= 8:
        picks = list(range(len(buckets)))  # few buckets: label every one
    else:
        picks = sorted({round(i * (len(buckets) - 1) / 5) for i in range(6)})
    return "".join(_text(x_of(buckets[i]) + bar_w / 2, y, buckets[i].strftime(fmt), "middle", 11) for i in picks)


def histogram(bins: list[tuple[float, float]], counts: dict[str, list[int]]) -> str:
    """Scored posts per confidence bin, stacked by label."""
    width, height, left, bottom, top = 720, 260, 56, 40, 12
    plot_h = height - bottom - top
    span = width - left - 16
    totals = [sum(counts[label][i] for label in counts) for i in range(len(bins))]
    peak = max(totals, default=0) or 1
    bw = span / max(1, len(bins))
    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + span}" y2="{top + plot_h}" stroke="#888"/>']
    for i, (low, high) in enumerate(bins):
        y = top + plot_h
        for label in COLOURS:
            h = counts[label][i] / peak * plot_h
            if h > 0:
                parts.append(
                    f'<rect x="{left + i * bw + 1:.1f}" y="{y - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" fill="{COLOURS[label]}">'
                    f"<title>{escape(label)} {low:.2f}-{high:.2f}: {counts[label][i]:,}</title></rect>"
                )
            y -= h
        if i % 2 == 0:
            parts.append(_text(left + i * bw, top + plot_h + 16, f"{low:.2f}", "middle", 11))
    parts.append(_text(left + span, top + plot_h + 16, "1.00", "middle", 11))
    parts.append(_text(left + span / 2, height - 4, "confidence (probability of the chosen label)", "middle", 12))
    parts.append(_text(left - 6, top + 10, f"{peak:,}", "end", 11))
    parts.append(_text(left - 6, top + plot_h, "0", "end", 11))
    return _svg(width, height, "".join(parts), "Confidence histogram, stacked by label")


def legend() -> str:
    items = "".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>{label}</span>'
        for label, colour in COLOURS.items()
    )
    return f'<div class="legend">{items}</div>'
