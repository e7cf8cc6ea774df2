"""scripts/check_real_backbone.py: skips cleanly without a GPU or weights, and its whole path runs
(on the CPU, on a tiny random Shap-E) so it does not rot between the GPU runs it is for."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("check_real_backbone", ROOT / "scripts" / "check_real_backbone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_skips_with_a_reason_and_runs_end_to_end_on_the_cpu(tiny_shap_e, tmp_path, capsys):
    script = _script()
    if not torch.cuda.is_available():
        assert script.main(["--out", str(tmp_path / "x")]) == 0
        assert capsys.readouterr().out.startswith("skipped: no CUDA GPU")
    assert script.main(["--device", "cpu", "--model-path", str(tmp_path / "none"), "--out", str(tmp_path / "y")]) == 0
    assert "skipped: no Shap-E weights in" in capsys.readouterr().out
    out = tmp_path / "run"
    assert script.main(["--device", "cpu", "--model-path", str(tiny_shap_e), "--generate-steps", "2", "--sampling-steps", "2",
                        "--rounds", "1", "--trajectories", "1", "--prompt", "a chair", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "generate (heun, 2 steps)" in printed and "generate (ddim, 2 steps)" in printed
    assert len(list(out.glob("*.glb"))) == 2
    report = json.loads((out / "align_nabla" / "report.json").read_text())
    assert report["model"] == "shap-e" and (out / "align_nabla" / "adapter").is_dir()


def test_runs_end_to_end_on_a_tiny_diffsplat_on_the_cpu(tiny_diffsplat, tmp_path, capsys):
    script = _script()
    assert script.main(["--device", "cpu", "--model", "diffsplat", "--out", str(tmp_path / "x")]) == 0
    assert "skipped: model 'diffsplat' needs the folder of its weights" in capsys.readouterr().out
    out = tmp_path / "run"
    assert script.main(["--device", "cpu", "--model", "diffsplat", "--model-path", str(tiny_diffsplat),
                        "--generate-steps", "2", "--sampling-steps", "2", "--rounds", "1", "--trajectories", "1",
                        "--prompt", "a chair", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "generate (dpmsolver-sde, 2 steps)" in printed and "generate (ddim, 2 steps)" in printed
    assert len(list(out.glob("*.glb"))) == 2
    report = json.loads((out / "align_nabla" / "report.json").read_text())
    assert report["model"] == "diffsplat" and (out / "align_nabla" / "adapter").is_dir()
