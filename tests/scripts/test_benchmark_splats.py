"""scripts/benchmark_splats.py prints its table for a tiny case (CPU)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import benchmark_splats  # noqa: E402


def test_benchmark_prints_a_row_per_case(monkeypatch, capsys):
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", ["benchmark_splats.py", "--device", "cpu", "--sizes", "300,600",
                                      "--resolutions", "16", "--repeats", "1", "--threads", str(threads)])
    benchmark_splats.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| torch |")]
    assert len(rows) == 2
    for row, n in zip(rows, (300, 600)):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "4 x 16^2" and cells[2] == str(n) and int(cells[3]) > 0
        assert all(float(c.split()[0]) > 0 for c in cells[4:])


def test_scenes_stay_inside_the_scene_cube():
    for scene in ("shell", "cube"):
        means, quats, scales, opacities, colors = benchmark_splats.make_scene(5000, scene, torch.Generator().manual_seed(0))
        assert means.abs().max() <= 1.0 and scales.min() >= 0.002 - 1e-9 and scales.max() <= 0.04 + 1e-9
        assert opacities.min() >= 0.05 and opacities.max() <= 1.0 and colors.shape == (5000, 3)
