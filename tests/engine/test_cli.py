import json
import subprocess
import sys
import time
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


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


ALIGN = ["align", "--reward", "palette", "--option", "palette.palette=#ff8800"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["generate", "--prompt", "a red cube", "--adapter-weight", "nan"], "--adapter-weight must be a finite number, got nan"),
        (["generate", "--prompt", "a red cube", "--adapter-weight", "inf"], "--adapter-weight must be a finite number"),
        (["generate", "--prompt", "a red cube", "--count", "1000000000"], "--count must be in 1..256, got 1000000000"),
        (["generate", "--prompt", "a red cube", "--guidance", "nan"], "--guidance must be a finite number"),
        ([*ALIGN, "--beta", "1e30"], "beta must be in [0, 1e+12], got 1e+30"),
        ([*ALIGN, "--beta", "nan"], "beta must be a finite number, got nan"),
        ([*ALIGN, "--lr", "inf"], "lr must be a finite number, got inf"),
        ([*ALIGN, "--lr", "1e30"], "lr must be in [0, 1], got 1e+30"),
        (["align", "--reward", "1e999*palette", "--option", "palette.palette=#ff8800"], "the weight 1e999 is too large"),
        ([*ALIGN, "--eval-seeds", "1000000000"], "eval_seeds must be in 1..64, got 1000000000"),  # was MemoryError
        ([*ALIGN, "--threads", "1000000000"], "--threads must be in 0.."),
        (["generate", "--prompt", "a red cube", "--threads", "1000000000"], "--threads must be in 0.."),
        (["generate", "--prompt", "a red cube", "--threads", "-2"], "--threads must be in 0.."),
    ],
)
def test_non_finite_or_absurd_numbers_are_one_line_and_exit_2(tmp_path, capsys, argv, words):
    t0 = time.perf_counter()
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert words in _one_line_error(capsys)
    assert time.perf_counter() - t0 < 20  # answered before any work (--count 1e9 took 32 s to fail with MemoryError)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device", ["cuda", "mps"])
@pytest.mark.parametrize("command", [["generate", "--prompt", "a red cube"], ALIGN])
def test_unavailable_device_is_one_line_naming_the_offered_devices(tmp_path, capsys, monkeypatch, command, device):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU build of torch, whatever this machine has
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert main([*command, "--device", device, "--out", str(tmp_path / "out")]) == 2
    assert _one_line_error(capsys) == f"error: device {device!r} is not available: this torch ({torch.__version__}) offers auto, cpu\n"
    assert not (tmp_path / "out").exists()


LONG_PROMPT = ("a weathered bronze statue of a horse rearing on a marble plinth, " * 5)[:320]


def test_a_320_character_open_text_prompt_gets_bounded_file_names(tmp_path, tiny_shap_e):
    """File names were the whole prompt: "File name too long" after sampling. engine.naming.slug bounds them."""
    from engine.naming import slug

    out = tmp_path / "gen"
    code = main(["generate", "--model", "shap-e", "--model-path", str(tiny_shap_e), "--prompt", LONG_PROMPT,
                 "--count", "1", "--steps", "2", "--scheduler", "heun", "--seed", "7", "--out", str(out)])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (asset,) = manifest["assets"]
    assert manifest["prompt"] == LONG_PROMPT  # the prompt itself is kept whole
    assert asset["file"] == f"{slug(LONG_PROMPT)}_seed7.glb" and len(asset["file"]) <= 80
    assert len(load_mesh(out / asset["file"]).faces) == asset["faces"]
