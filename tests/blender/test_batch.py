"""batch.py as a subprocess (the bpy module standing in for ``blender -b --python batch.py``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def test_batch_writes_blend_glbs_renders_and_log(tmp_path):
    out = tmp_path / "batch"
    cmd = [sys.executable, str(ROOT / "batch.py"), "--", "--prompt", "a red cube", "--device", "cpu",  # the CLI's spelling
           "--count", "2", "--seed", "3", "--steps", "4", "--resolution", "48", "--samples", "4", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    log = json.loads((out / "batch_log.json").read_text())
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out / "batch_log.json").stat().st_mode & 0o777 == 0o666 & ~umask  # was 0600 (tempfile.mkstemp)
    (good,) = log["prompts"]
    assert good["ok"] and log["ok"] and log["args"]["device"] == "cpu"
    assert good["objects"] == ["a red cube (seed 3)", "a red cube (seed 4)"]
    for asset in good["assets"]:
        glb = out / asset["glb"]
        assert glb.read_bytes()[:4] == b"glTF"
        with Image.open(out / asset["render"]) as im:
            px = np.asarray(im.convert("RGB"), np.float32)
        assert px.shape == (48, 48, 3)
        assert px.std() > 5, "the render shows something besides the background"
    assert (out / "renders" / "overview.png").is_file()
    # the prompt's generate folder is kept whole, with its manifest in the one generate schema
    from engine.generate.records import GenerateResult

    manifest = GenerateResult.read(out / good["manifest"])
    assert [(a.seed, str(a.path("glb", manifest.out_dir).relative_to(out))) for a in manifest.assets] == \
        [(a["seed"], a["glb"]) for a in good["assets"]]
    folder = (out / good["manifest"]).parent  # every file there is listed
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(manifest.files())
    assert not (out / ".jobs").exists(), "the job cache is cleaned up"
    assert not list(out.rglob("*.tmp"))

    probe = textwrap.dedent(
        f"""
        import bpy, json
        bpy.ops.wm.open_mainfile(filepath={str(out / 'scene.blend')!r})
        objs = {{o.name: (len(o.data.vertices), o.data.color_attributes.active_color_name,
                          o.data.materials[0].name) for o in bpy.data.objects if o.type == 'MESH'}}
        print("JSON" + json.dumps(objs))
        """
    )
    probe_run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    line = next(ln for ln in probe_run.stdout.splitlines() if ln.startswith("JSON"))
    objs = json.loads(line[4:])
    assert set(objs) == set(good["objects"]), "the saved scene holds the assets and no startup cube"
    for asset in good["assets"]:
        vertices, attribute, material = objs[asset["object"]]
        assert vertices == asset["vertices"] > 100
        assert (attribute, material) == ("Color", "Nabla-R2D3 Vertex Colour")


def test_batch_rejects_bad_arguments_before_doing_anything(tmp_path):
    cmd = [sys.executable, str(ROOT / "batch.py"), "--", "--count", "0", "--prompt", "a cube", "--out", str(tmp_path / "o")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--count must be >= 1" in result.stderr
    assert not (tmp_path / "o").exists()


def test_batch_runs_the_model_from_a_weights_folder(tmp_path):
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(ROOT / "engine" / "models" / "embedded" / "weights", weights)
    out = tmp_path / "batch"
    cmd = [sys.executable, str(ROOT / "batch.py"), "--", "--prompt", "a blue torus", "--count", "1", "--steps", "2",
           "--no-render", "--model", "embedded", "--model-path", str(weights), "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "batch_log.json").read_text())["prompts"][0]["ok"]
    for f in weights.iterdir():
        f.unlink()
    result = subprocess.run([*cmd[:-1], str(tmp_path / "again")], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 1
    assert "embedded model weights not found" in json.loads((tmp_path / "again" / "batch_log.json").read_text())["prompts"][0]["error"]


def test_batch_runs_shap_e_from_its_folder_on_open_prompts(tmp_path, tiny_shap_e):
    out = tmp_path / "batch"
    cmd = [sys.executable, str(ROOT / "batch.py"), "--", "--prompt", "a wooden chair", "--prompt", "an avocado armchair",
           "--count", "1", "--steps", "2", "--no-render", "--model", "shap-e", "--model-path", str(tiny_shap_e),
           "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((out / "batch_log.json").read_text())
    assert [p["ok"] for p in log["prompts"]] == [True, True]


def test_batch_runs_diffsplat_from_its_folder(tmp_path, tiny_diffsplat):
    out = tmp_path / "batch"
    cmd = [sys.executable, str(ROOT / "batch.py"), "--", "--prompt", "a wooden chair", "--count", "1", "--steps", "2",
           "--no-render", "--model", "diffsplat", "--model-path", str(tiny_diffsplat), "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((out / "batch_log.json").read_text())
    assert [p["ok"] for p in log["prompts"]] == [True]


@pytest.mark.parametrize(
    "case, words",
    [
        (["--adapter-weight", "5"], "--adapter-weight must be in [0, 2], got 5"),  # the panel's limits, not clamped
        (["--steps", "5000"], "--steps must be in 1..1000, got 5000"),  # the panel's limit is the engine's
        (["--spacing", "nan"], "--spacing must be a finite number, got nan"),
        (["--guidance", "nan"], "--guidance must be a finite number, got nan"),
        (["--engine-python", "/nonexistent"], "--engine-python /nonexistent does not exist"),
        (["--engine-python", "{tmp}"], "is a folder; give the Python interpreter in it"),
        (["--prompts-file", "{tmp}/bad_prompt.txt"], "'elephant' is not in the vocabulary"),
        (["--prompts-file", "{tmp}/latin1.txt"], "is not UTF-8 text"),
        (["--out", "{tmp}/a_file"], "is a file; give a folder"),
    ],
)
def test_batch_refuses_bad_input_up_front_with_one_message_and_writes_nothing(tmp_path, case, words):
    (tmp_path / "bad_prompt.txt").write_text("a red cube\na purple elephant\n")
    (tmp_path / "latin1.txt").write_bytes("a red cube \u2013 caf\u00e9\n".encode("latin-1", "replace"))
    (tmp_path / "a_file").write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.replace("{tmp}", str(tmp_path)) for a in case]
    out = [] if "--out" in args else ["--out", str(tmp_path / "o")]
    cmd = [sys.executable, str(ROOT / "batch.py"), "--", "--prompt", "a red cube", "--count", "1", "--no-render", *args, *out]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count(words) == 1, result.stderr[-3000:]  # said once (the vocabulary was printed three times)
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out folder, no scene.blend, no log
    assert (tmp_path / "a_file").read_text() == "keep me"
