"""A tiny, dependency-free SVG chart writer for the report's figures.

Charts are strings of inline SVG (no scripts, no external references); every text that comes
from data or specs is XML-escaped here. Supported: grouped bars and lines (optionally with
error bars) over categorical or numeric x, and labelled scatter points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

__all__ = ["PALETTE", "Chart", "nice_ticks"]

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
DASHES = ("", "5,3", "2,2", "8,3,2,3")


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 0.5:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 10000 or abs(v) < 0.001:
        return f"{v:.0e}"
    return f"{v:.6g}"


@dataclass
class _Series:
    name: str
    kind: str  # bar | line | points
    xs: list
    ys: list[float | None]
    errs: list[float | None] | None = None
    labels: list[str] | None = None
    titles: list[str] | None = None


@dataclass
class Chart:
    """One plot. ``categories`` makes x categorical; otherwise x is numeric."""

    title: str
    xlabel: str = ""
    ylabel: str = ""
    categories: Sequence[str] | None = None
    width: int = 640
    height: int = 320
    y_from_zero: bool = False
    series: list[_Series] = field(default_factory=list)
    note: str = ""

    def bars(self, name: str, ys, titles=None) -> Chart:
        self.series.append(_Series(name, "bar", list(range(len(ys))), list(ys), titles=titles))
        return self

    def line(self, name: str, xs, ys, errs=None, titles=None) -> Chart:
        self.series.append(
            _Series(name, "line", list(xs), list(ys), list(errs) if errs else None, None, titles)
        )
        return self

    def points(self, name: str, xs, ys, labels, titles=None) -> Chart:
        self.series.append(_Series(name, "points", list(xs), list(ys), None, list(labels), titles))
        return self

    # -- rendering ------------------------------------------------------------------------------
    def _y_range(self) -> tuple[float, float]:
        values = []
        for s in self.series:
            for i, y in enumerate(s.ys):
                if y is None or not math.isfinite(y):
                    continue
                err = (s.errs[i] if s.errs and s.errs[i] is not None else 0.0) or 0.0
                low = y - err
                if self.y_from_zero and y >= 0:
                    low = max(low, 0.0)  # metrics are non-negative: clip error bars at 0
                values += [low, y + err]
        if self.y_from_zero or any(s.kind == "bar" for s in self.series):
            values.append(0.0)
        if not values:
            return 0.0, 1.0
        return self._pad(min(values), max(values))

    def _x_range(self) -> tuple[float, float]:
        xs = [x for s in self.series for x in s.xs if x is not None and math.isfinite(x)]
        if not xs:
            return 0.0, 1.0
        return self._pad(min(xs), max(xs))

    def _pad(self, lo: float, hi: float) -> tuple[float, float]:
        """Scatter points get a margin so that markers and labels stay inside the plot."""
        if not any(s.kind == "points" for s in self.series):
            return lo, hi
        margin = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
        return lo - margin, hi + margin

    def render(self) -> Markup:
        legend = [s.name for s in self.series if s.name]
        legend_w = 0 if not legend else min(220, 24 + 7 * max(len(n) for n in legend))
        left, right, top, bottom = 64, 16 + legend_w, 34, 54
        w, h = self.width, self.height
        pw, ph = w - left - right, h - top - bottom
        ylo, yhi = self._y_range()
        yt = nice_ticks(ylo, yhi)
        y0, y1 = yt[0], yt[-1]

        def sy(v: float) -> float:
            return top + ph - (v - y0) / ((y1 - y0) or 1.0) * ph

        out = [
            f'<svg class="chart" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{_e(self.title)}">',
            f"<title>{_e(self.title)}</title>",
            f'<text x="{left}" y="18" class="ct">{_e(self.title)}</text>',
        ]
        for t in yt:
            y = sy(t)
            out.append(
                f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tk">'
                f"{_e(_tick_label(t))}</text>"
            )
        out.append(
            f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" class="axis"/>'
            f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="axis"/>'
        )
        if self.categories is not None:
            n = max(len(self.categories), 1)
            band = pw / n

            def sx(v: float) -> float:
                return left + band * (v + 0.5)

            for i, cat in enumerate(self.categories):
                out.append(
                    f'<text x="{sx(i):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tk">'
                    f"{_e(cat)}</text>"
                )
        else:
            xlo, xhi = self._x_range()
            xt = nice_ticks(xlo, xhi, 6)
            x0, x1 = xt[0], xt[-1]

            def sx(v: float) -> float:
                return left + (v - x0) / ((x1 - x0) or 1.0) * pw

            for t in xt:
                out.append(
                    f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tk">'
                    f"{_e(_tick_label(t))}</text>"
                )
        if self.xlabel:
            out.append(
                f'<text x="{left + pw / 2:.1f}" y="{h - 12}" text-anchor="middle" class="lb">'
                f"{_e(self.xlabel)}</text>"
            )
        if self.ylabel:
            out.append(
                f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" '
                f'text-anchor="middle" class="lb">{_e(self.ylabel)}</text>'
            )
        bar_series = [s for s in self.series if s.kind == "bar"]
        for si, s in enumerate(self.series):
            color = PALETTE[si % len(PALETTE)]
            if s.kind == "bar":
                nb = len(bar_series)
                bi = bar_series.index(s)
                band = pw / max(len(self.categories or s.xs), 1)
                bw = band * 0.8 / nb
                for i, y in enumerate(s.ys):
                    if y is None:
                        continue
                    x = left + band * i + band * 0.1 + bw * bi
                    top_y, base = sy(max(y, 0)), sy(min(y, 0))
                    tip = s.titles[i] if s.titles else f"{s.name}: {_num(y)}"
                    out.append(
                        f'<rect x="{x:.1f}" y="{top_y:.1f}" width="{bw:.1f}" '
                        f'height="{max(base - top_y, 0.5):.1f}" fill="{color}">'
                        f"<title>{_e(tip)}</title></rect>"
                    )
            elif s.kind == "line":
                dash = DASHES[(si // len(PALETTE)) % len(DASHES)]
                pts = [
                    (sx(x), sy(y), i)
                    for i, (x, y) in enumerate(zip(s.xs, s.ys, strict=True))
                    if y is not None and math.isfinite(y)
                ]
                if s.errs:
                    for px, _, i in pts:
                        err = s.errs[i]
                        if err is None or not math.isfinite(err) or err == 0:
                            continue
                        low = s.ys[i] - err
                        if self.y_from_zero and s.ys[i] >= 0:
                            low = max(low, 0.0)
                        ya, yb = sy(low), sy(s.ys[i] + err)
                        out.append(
                            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{ya:.1f}" y2="{yb:.1f}" '
                            f'stroke="{color}" class="err"/>'
                        )
                if len(pts) > 1:
                    d = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in pts)
                    extra = f' stroke-dasharray="{dash}"' if dash else ""
                    out.append(
                        f'<polyline points="{d}" fill="none" stroke="{color}" '
                        f'stroke-width="1.8"{extra}/>'
                    )
                if len(pts) <= 40:
                    for px, py, i in pts:
                        tip = s.titles[i] if s.titles else f"{s.name}: {_num(s.ys[i])}"
                        out.append(
                            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}">'
                            f"<title>{_e(tip)}</title></circle>"
                        )
            else:
                for i, (x, y) in enumerate(zip(s.xs, s.ys, strict=True)):
                    if y is None or x is None:
                        continue
                    px, py = sx(x), sy(y)
                    tip = s.titles[i] if s.titles else f"{s.labels[i]}: ({_num(x)}, {_num(y)})"
                    out.append(
                        f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{color}">'
                        f"<title>{_e(tip)}</title></circle>"
                    )
                    if s.labels:
                        right = px > left + pw * 0.6
                        anchor = ' text-anchor="end"' if right else ""
                        lx = px - 6 if right else px + 6
                        out.append(
                            f'<text x="{lx:.1f}" y="{py - 5:.1f}" class="pl"{anchor}>'
                            f"{_e(s.labels[i])}</text>"
                        )
        if legend:
            lx = w - legend_w + 4
            for i, s in enumerate(s for s in self.series if s.name):
                color = PALETTE[self.series.index(s) % len(PALETTE)]
                ly = top + 14 * i
                out.append(
                    f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{color}"/>'
                    f'<text x="{lx + 14}" y="{ly + 9}" class="lg">{_e(s.name)}</text>'
                )
        if self.note:
            out.append(f'<text x="{left}" y="{top - 4}" class="nt">{_e(self.note)}</text>')
        out.append("</svg>")
        return Markup("".join(out))
