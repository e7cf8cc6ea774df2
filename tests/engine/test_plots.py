"""Plots drawn with matplotlib: written, non-empty, in the curves' colours, without touching pyplot."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.plots import (COLOURS, before_after_figure, before_after_sheet, frontier_plot, progress_plot,
                          reward_curve_figure, reward_curve_plot, tradeoff_figure, tradeoff_plot)

ROOT = Path(__file__).resolve().parents[2]


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _not_blank(path) -> tuple[int, int]:
    """(width, height) of a PNG that holds more than a background."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        grey = img.convert("L")
        lo, hi = grey.getextrema()
        assert hi - lo > 100 and len(grey.getcolors(maxcolors=1 << 20)) > 20
        return img.size


def _colours(path):
    with Image.open(path) as img:
        return {c for _, c in img.convert("RGB").getcolors(maxcolors=1 << 20)}


def test_frontier_plot_writes_a_png_with_every_curve_in_its_colour(tmp_path):
    path = frontier_plot({"nabla (seed 0)": [(0.3, -0.7), (5.0, -0.5), (12.0, -0.3)],
                          "nabla (seed 1)": [(0.3, -0.7), (6.0, -0.45)],
                          "refl (seed 0)": [(0.3, -0.7), (20.0, -0.29)]},
                         tmp_path / "sub" / "frontier.png", "frontier", marked={"refl (seed 0)": [(20.0, -0.29)]},
                         fd_levels=(5, 10, 20), base=(0.0, -0.74), floor=0.25,
                         groups={"nabla (seed 0)": "nabla", "nabla (seed 1)": "nabla", "refl (seed 0)": "refl"})
    assert path == tmp_path / "sub" / "frontier.png" and path.stat().st_size > 5000
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
    colours = _colours(path)
    assert (0x1F, 0x77, 0xB4) in colours and (0xD6, 0x27, 0x28) in colours  # one colour per method
    assert list(tmp_path.glob("sub/.*")) == []  # no temp file left beside it


def test_frontier_plot_can_leave_out_far_points(tmp_path):
    curves = {"refl": [(0.0, 0.98), (3.5, 0.991), (76.0, 0.0)]}
    near = frontier_plot(curves, tmp_path / "near.png", x_max=30)
    full = frontier_plot(curves, tmp_path / "full.png")
    assert near.stat().st_size > 3000 and near.read_bytes() != full.read_bytes()
    with pytest.raises(ValueError):
        frontier_plot(curves, tmp_path / "bad.png", x_max=0)


def test_progress_plot_writes_a_png(tmp_path):
    path = progress_plot({"nabla": [(0, -0.74), (160, -0.6), (320, -0.4)]}, tmp_path / "p.png", "t", base=-0.74)
    assert path.stat().st_size > 3000 and (0x1F, 0x77, 0xB4) in _colours(path)


@pytest.mark.parametrize("curves", [{}, {"a": []}, {"a": [(float("nan"), 1.0)]}, {"a": [(1.0,)]}])
def test_plots_refuse_empty_or_non_finite_input(tmp_path, curves):
    with pytest.raises(ValueError):
        frontier_plot(curves, tmp_path / "f.png")
    with pytest.raises(ValueError):
        progress_plot(curves, tmp_path / "p.png")
    with pytest.raises(ValueError):
        frontier_plot({"a": [(1.0, 2.0)]}, tmp_path / "f.png", floor=float("inf"))
    assert not list(tmp_path.iterdir())


