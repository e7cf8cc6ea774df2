"""scripts/measure_splat_meshes.py runs end to end (small shapes) and prints the table docs cite."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_one_row_per_shape_and_method(capsys):
    spec = importlib.util.spec_from_file_location("measure_splat_meshes", ROOT / "scripts" / "measure_splat_meshes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--counts", "4096", "--samples", "5000", "--methods", "density 128^3 (default)"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [r[0].split()[0] for r in rows] == ["sphere", "cube"]
    for row in rows:
        chamfer, cpu = float(row[3]), float(row[8])
        assert 0 < chamfer < 0.01 and cpu > 0
