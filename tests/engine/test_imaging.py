"""Plots a reader can read: round tick values, and a legend that never covers the data."""
import math

import numpy as np
import pytest

from engine.imaging import LEGEND_WIDTH, line_plot, nice_ticks


@pytest.mark.parametrize("lo, hi", [(-0.2499, -0.04354), (0.0, 1.0), (1, 100), (-3.7e-5, 2.2e-5), (0.9786, 0.9899),
                                    (-1234.5, 98765.0), (5.0, 5.0)])
def test_ticks_are_round_and_cover_the_range(lo, hi):
    ticks, decimals = nice_ticks(lo, hi)
    assert 3 <= len(ticks) <= 8
    assert ticks[0] <= lo and ticks[-1] >= hi
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(abs(mantissa - m) < 1e-6 for m in (1, 2, 2.5, 5))
    assert all(abs((b - a) - step) < 1e-9 * max(1.0, abs(step)) for a, b in zip(ticks, ticks[1:]))
    labels = [f"{t:.{decimals}f}" for t in ticks]
    assert len(set(labels)) == len(labels)  # enough decimals to tell ticks apart
    assert all(abs(float(l) - t) < 1e-9 * max(1.0, abs(t)) for l, t in zip(labels, ticks))  # and no more needed


def test_reward_curve_ticks_of_the_issue_are_round():
    ticks, decimals = nice_ticks(-0.2499, -0.04354)
    assert [f"{t:.{decimals}f}" for t in ticks] == ["-0.3", "-0.2", "-0.1", "0.0"]


def test_legend_sits_beside_the_plot_area_not_on_the_data():
    w, h = 640, 400
    # a line hugging the top-right corner, where the legend used to be drawn
    series = {"a long legend label": [(0, 0.0), (10, 1.0), (20, 1.0)], "second": [(0, 0.5), (20, 0.6)]}
    img = np.asarray(line_plot(series, title="t", size=(w, h)))
    frame_right = w - 30 - LEGEND_WIDTH
    black = (img < 40).all(-1)
    assert black[40:h - 60, frame_right].mean() > 0.9  # the plot frame's right edge
    first = np.array([0x1f, 0x77, 0xb4])
    coloured = (np.abs(img.astype(int) - first) < 30).all(-1)
    legend_px = coloured[:, frame_right + 2:].sum()
    inside_px = coloured[:, :frame_right - 1].sum()
    assert legend_px > 0 and inside_px > 0  # legend text outside, the line inside
    # the legend's rows to the right hold no line pixels: only text of the legend's colours
    second = np.array([0xd6, 0x27, 0x28])
    assert (np.abs(img[:, frame_right + 2:].astype(int) - second) < 30).all(-1).sum() > 0
