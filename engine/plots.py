"""Plots of alignment runs, drawn with matplotlib: the one home of the engine's charts.

matplotlib is imported inside the functions (it is not needed to train, and the Blender side never
imports it) and used through its object-oriented API on an Agg canvas: no pyplot, no global backend
switch, no display. Each chart has a builder that returns the :class:`matplotlib.figure.Figure` (for
tests and callers that want to add to it) and a writer that saves it atomically as PNG.

- :func:`reward_curve_plot`: an alignment job's training-batch rewards per round and its held-out
  reward before and after, with a caption that says why the two differ.
- :func:`before_after_sheet`: the same held-out (prompt, seed) renders before and after training,
  two (before, after) pairs per row, titled with the run and its held-out reward, with the target
  palette's swatches.
- :func:`frontier_plot`: held-out reward against FD to base, one line per run through its checkpoint
  rounds (in round order), optional marked points (e.g. the best point under each FD level) and
  vertical lines at the FD levels.
- :func:`progress_plot`: held-out (or training) reward against cumulative trajectories or rounds.
- :func:`tradeoff_plot`: one labelled point per method, reward against drift from the base model.
"""
from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .fileio import atomic_write

__all__ = ["COLOURS", "before_after_figure", "before_after_sheet", "frontier_plot", "progress_plot",
           "reward_curve_figure", "reward_curve_plot", "tradeoff_figure", "tradeoff_plot"]

Point = tuple[float, float]

# matplotlib's tab10 order: the first curve blue, the second red, ...
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def _canvas(width: float, height: float, dpi: float = 110):
    """A Figure on its own Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _figure(width: float = 7.0, height: float = 4.5):
    fig = _canvas(width, height)
    return fig, fig.add_subplot(1, 1, 1)


def _legend_beside(ax) -> None:
    """The legend right of the axes, top-aligned: with a dozen runs it would cover the data inside
    (tight_layout makes room for it)."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def _check(series: dict[str, Sequence[Point]], what: str) -> None:
    if not series or not any(series.values()):
        raise ValueError(f"{what} needs at least one series with a point")
    for label, points in series.items():
        for point in points:
            if len(point) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in point):
                raise ValueError(f"{what}: series {label!r} has a point that is not two finite numbers: {point!r}")


def _save(fig, path: str | os.PathLike, layout: bool = True) -> Path:
    """Write ``fig`` as PNG atomically; ``layout``: let tight_layout place the axes first (figures
    placed to the pixel, like the before/after sheet, pass False)."""
    if layout:
        fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi))


def _styles(labels: Sequence[str], groups: dict[str, str] | None, colours: dict[str, str] | None = None):
    """Colour per group (a method; ``colours`` maps a label to its own instead); line style and marker
    per member (a seed or setting)."""
    groups = groups or {label: label for label in labels}
    names = list(dict.fromkeys(groups.get(l, l) for l in labels))
    palette = COLOURS
    dashes = ["-", "--", ":", "-.", (0, (6, 2)), (0, (1, 1, 4, 1))]
    markers = ["o", "s", "^", "v", "D", "x"]
    seen: dict[str, int] = {}
    out = {}
    for label in labels:
        g = groups.get(label, label)
        k = seen.get(g, 0)
        seen[g] = k + 1
        colour = (colours or {}).get(label, palette[names.index(g) % len(palette)])
        out[label] = (colour, dashes[k % len(dashes)], markers[k % len(markers)])
    return out


def _draw_curves(ax, curves: dict[str, Sequence[Point]], groups: dict[str, str] | None,
                 colours: dict[str, str] | None = None) -> dict:
    """One line with markers per curve, styled by group; returns label -> (colour, dash, marker)."""
    style = _styles(list(curves), groups, colours)
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
    fig, ax = _figure(9.5, 4.8)
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
    _legend_beside(ax)
    return _save(fig, path)


