"""Plots of alignment runs, drawn with matplotlib.

matplotlib is imported inside the functions (it is not needed to train or to run the add-on) and
used through its object-oriented API on an Agg canvas: no pyplot, no global backend switch, no
display. Every plot is written atomically as PNG.

- :func:`frontier_plot`: held-out reward against FD to base, one line per run through its checkpoint
  rounds (in round order), optional marked points (e.g. the best point under each FD level) and
  vertical lines at the FD levels.
- :func:`progress_plot`: held-out reward against cumulative sampled trajectories.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from .fileio import atomic_write

__all__ = ["frontier_plot", "progress_plot"]

Point = tuple[float, float]


def _figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _check(series: dict[str, Sequence[Point]], what: str) -> None:
    if not series or not any(series.values()):
        raise ValueError(f"{what} needs at least one series with a point")
    for label, points in series.items():
        for point in points:
            if len(point) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in point):
                raise ValueError(f"{what}: series {label!r} has a point that is not two finite numbers: {point!r}")


def _save(fig, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _styles(labels: Sequence[str], groups: dict[str, str] | None):
    """Colour per group (a method); line style and marker per member (a seed or setting)."""
    groups = groups or {label: label for label in labels}
    names = list(dict.fromkeys(groups.get(l, l) for l in labels))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]
    dashes = ["-", "--", ":", "-.", (0, (6, 2)), (0, (1, 1, 4, 1))]
    markers = ["o", "s", "^", "v", "D", "x"]
    seen: dict[str, int] = {}
    out = {}
    for label in labels:
        g = groups.get(label, label)
        k = seen.get(g, 0)
        seen[g] = k + 1
        out[label] = (palette[names.index(g) % len(palette)], dashes[k % len(dashes)], markers[k % len(markers)])
    return out


def _draw_curves(ax, curves: dict[str, Sequence[Point]], groups: dict[str, str] | None) -> dict:
    """One line with markers per curve, styled by group; returns label -> (colour, dash, marker)."""
    style = _styles(list(curves), groups)
    for label, points in curves.items():
        if not points:
            continue
        colour, dash, marker = style[label]
        xs, ys = zip(*points)
        ax.plot(xs, ys, linestyle=dash, marker=marker, markersize=3.5, color=colour, label=label, linewidth=1.2)
    return style


def frontier_plot(curves: dict[str, Sequence[Point]], path: str | os.PathLike, title: str = "",
                  marked: dict[str, Sequence[Point]] | None = None, fd_levels: Sequence[float] = (),
                  base: Point | None = None, groups: dict[str, str] | None = None, floor: float | None = None,
                  x_max: float | None = None,
                  xlabel: str = "FD to base (critic features)", ylabel: str = "held-out reward") -> Path:
    """Write a reward-drift plot to ``path`` (PNG); returns the path.

    ``curves``: label -> (FD, reward) points in round order, drawn as a line with dots. ``marked``:
    label -> points drawn as large open markers in the curve's colour. ``groups``: label -> group
    (curves of one group share a colour and differ in line style). ``base``: the base model's
    (FD, reward), drawn as a black star. ``floor``: FD's noise level, shaded from 0. ``x_max``: the
    chart ends there and its reward axis fits the points inside, so that a collapsed run far out does
    not flatten the rest (the number of points left out is written on the chart). ValueError on
    empty or non-finite input.
    """
    _check(curves, "frontier_plot")
    if marked:
        _check(marked, "frontier_plot marked points")
    fig, ax = _figure()
    style = _draw_curves(ax, curves, groups)
    for label, points in (marked or {}).items():
        for x, y in points:
            ax.plot([x], [y], marker="o", markersize=11, markerfacecolor="none", markeredgewidth=1.8,
                    color=style[label][0])
    if base is not None:
        ax.plot([base[0]], [base[1]], marker="*", markersize=13, color="black", linestyle="none", label="base")
    for level in fd_levels:
        ax.axvline(level, color="0.6", linewidth=0.8, linestyle=":")
    if floor is not None:
        if not math.isfinite(floor) or floor < 0:
            raise ValueError(f"frontier_plot: floor must be a finite number >= 0, got {floor!r}")
        ax.axvspan(0, floor, color="0.85", alpha=0.6, label=f"FD floor ({floor:.2g})")
    ax.set_xlim(left=0)
    if x_max is not None:
        if not (math.isfinite(x_max) and x_max > 0):
            raise ValueError(f"frontier_plot: x_max must be a finite number > 0, got {x_max!r}")
        everything = [pt for pts in curves.values() for pt in pts] + ([base] if base is not None else [])
        inside = [y for x, y in everything if x <= x_max]
        outside = sum(1 for pts in curves.values() for x, _ in pts if x > x_max)
        ax.set_xlim(0, x_max)
        if inside:
            lo, hi = min(inside), max(inside)
            pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi) * 0.01, 1e-3)
            ax.set_ylim(lo - pad, hi + pad)
        if outside:
            ax.text(0.99, 0.01, f"{outside} point(s) beyond FD {x_max:g} not shown", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7, color="0.4")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def progress_plot(curves: dict[str, Sequence[Point]], path: str | os.PathLike, title: str = "",
                  base: float | None = None, groups: dict[str, str] | None = None,
                  xlabel: str = "cumulative trajectories", ylabel: str = "held-out reward") -> Path:
    """Write reward against cumulative trajectories to ``path`` (PNG); returns the path.

    ``curves``: label -> (trajectories, reward) points; ``base``: the base model's reward, drawn as
    a horizontal line. ValueError on empty or non-finite input.
    """
    _check(curves, "progress_plot")
    fig, ax = _figure()
    _draw_curves(ax, curves, groups)
    if base is not None:
        if not math.isfinite(base):
            raise ValueError(f"progress_plot: base reward must be finite, got {base!r}")
        ax.axhline(base, color="black", linewidth=0.9, linestyle="--", label="base")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)
