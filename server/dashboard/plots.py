"""Inline SVG line charts drawn on the server: no plotting library, no script, and every element
named (``id``/``class``) so a page, a stylesheet and a test can find the ε line and the budget line.

Colours and dashes are presentation attributes, so a chart reads the same in a screenshot, a
saved page or under a strict Content-Security-Policy (no inline ``style``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 440, 230  # viewBox units (the page scales the chart to its column)
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 30, 40  # margins: y tick labels, legend row, x label
PALETTE = ("#1f6fb2", "#c2571a", "#2b8a3e", "#8e44ad", "#b8860b", "#17808a", "#a61e4d", "#555555")


@dataclass(frozen=True)
class Series:
    """A line through ``points`` (x, y); ``dashed`` for a projection."""

    name: str
    points: list[tuple[float, float]]
    element_id: str
    css: str
    color: str
    dashed: bool = False
    markers: bool = True


@dataclass(frozen=True)
class Level:
    """A horizontal line at ``y`` across the chart (a budget)."""

    name: str
    y: float
    element_id: str
    css: str
    color: str = "#b22222"


@dataclass(frozen=True)
class Chart:
    """A chart: its lines, levels and axes' labels; ``x_max`` widens the x axis (the last round)."""

    chart_id: str
    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    levels: list[Level] = field(default_factory=list)
    x_max: float | None = None
    empty_text: str = "no data yet"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high] (steps of 1, 2, 2.5 or 5 × 10ᵏ)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def render(chart: Chart) -> str:
    """The chart as one ``<svg>`` element (escaped text; ids are the caller's, escaped too)."""
    xs = [x for s in chart.series for x, _ in s.points]
    ys = [y for s in chart.series for _, y in s.points if math.isfinite(y)] + [lv.y for lv in chart.levels]
    out = [f'<svg id="{escape(chart.chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(chart.title)}" xmlns="http://www.w3.org/2000/svg">',
           f"<title>{escape(chart.title)}</title>",
           f'<text class="chart-title" x="{LEFT}" y="16" font-size="13" font-weight="600" fill="#222">'
           f"{escape(chart.title)}</text>"]
    if not xs:
        out.append(f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="12" '
                   f'fill="#777">{escape(chart.empty_text)}</text></svg>')
        return "".join(out)
    x_low, x_high = min(min(xs), 1.0), max(max(xs), chart.x_max or 0.0, min(xs) + 1.0)
    y_low, y_high = min(0.0, min(ys)), max(ys) * 1.12 if max(ys) > 0 else 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return round(LEFT + (x - x_low) / (x_high - x_low) * plot_w, 2)

    def py(y: float) -> float:
        return round(TOP + plot_h - (y - y_low) / (y_high - y_low) * plot_h, 2)

    # 1. grid and axes
    out.append('<g class="axes" font-size="10" fill="#555">')
    for y in nice_ticks(y_low, y_high):
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(y)}" y2="{py(y)}" stroke="#e5e5e5"/>'
                   f'<text x="{LEFT - 5}" y="{py(y) + 3}" text-anchor="end">{_fmt(y)}</text>')
    x_ticks = [x for x in nice_ticks(x_low, x_high, count=min(8, int(x_high - x_low) + 1)) if float(x).is_integer()]
    for x in x_ticks:
        out.append(f'<text x="{px(x)}" y="{TOP + plot_h + 14}" text-anchor="middle">{_fmt(x)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#888"/>'
               f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#888"/>'
               f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(chart.x_label)}</text>'
               f'<text x="12" y="{TOP + plot_h / 2}" text-anchor="middle" transform="rotate(-90 12 {TOP + plot_h / 2})">'
               f"{escape(chart.y_label)}</text></g>")
    # 2. levels (budgets), then the lines on top
    for lv in chart.levels:
        out.append(f'<line id="{escape(lv.element_id)}" class="{escape(lv.css)}" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
                   f'y1="{py(lv.y)}" y2="{py(lv.y)}" stroke="{lv.color}" stroke-width="1.5" stroke-dasharray="2 3">'
                   f"<title>{escape(lv.name)}</title></line>")
    for s in chart.series:
        points = [(x, y) for x, y in s.points if math.isfinite(y)]
        coords = " ".join(f"{px(x)},{py(y)}" for x, y in points)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<polyline id="{escape(s.element_id)}" class="{escape(s.css)}" points="{coords}" fill="none" '
                   f'stroke="{s.color}" stroke-width="2"{dash}><title>{escape(s.name)}</title></polyline>')
        if s.markers:
            out.extend(f'<circle class="point" cx="{px(x)}" cy="{py(y)}" r="3" fill="{s.color}">'
                       f"<title>{escape(s.name)}: {_fmt(round(x, 6))}, {y:.4g}</title></circle>" for x, y in points)
    # 3. legend, one row under the title
    legend_x = LEFT + 4
    for name, color, dashed in [*((s.name, s.color, s.dashed) for s in chart.series),
                                *((lv.name, lv.color, True) for lv in chart.levels)]:
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(f'<g class="legend"><line x1="{legend_x}" x2="{legend_x + 14}" y1="{TOP - 5}" y2="{TOP - 5}" '
                   f'stroke="{color}" stroke-width="2"{dash}/><text x="{legend_x + 18}" y="{TOP - 2}" font-size="9.5" '
                   f'fill="#333">{escape(name)}</text></g>')
        legend_x += 26 + 5.6 * len(name)
    out.append("</svg>")
    return "".join(out)


def epsilon_chart(site: dict, *, last_round: int, index: int = 0) -> str:
    """One site's ε after each round, its budget line and the projection to ``last_round``
    (``site``: an entry of :func:`server.dashboard.snapshot.read_snapshot`'s ``sites``)."""
    name = site["site"]
    color = PALETTE[index % len(PALETTE)]
    points = [(float(p["round"]), float(p["epsilon"])) for p in site["series"]]
    series = [Series(f"ε spent ({name})", points, f"eps-line-{name}", "eps-line", color)] if points else []
    projection = site.get("projection")
    if points and projection and projection["round"] > points[-1][0]:
        series.append(Series(f"projected to round {projection['round']}",
                             [points[-1], (float(projection["round"]), float(projection["epsilon"]))],
                             f"projection-{name}", "projection-line", color, dashed=True))
    levels = []
    if site.get("budget_epsilon") is not None:
        levels.append(Level(f"budget ε = {site['budget_epsilon']:g}", float(site["budget_epsilon"]),
                            f"budget-line-{name}", "budget-line"))
    return render(Chart(chart_id=f"eps-{name}", title=f"site {name}: ε spent over rounds", x_label="round",
                        y_label="ε", series=series, levels=levels, x_max=float(last_round),
                        empty_text="no charge recorded yet"))


def loss_chart(rounds: list[dict], *, last_round: int) -> str:
    """Training loss per round (patient-weighted over the averaged sites), and the DP evaluation
    loss where sites released one."""
    series = []
    train = [(float(r["round"]), float(r["loss"])) for r in rounds if r.get("loss") is not None]
    if train:
        series.append(Series("training loss", train, "loss-line", "loss-line", PALETTE[0]))
    held = [(float(r["round"]), float(r["eval_loss"])) for r in rounds if r.get("eval_loss") is not None]
    if held:
        series.append(Series("DP evaluation loss", held, "eval-loss-line", "loss-line", PALETTE[1]))
    return render(Chart(chart_id="loss", title="training loss per round", x_label="round", y_label="loss",
                        series=series, x_max=float(last_round), empty_text="no round finished yet"))