def progress_plot(curves: dict[str, Sequence[Point]], path: str | os.PathLike, title: str = "",
                  base: float | None = None, groups: dict[str, str] | None = None,
                  xlabel: str = "cumulative trajectories", ylabel: str = "held-out reward",
                  colours: dict[str, str] | None = None, base_label: str = "base") -> Path:
    """Write reward against cumulative trajectories (or rounds) to ``path`` (PNG); returns the path.

    ``curves``: label -> (trajectories, reward) points; ``base``: the base model's reward, drawn as
    a horizontal line labelled ``base_label``; ``colours``: label -> colour, overriding the group's.
    ValueError on empty or non-finite input.
    """
    _check(curves, "progress_plot")
    if base is not None and not (isinstance(base, (int, float)) and math.isfinite(base)):
        raise ValueError(f"progress_plot: base reward must be finite, got {base!r}")
    fig, ax = _figure(9.5, 4.8)
    _draw_curves(ax, curves, groups, colours)
    if all(float(x).is_integer() for points in curves.values() for x, _ in points):  # rounds, trajectories
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if base is not None:
        ax.axhline(base, color="black", linewidth=0.9, linestyle="--", label=base_label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    _legend_beside(ax)
    return _save(fig, path)


def tradeoff_figure(points: dict[str, Point], title: str = "", xlabel: str = "FD to base (critic features)",
                    ylabel: str = "held-out reward", colours: dict[str, str] | None = None,
                    x_from_zero: bool = True):
    """Build a scatter of one labelled point per method (e.g. reward against drift); returns the Figure.

    ``points``: label -> (x, y); ``colours``: label -> colour (others take :data:`COLOURS` in order);
    ``x_from_zero``: the x axis starts at 0 (a distance). Points with a non-finite coordinate are
    left out (a method with no drift measured); ValueError when none is left.
    """
    finite = {k: (float(x), float(y)) for k, (x, y) in points.items() if math.isfinite(x) and math.isfinite(y)}
    if not finite:
        raise ValueError("tradeoff_plot needs at least one point with finite coordinates")
    fig, ax = _figure()
    for i, (label, (x, y)) in enumerate(finite.items()):
        colour = (colours or {}).get(label, COLOURS[i % len(COLOURS)])
        ax.plot([x], [y], marker="o", markersize=8, markeredgecolor="black", markeredgewidth=0.6,
                color=colour, linestyle="none", label=label)
        ax.annotate(label, (x, y), xytext=(6, 4), textcoords="offset points", fontsize=8, color=colour)
    xs, ys = [p[0] for p in finite.values()], [p[1] for p in finite.values()]
    xpad = 0.12 * (max(xs) - min(xs)) or max(abs(xs[0]) * 0.1, 0.1)
    ypad = 0.12 * (max(ys) - min(ys)) or max(abs(ys[0]) * 0.05, 1e-3)
    # room on the right for the last point's label
    ax.set_xlim(0.0 if x_from_zero and min(xs) >= 0 else min(xs) - xpad, max(xs) + 2 * xpad)
    ax.set_ylim(min(ys) - ypad, max(ys) + ypad)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    return fig


def tradeoff_plot(points: dict[str, Point], path: str | os.PathLike, title: str = "", **kwargs) -> Path:
    """Write :func:`tradeoff_figure` (same arguments) to ``path`` (PNG); returns the path."""
    return _save(tradeoff_figure(points, title, **kwargs), path)


# -- an alignment job's reward curve ------------------------------------------------------------------

TRAINING_COLOUR, HELD_OUT_COLOUR = COLOURS[0], COLOURS[1]


def reward_curve_figure(training: Sequence[tuple[float, float, float]], held_out: Sequence[Point],
                        title: str = "", caption: str = "", xlabel: str = "round", ylabel: str = "reward"):
    """Build an alignment job's reward curve; returns the Figure.

    ``training``: (round, mean, std) of each round's training batch, drawn as a line with markers
    and a +-std band. ``held_out``: (round, mean reward on the held-out samples) points: the base
    model at round 0, the finetuned model at its last round (more where a run was measured along
    the way); drawn as large markers with their values, joined by a dashed line, and the first one
    (the base model) as a dotted level across the chart. ``caption``: text under the chart (wrapped).
    The legend sits under the axes, never on the data. ValueError on empty or non-finite input.
    """
    for r in training:
        if len(r) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in r):
            raise ValueError(f"reward_curve: a training round must be three finite numbers (round, mean, std), got {r!r}")
    _check({"held-out": held_out}, "reward_curve")
    caption_lines = textwrap.wrap(caption, 118) if caption else []
    caption_h = 0.16 * len(caption_lines) + (0.12 if caption_lines else 0.0)  # inches
    fig = _canvas(7.5, round((4.9 + caption_h) * 110) / 110)  # a whole number of pixels at dpi 110
    ax = fig.add_subplot(1, 1, 1)
    if training:
        rounds, means, stds = (np.array(c, dtype=float) for c in zip(*training))
        ax.fill_between(rounds, means - stds, means + stds, color=TRAINING_COLOUR, alpha=0.15, linewidth=0,
                        label="training batch, \u00b11 std")
        ax.plot(rounds, means, color=TRAINING_COLOUR, marker="o", markersize=3.5, linewidth=1.3,
                label="training batch mean (this round's samples)")
    hx, hy = zip(*held_out)
    ax.axhline(hy[0], color=HELD_OUT_COLOUR, linewidth=0.9, linestyle=":", label=f"held-out, base model ({hy[0]:.3f})")
    ax.plot(hx, hy, color=HELD_OUT_COLOUR, linestyle="--" if len(hx) > 1 else "none", marker="s", markersize=7,
            linewidth=1.2, label="held-out mean (fixed prompts \u00d7 seeds)")
    for x, y in held_out:
        ax.annotate(f"{y:.3f}", (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8, color=HELD_OUT_COLOUR)
    last = max([r[0] for r in training] + list(hx))
    ax.set_xlim(-0.03 * max(last, 1), max(last, 1) * 1.08)  # room for the last value's label
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.set_title(title, pad=10)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0.0, caption_h / height, 1.0, 1.0))  # the legend under the axes counts in
    if caption_lines:
        fig.text(0.02, (caption_h - 0.04) / height, "\n".join(caption_lines), fontsize=8, color="0.25",
                 ha="left", va="top", linespacing=1.35)
    return fig


