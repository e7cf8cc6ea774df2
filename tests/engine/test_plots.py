"""Plots drawn with matplotlib: written, non-empty, in the curves' colours, without touching pyplot."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.plots import frontier_plot, progress_plot

ROOT = Path(__file__).resolve().parents[2]


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
