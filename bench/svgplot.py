"""Line charts as standalone SVG, with no dependencies: the bench's plots must render on a fresh
machine with nothing but Python. One chart has one x axis, one y axis, several series (lines or
steps), optional vertical markers (events) and a legend."""

from dataclasses import dataclass, field
import math
from xml.sax.saxutils import escape

PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"]


@dataclass
class Series:
    """One line: (x, y) points in data units."""

    label: str
    points: list
    step: bool = False
    dashed: bool = False


@dataclass
class Chart:
    """A chart's title, axis labels and content."""

    title: str
    x_label: str
    y_label: str
    series: list = field(default_factory=list)
    markers: list = field(default_factory=list)  # (x, text)
    log2_x: bool = False
    y_min: float = 0.0


def nice_ticks(low, high, count=5):
    """About `count` round tick values covering [low, high]."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def render(charts, width=860, panel_height=260):
    """SVG text with the charts stacked vertically."""
    margin_left, margin_right, margin_top, margin_bottom = 70, 180, 34, 46
    total_height = panel_height * len(charts)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_height}" '
        f'viewBox="0 0 {width} {total_height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{total_height}" fill="white"/>',
    ]
    for index, chart in enumerate(charts):
        top = index * panel_height
        plot_w = width - margin_left - margin_right
        plot_h = panel_height - margin_top - margin_bottom
        xs = [x for s in chart.series for x, _ in s.points] + [x for x, _ in chart.markers]
        ys = [y for s in chart.series for _, y in s.points]
        if not xs or not ys:
            continue
        fx = (lambda x: math.log2(x)) if chart.log2_x else (lambda x: x)
        x_low, x_high = min(fx(x) for x in xs), max(fx(x) for x in xs)
        y_ticks = nice_ticks(chart.y_min, max(ys) * 1.05 if max(ys) > 0 else 1)
        y_low, y_high = y_ticks[0], y_ticks[-1]
        if x_high == x_low:
            x_high = x_low + 1

        def px(x):
            return margin_left + (fx(x) - x_low) / (x_high - x_low) * plot_w

        def py(y):
            return top + margin_top + plot_h - (y - y_low) / (y_high - y_low) * plot_h

        out.append(f'<text x="{margin_left}" y="{top + 20}" font-size="14" font-weight="bold">{escape(chart.title)}</text>')
        for tick in y_ticks:
            y = py(tick)
            out.append(f'<line x1="{margin_left}" x2="{margin_left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
            out.append(f'<text x="{margin_left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
        if chart.log2_x:
            x_ticks = [2 ** e for e in range(int(x_low), int(x_high) + 1)]
        else:
            x_ticks = [t for t in nice_ticks(x_low, x_high, 8) if x_low <= t <= x_high]
        for tick in x_ticks:
            x = px(tick)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + margin_top}" y2="{top + margin_top + plot_h}" stroke="#f3f4f6"/>')
            out.append(f'<text x="{x:.1f}" y="{top + margin_top + plot_h + 16}" text-anchor="middle">{tick:g}</text>')
        out.append(
            f'<rect x="{margin_left}" y="{top + margin_top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#9ca3af"/>'
        )
        out.append(
            f'<text x="{margin_left + plot_w / 2}" y="{top + panel_height - 8}" text-anchor="middle">{escape(chart.x_label)}</text>'
        )
        out.append(
            f'<text transform="translate(16 {top + margin_top + plot_h / 2}) rotate(-90)" text-anchor="middle">{escape(chart.y_label)}</text>'
        )
        for x, text in chart.markers:
            mx = px(x)
            out.append(
                f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top + margin_top}" y2="{top + margin_top + plot_h}" '
                f'stroke="#6b7280" stroke-dasharray="3 3"><title>{escape(text)}</title></line>'
            )
        for number, series in enumerate(chart.series):
            color = PALETTE[number % len(PALETTE)]
            points = sorted(series.points)
            path = []
            for i, (x, y) in enumerate(points):
                if series.step and i > 0:
                    path.append(f"{px(x):.1f},{py(points[i - 1][1]):.1f}")
                path.append(f"{px(x):.1f},{py(y):.1f}")
            dash = ' stroke-dasharray="6 4"' if series.dashed else ""
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{" ".join(path)}"/>')
            if not series.step and len(points) < 40:
                for x, y in points:
                    out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
            legend_y = top + margin_top + 14 + number * 18
            legend_x = margin_left + plot_w + 12
            out.append(f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{legend_y - 4}" y2="{legend_y - 4}" stroke="{color}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{legend_x + 24}" y="{legend_y}">{escape(series.label)}</text>')
        if chart.markers:
            legend_y = top + margin_top + 14 + len(chart.series) * 18
            legend_x = margin_left + plot_w + 12
            out.append(f'<line x1="{legend_x + 9}" x2="{legend_x + 9}" y1="{legend_y - 10}" y2="{legend_y + 2}" stroke="#6b7280" stroke-dasharray="3 3"/>')
            out.append(f'<text x="{legend_x + 24}" y="{legend_y}">scaling event</text>')
    out.append("</svg>")
    return "\n".join(out)