def reward_curve_plot(path: str | os.PathLike, training: Sequence[tuple[float, float, float]],
                      held_out: Sequence[Point], title: str = "", caption: str = "", **kwargs) -> Path:
    """Write :func:`reward_curve_figure` to ``path`` (PNG); returns the path."""
    return _save(reward_curve_figure(training, held_out, title, caption, **kwargs), path, layout=False)


# -- the before/after sheet ---------------------------------------------------------------------------

def _as_rgb(image) -> np.ndarray:
    """(3, H, W) or (1, H, W) float in [0, 1] (array or tensor), or a PIL image -> (H, W, 3) uint8."""
    from .imaging import to_pil

    return np.asarray(image.convert("RGB") if hasattr(image, "convert") else to_pil(image))


def before_after_figure(before: Sequence, after: Sequence, row_labels: Sequence[str], title: str,
                        subtitle: str = "", before_scores: Sequence[float] | None = None,
                        after_scores: Sequence[float] | None = None,
                        swatches: Sequence[tuple[float, float, float]] | None = None,
                        columns: tuple[str, str] = ("before: base model", "after: finetuned"),
                        score_name: str = "reward"):
    """Build the before/after sheet; returns the Figure.

    Two held-out samples per row (one when there is only one), each a pair: its label, then
    ``before[i]`` and ``after[i]`` (renders of the same (prompt, seed); (3, H, W) floats in [0, 1] or
    PIL images, all the same size) at their own size, pixel for pixel, each with its score under it;
    a thin line parts the two pairs of a row. Sample ``i`` is in row ``i // 2``, left pair for even
    ``i``; an odd count leaves the last row's right half empty. ``title`` and ``subtitle`` head the
    sheet; ``swatches`` (sRGB in [0, 1]) are drawn under them as "target palette". The figure is laid
    out to the pixel (dpi 100): its PNG is (2 x (label column + 2 tiles) + separator + margins) wide
    and (header + ceil(n / 2) rows) high. Image axes carry the labels ``"before <i>"`` /
    ``"after <i>"``. ValueError on mismatched lengths, sizes, or non-finite scores and colours.
    """
    n = len(before)
    if n == 0 or len(after) != n or len(row_labels) != n:
        raise ValueError(f"before_after_sheet needs as many after images and row labels as before images "
                         f"(got {n}, {len(after)}, {len(row_labels)}), and at least one")
    for name, scores in (("before_scores", before_scores), ("after_scores", after_scores)):
        if scores is not None and (len(scores) != n or not all(math.isfinite(v) for v in scores)):
            raise ValueError(f"before_after_sheet: {name} must be {n} finite numbers, got {list(scores)!r}")
    swatches = [tuple(float(c) for c in colour) for colour in (swatches or [])]
    if any(len(c) != 3 or not all(0.0 <= v <= 1.0 for v in c) for c in swatches):
        raise ValueError(f"before_after_sheet: swatches must be (r, g, b) colours in [0, 1], got {swatches!r}")
    tiles = [[_as_rgb(im) for im in before], [_as_rgb(im) for im in after]]
    th, tw = tiles[0][0].shape[:2]
    if any(t.shape[:2] != (th, tw) for col in tiles for t in col):
        raise ValueError("before_after_sheet: every image must have the same size")

    dpi, margin, gap, label_w, pair_gap = 100, 14, 10, 170, 30
    # two pairs a row: a dozen samples at 192 px were a 2.8k px tall strip, now half that
    per_row = min(2, n)
    rows = -(-n // per_row)
    pair_w = label_w + 2 * tw + gap
    score_h = 18 if (before_scores is not None or after_scores is not None) else 4
    width = max(per_row * pair_w + (per_row - 1) * pair_gap + 2 * margin, 520)
    # characters per line from DejaVu Sans' mean advance at these sizes (about 11 and 7.5 px)
    title_lines = textwrap.wrap(title, max(20, (width - 2 * margin) // 11)) or [""]
    sub_lines = textwrap.wrap(subtitle, max(20, (width - 2 * margin) // 8)) if subtitle else []
    header = margin + 24 * len(title_lines) + 18 * len(sub_lines) + (30 if swatches else 0) + 30
    height = header + rows * (th + score_h + gap) + margin
    fig = _canvas(width / dpi, height / dpi, dpi)

    def at(x: float, y: float) -> tuple[float, float]:  # pixels from the top left -> figure fraction
        return x / width, 1.0 - y / height

    def pair_left(p: int) -> float:  # the x of pair p's label column
        return margin + p * (pair_w + pair_gap)

    y = margin
    for line in title_lines:
        fig.text(*at(margin, y), line, fontsize=14, fontweight="bold", ha="left", va="top")
        y += 24
    for line in sub_lines:
        fig.text(*at(margin, y), line, fontsize=10.5, ha="left", va="top", color="0.2")
        y += 18
    if swatches:
        fig.text(*at(margin, y + 11), "target palette", fontsize=9.5, ha="left", va="center")
        size, x0 = 20, margin + 100
        for k, colour in enumerate(swatches):
            sx, sy = at(x0 + k * (size + 4), y + 1 + size)
            ax = fig.add_axes((sx, sy, size / width, size / height), label=f"swatch {k}")
            ax.set_facecolor(colour)
            ax.set_xticks([])
            ax.set_yticks([])
        y += 30
    for p in range(per_row):
        for c, name in enumerate(columns):
            fig.text(*at(pair_left(p) + label_w + c * (tw + gap) + tw / 2, y + 22), name, fontsize=10.5,
                     fontweight="bold", ha="center", va="bottom")
    y += 30
    if per_row > 1:  # the line between the two pairs, from the column headings to the last row
        from matplotlib.lines import Line2D

        x = pair_left(1) - pair_gap / 2
        fig.add_artist(Line2D([x / width] * 2, [at(0, y - 26)[1], at(0, height - margin)[1]],
                              transform=fig.transFigure, color="0.75", linewidth=1.0))
    for i in range(n):
        top, left = y + (i // per_row) * (th + score_h + gap), pair_left(i % per_row) + label_w
        fig.text(*at(pair_left(i % per_row), top + th / 2), "\n".join(textwrap.wrap(str(row_labels[i]), 22)[:3]),
                 fontsize=10, ha="left", va="center")
        for c, (column, scores) in enumerate(((tiles[0], before_scores), (tiles[1], after_scores))):
            x0, y0 = at(left + c * (tw + gap) - 1, top + th + 1)
            # a grey axes one pixel larger under the render: renders on white need an edge, and a
            # spine would be drawn over the render's own border pixels
            edge = fig.add_axes((x0, y0, (tw + 2) / width, (th + 2) / height), label="edge")
            edge.set_facecolor("0.8")
            edge.set_xticks([])
            edge.set_yticks([])
            edge.spines[:].set_visible(False)
            x0, y0 = at(left + c * (tw + gap), top + th)
            ax = fig.add_axes((x0, y0, tw / width, th / height), label=f"{('before', 'after')[c]} {i}")
            ax.imshow(column[i], interpolation="nearest", extent=(0, tw, th, 0))
            ax.set_axis_off()
            if scores is not None:
                fig.text(*at(left + c * (tw + gap) + tw / 2, top + th + 2), f"{score_name} {scores[i]:.3f}",
                         fontsize=9, ha="center", va="top", color="0.25")
    return fig


def before_after_sheet(path: str | os.PathLike, before: Sequence, after: Sequence, row_labels: Sequence[str],
                       title: str, **kwargs) -> Path:
    """Write :func:`before_after_figure` (same arguments) to ``path`` (PNG); returns the path."""
    return _save(before_after_figure(before, after, row_labels, title, **kwargs), path, layout=False)