def test_importing_and_plotting_leave_pyplot_and_the_backend_alone(tmp_path):
    code = ("import sys, engine.plots as p; assert 'matplotlib' not in sys.modules; "
            f"p.progress_plot({{'a': [(0, 1.0), (1, 2.0)]}}, {str(tmp_path / 'x.png')!r}); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


TRAINING = [(1, -0.33, 0.05), (2, -0.30, 0.06), (3, -0.28, 0.04), (4, -0.25, 0.05)]


def test_reward_curve_tells_training_batches_from_held_out_and_says_why(tmp_path):
    caption = "Training rounds see only part of the prompts; held-out: every prompt x 2 seeds."
    fig = reward_curve_figure(TRAINING, [(0, -0.335), (4, -0.263)], "nabla on palette: 4 rounds", caption)
    (ax,) = fig.axes
    assert ax.get_title() == "nabla on palette: 4 rounds" and ax.get_ylabel() == "reward" and ax.get_xlabel() == "round"
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert any(l.startswith("training batch mean") for l in labels) and any(l.startswith("held-out mean") for l in labels)
    handles = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
    training = handles[next(l for l in labels if l.startswith("training batch mean"))]
    held_out = handles[next(l for l in labels if l.startswith("held-out mean"))]
    # line swatches: each entry shows its line and marker, in two different colours
    assert training.get_marker() == "o" and held_out.get_marker() == "s"
    assert training.get_color() != held_out.get_color()
    lines = {l.get_label(): l for l in ax.get_lines()}
    mean_line = next(v for k, v in lines.items() if k.startswith("training batch mean"))
    assert list(mean_line.get_ydata()) == [r[1] for r in TRAINING]
    assert caption in [t.get_text().replace("\n", " ") for t in fig.texts]
    # the title sits above the axes and clear of the y label
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title_box, ylabel_box = ax.title.get_window_extent(renderer), ax.yaxis.label.get_window_extent(renderer)
    assert title_box.y0 >= ax.get_window_extent(renderer).y1 and not title_box.overlaps(ylabel_box)
    # and the legend under the axes, off the data
    assert legend.get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0

    path = reward_curve_plot(tmp_path / "curve.png", TRAINING, [(0, -0.335), (4, -0.263)], "t", caption)
    width, height = _not_blank(path)
    assert (width, height) == (round(fig.get_figwidth() * fig.dpi), round(fig.get_figheight() * fig.dpi))
    colours = _colours(path)
    assert _rgb(COLOURS[0]) in colours and _rgb(COLOURS[1]) in colours


def test_reward_curve_while_training_and_with_no_rounds(tmp_path):
    assert _not_blank(reward_curve_plot(tmp_path / "a.png", TRAINING[:2], [(0, -0.3)], "running")) [0] > 500
    assert _not_blank(reward_curve_plot(tmp_path / "b.png", [], [(0, -0.3), (0, -0.3)], "0 rounds"))[0] > 500
    with pytest.raises(ValueError):
        reward_curve_figure([(1, float("nan"), 0.1)], [(0, -0.3)])
    with pytest.raises(ValueError):
        reward_curve_figure(TRAINING, [])


def _render(rgb, size=48):
    import torch

    return torch.tensor(rgb, dtype=torch.float32)[:, None, None].expand(3, size, size).clone()


def test_before_after_sheet_has_two_pairs_a_row_titled_with_the_run(tmp_path):
    before = [_render((1.0, 0.0, 0.0)), _render((0.0, 0.0, 1.0)), _render((0.0, 1.0, 0.0))]
    after = [_render((1.0, 0.53, 0.0)), _render((1.0, 0.6, 0.1)), _render((0.9, 0.5, 0.0))]
    rows = ["a cube #0", "a torus #0", "a cone #1"]
    title = "nabla on palette, 30 rounds"
    kwargs = dict(subtitle="held-out reward -0.335 -> -0.263", before_scores=[-0.4, -0.3, -0.2],
                  after_scores=[-0.1, -0.2, -0.3], swatches=[(1.0, 0.533, 0.0)])
    fig = before_after_figure(before, after, rows, title, **kwargs)
    texts = [t.get_text() for t in fig.texts]
    assert title in texts and "held-out reward -0.335 -> -0.263" in texts and "target palette" in texts
    assert rows == [t for t in texts if t in rows]
    assert "reward -0.400" in texts and "reward -0.300" in texts
    image_axes = {ax.get_label(): ax for ax in fig.axes if ax.images}
    assert sorted(image_axes) == sorted(f"{c} {i}" for c in ("before", "after") for i in range(3))
    for i in range(3):  # each pair: before on the left, after on the right, at one height
        b, a = image_axes[f"before {i}"].get_position(), image_axes[f"after {i}"].get_position()
        assert b.x1 < a.x0 and abs(b.y0 - a.y0) < 1e-9
    pos = {k: ax.get_position() for k, ax in image_axes.items()}
    # two pairs a row: sample 1 right of sample 0 on its row, sample 2 on the next row, on the left
    assert pos["after 0"].x1 < pos["before 1"].x0 and abs(pos["before 0"].y0 - pos["before 1"].y0) < 1e-9
    assert pos["before 2"].y1 < pos["before 0"].y0 and abs(pos["before 2"].x0 - pos["before 0"].x0) < 1e-9
    swatch = next(ax for ax in fig.axes if ax.get_label().startswith("swatch"))
    assert swatch.get_facecolor()[:3] == pytest.approx((1.0, 0.533, 0.0))

    path = before_after_sheet(tmp_path / "ba.png", before, after, rows, title, **kwargs)
    width, height = _not_blank(path)
    assert (width, height) == (round(fig.get_figwidth() * 100), round(fig.get_figheight() * 100))
    with Image.open(path) as img:
        arr = __import__("numpy").asarray(img.convert("RGB"))
    # every render is drawn pixel for pixel: the pure red before-tile is a 48x48 block
    red = (arr == (255, 0, 0)).all(-1)
    assert red.sum() == 48 * 48
    # an odd count leaves the last row's right half empty: white from the right pair's label column on
    last_row = pos["before 2"]
    top, bottom = round((1 - last_row.y1) * height), round((1 - last_row.y0) * height) + 16  # with the captions
    right_half = next(t for t in fig.texts if t.get_text() == "a torus #0").get_position()[0]
    assert (arr[top:bottom, round(right_half * width) - 2:] == 255).all()
    assert (arr[top - 80:top - 16, round(right_half * width) - 2:] != 255).any()  # where sample 1 is


def test_before_after_sheet_of_the_demos_dozen_samples_is_half_as_tall(tmp_path):
    """The demo's 12 held-out samples at 192 px were one 2.8k px tall column of pairs; two pairs a row
    halve it. Widths and heights are the layout's pixels: a pair is a 170 px label column, two tiles
    and a 10 px gap, 30 px part the two pairs, 14 px margins, and a row is a tile, its 18 px caption
    and a 10 px gap."""
    size = 192

    def sheet(n: int) -> tuple[int, int]:
        images = [_render((1.0, 0.0, 0.0), size)] * n
        path = before_after_sheet(tmp_path / f"ba{n}.png", images, images, [f"a red cube #{i}" for i in range(n)],
                                  "nabla on palette, 30 rounds", subtitle="held-out reward -0.335 -> -0.263",
                                  before_scores=[-0.4] * n, after_scores=[-0.2] * n, swatches=[(1.0, 0.533, 0.0)])
        return _not_blank(path)

    (w1, h1), (w3, h3), (w12, h12) = sheet(1), sheet(3), sheet(12)
    assert w1 == 170 + 2 * size + 10 + 2 * 14  # one sample: one pair, nothing beside it
    assert w3 == w12 == 2 * (170 + 2 * size + 10) + 30 + 2 * 14
    row = size + 18 + 10
    assert h3 - h1 == row and h12 - h1 == 5 * row  # 2 rows for 3 samples, 6 for 12
    assert h12 < 6 * row + 200 < 12 * size


def test_before_after_sheet_refuses_mismatched_input():
    one = [_render((1.0, 0.0, 0.0))]
    with pytest.raises(ValueError, match="as many"):
        before_after_figure(one, one * 2, ["a"], "t")
    with pytest.raises(ValueError, match="same size"):
        before_after_figure(one, [_render((1.0, 0.0, 0.0), 32)], ["a"], "t")
    with pytest.raises(ValueError, match="finite"):
        before_after_figure(one, one, ["a"], "t", before_scores=[float("nan")])
    with pytest.raises(ValueError, match="swatches"):
        before_after_figure(one, one, ["a"], "t", swatches=[(2.0, 0.0, 0.0)])


def test_tradeoff_plot_labels_each_point_in_its_colour(tmp_path):
    points = {"base (floor)": (0.5, -0.33), "nabla": (8.5, -0.2), "refl": (20.0, -0.29), "draft": (float("nan"), 0.0)}
    fig = tradeoff_figure(points, "reward vs drift", colours={"base (floor)": "black", "nabla": COLOURS[1]})
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == ["base (floor)", "nabla", "refl"]  # no drift measured: left out
    assert ax.get_xlim()[0] == 0.0 and ax.get_title() == "reward vs drift"
    path = tradeoff_plot(points, tmp_path / "t.png", "reward vs drift", colours={"nabla": COLOURS[1]})
    _not_blank(path)
    assert _rgb(COLOURS[1]) in _colours(path)
    with pytest.raises(ValueError):
        tradeoff_plot({"a": (float("nan"), 1.0)}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_the_blender_side_never_imports_matplotlib():
    """The add-on's own modules import no plotting library, and the engine modules they use do not
    pull it in either (matplotlib lives in the engine's environment, not in Blender's Python)."""
    import ast

    for folder in ("blender", "operators", "panels"):
        files = list((ROOT / folder).rglob("*.py")) + ([] if folder != "blender" else
                                                        [ROOT / n for n in ("__init__.py", "properties.py", "preferences.py", "batch.py")])
        for file in files:
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n.split(".")[0] in ("matplotlib", "plots") or n.endswith(".plots") for n in names), file
    code = ("import sys, engine.names, engine.naming, engine.models, engine.worker.client, engine.worker.protocol; "
            "assert 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
