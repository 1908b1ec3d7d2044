"""Line and scatter charts as inline SVG text, for ``report.html`` (no plotting library, no network).

A chart is a list of :class:`Series` on linear axes. Every marker carries ``data-tip`` (the values
the page shows on hover) and, for the model's own points, ``data-key`` (the (λ, width) the page's
slider highlights). All text is escaped here; callers pass plain strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
W, H = 560, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 34, 46  # margins; the legend sits in the right one


@dataclass
class Point:
    x: float
    y: float
    tip: str
    key: str | None = None  # the (λ, width) key of a model point; None for other points
    label: str | None = None  # text beside the marker (e.g. its λ)


@dataclass
class Series:
    name: str
    points: list[Point]
    color: str = "#000"
    line: str | None = "solid"  # "solid", "dashed" or None (markers only)
    marker: str = "circle"  # "circle", "square", "up", "down"
    hollow: bool = False


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    raw = (hi - lo) / n if hi > lo else 1.0
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    start = math.ceil(lo / step - 1e-9) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step + 1e-9) + 1)]


def padded_range(values, *, lo: float = 0.0, hi: float = 100.0, pad: float = 3.0, step: float = 5.0):
    """[min - pad, max + pad] rounded out to ``step`` and clipped to [lo, hi]."""
    values = list(values) or [lo, hi]
    a = max(lo, math.floor((min(values) - pad) / step) * step)
    b = min(hi, math.ceil((max(values) + pad) / step) * step)
    return (a, b) if b > a else (max(lo, a - step), min(hi, b + step))


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _marker(s: Series, px: float, py: float, p: Point) -> str:
    fill = "#fff" if s.hollow else s.color
    attrs = f'class="pt" fill="{fill}" stroke="{s.color}" stroke-width="1.5" data-tip="{escape(p.tip)}"'
    if p.key is not None:
        attrs += f' data-key="{escape(p.key)}"'
    if s.marker == "square":
        return f'<rect {attrs} x="{px - 4:.1f}" y="{py - 4:.1f}" width="8" height="8"/>'
    if s.marker in ("up", "down"):
        d = -1 if s.marker == "up" else 1
        pts = f"{px:.1f},{py + 6 * d:.1f} {px - 5.5:.1f},{py - 4 * d:.1f} {px + 5.5:.1f},{py - 4 * d:.1f}"
        return f'<polygon {attrs} points="{pts}"/>'
    return f'<circle {attrs} cx="{px:.1f}" cy="{py:.1f}" r="4"/>'


def chart(series: list[Series], *, title: str, x_label: str, y_label: str, x_range, y_range,
          chart_id: str, cursor: bool = False) -> str:
    """One chart as an ``<svg>`` element; ``cursor``: a vertical line the page moves to the slider's λ."""
    (x0, x1), (y0, y1) = x_range, y_range
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    sx = lambda v: LEFT + (v - x0) / (x1 - x0) * pw
    sy = lambda v: TOP + ph - (v - y0) / (y1 - y0) * ph
    out = [f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
           f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text class="title" x="{LEFT + pw / 2}" y="18" text-anchor="middle">{escape(title)}</text>']
    for t in ticks(x0, x1):
        out.append(f'<line class="grid" x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{TOP}" y2="{TOP + ph}"/>'
                   f'<text class="tick" x="{sx(t):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for t in ticks(y0, y1):
        out.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>'
               f'<text class="axis" x="{LEFT + pw / 2}" y="{H - 8}" text-anchor="middle">{escape(x_label)}</text>'
               f'<text class="axis" transform="translate(14 {TOP + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    if cursor:
        out.append(f'<line class="cursor" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + ph}" visibility="hidden"/>')
    for s in series:
        pts = s.points  # in the order given: a trade-off curve runs in λ order, not by x
        if s.line and len(pts) > 1:
            d = " ".join(f"{'M' if i == 0 else 'L'}{sx(p.x):.1f} {sy(p.y):.1f}" for i, p in enumerate(pts))
            dash = ' stroke-dasharray="5 3"' if s.line == "dashed" else ""
            out.append(f'<path class="curve" d="{d}" stroke="{s.color}"{dash} data-series="{escape(s.name)}"/>')
        for p in pts:
            out.append(_marker(s, sx(p.x), sy(p.y), p))
            if p.label:
                out.append(f'<text class="ptlabel" x="{sx(p.x) + 5:.1f}" y="{sy(p.y) - 6:.1f}">'
                           f'{escape(p.label)}</text>')
    out.append(_legend(series, LEFT + pw + 12))
    out.append("</svg>")
    return "\n".join(out)


def _legend(series: list[Series], x: float) -> str:
    out = []
    for i, s in enumerate(series[:14]):
        y = TOP + 8 + 18 * i
        if s.line:
            dash = ' stroke-dasharray="5 3"' if s.line == "dashed" else ""
            out.append(f'<line x1="{x}" x2="{x + 22}" y1="{y}" y2="{y}" stroke="{s.color}" stroke-width="2"{dash}/>')
        out.append(_marker(Series(s.name, [], s.color, None, s.marker, s.hollow), x + 11, y,
                           Point(0, 0, s.name)).replace('class="pt"', 'class="key"'))
        out.append(f'<text class="legend" x="{x + 28}" y="{y + 4}">{escape(s.name[:22])}</text>')
    return "\n".join(out)
