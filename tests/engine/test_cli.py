import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.data.grammar import COLOURS, SHAPES
from engine.geometry.mesh import load_mesh

ROOT = Path(__file__).resolve().parents[2]


def test_vocabulary_lists_every_word(capsys):
    assert main(["vocabulary"]) == 0
    out = capsys.readouterr().out
    assert all(w in out for w in (*COLOURS, *SHAPES))


def test_word_outside_vocabulary_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "generate", "--prompt", "a shiny cube", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "'shiny' is not in the vocabulary" in proc.stderr
    assert all(w in proc.stderr for w in (*COLOURS, *SHAPES))
    assert not out.exists()


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["generate", "--prompt", "a red cube", "--count", "1", "--out", str(blocker / "sub")]) == 1
    assert "error:" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_bad_option_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--prompt", "a red cube", "--count", "0", "--out", str(tmp_path)])
    assert info.value.code == 2


def test_generate_writes_meshes_and_manifest(tmp_path):
    out = tmp_path / "gen"
    code = main(["generate", "--prompt", "a red cube", "--seed", "3", "--count", "2", "--out", str(out), "--format", "glb", "--format", "ply"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompt"] == "a red cube" and [a["seed"] for a in manifest["assets"]] == [3, 4]
    assert set(manifest["timings"]) >= {"sample_s", "mesh_s", "export_s", "per_asset_s"}
    for asset in manifest["assets"]:
        mesh = load_mesh(out / asset["file"])
        assert len(mesh.faces) == asset["faces"] > 100
        assert (out / asset["files"]["ply"]).is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp files


def test_demo_writes_meshes_contact_sheet_and_manifest(tmp_path):
    from PIL import Image

    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--prompt", "a red cube", "--prompt", "a blue torus", "--resolution", "48",
                 "--samples", "4", "--steps", "6", "--align-steps", "1"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["prompt"] for a in manifest["assets"]] == ["a red cube", "a blue torus"]
    assert [a["prompt"] for a in manifest["aligned_assets"]] == ["a red cube", "a blue torus"]
    assert all((out / a["file"]).is_file() for a in manifest["assets"] + manifest["aligned_assets"])
    assert manifest["timings"]["base_cycles_s"] > 0 and manifest["timings"]["align_s"] > 0
    assert manifest["alignment"]["rounds"] == 1
    for key in ("adapter", "reward_curve", "report"):
        assert (out / manifest["alignment"][key]).exists()
    sheet = Image.open(out / manifest["contact_sheet"])
    assert sheet.size[0] == 2 * 48 and sheet.size[1] > 2 * 48  # base row over aligned row
    pixels = sheet.convert("RGB").load()
    # The red cube's tile is not blank: some pixel is clearly red.
    assert any(pixels[x, y][0] > 150 and pixels[x, y][1] < 90 for x in range(48) for y in range(48))
