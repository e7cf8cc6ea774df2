"""`generate --gallery` and `generate --variations-of MANIFEST#NAME --strength S` end to end (the shared
generate job, engine/generate/job.py, with engine/variation_assets.py and engine/gallery_files.py)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from engine import gallery_files
from engine.cli import main

FAST = ["--steps", "4", "--threads", "1"]


def _latents(folder):
    return {c.name: load_file(c.latent)["latent"] for c in gallery_files.job_candidates(folder)}


def test_variations_of_a_manifest_entry(tmp_path, capsys):
    base, same, moved, deeper = (tmp_path / n for n in ("base", "same", "moved", "deeper"))
    assert main(["generate", "--prompt", "a red cube", "--count", "2", "--seed", "5", "--gallery", "--out", str(base), *FAST]) == 0
    cands = gallery_files.job_candidates(base)
    assert [c.name for c in cands] == ["red_cube_seed5", "red_cube_seed6"]
    assert all(c.thumbnail and c.latent for c in cands)

    assert main(["generate", "--variations-of", f"{base}/manifest.json#1", "--strength", "0", "--count", "2",
                 "--out", str(same), *FAST]) == 0
    manifest = json.loads((same / "manifest.json").read_text())
    assert [a["name"] for a in manifest["assets"]] == ["red_cube_seed6_v1", "red_cube_seed6_v2"]
    assert manifest["sampler"]["steps"] == 4 and manifest["prompts"] == ["a red cube"]
    original = _latents(base)["red_cube_seed6"]
    for z in _latents(same).values():  # strength 0: the asset itself (same batch size: bit for bit)
        assert torch.equal(z, original)

    assert main(["generate", "--variations-of", f"{base}#red_cube_seed6", "--strength", "0.5", "--count", "2",
                 "--variation-start", "3", "--out", str(moved), *FAST]) == 0
    varied = _latents(moved)
    assert list(varied) == ["red_cube_seed6_v3", "red_cube_seed6_v4"]
    assert all(not torch.equal(z, original) for z in varied.values())
    assert gallery_files.read_gallery(moved)["red_cube_seed6_v3"].lineage == ((3, 0.5),)

    assert main(["generate", "--variations-of", f"{moved}#red_cube_seed6_v3", "--strength", "0", "--count", "1",
                 "--out", str(deeper), *FAST]) == 0
    (child,) = _latents(deeper).items()
    assert child[0] == "red_cube_seed6_v3_v1"
    assert torch.allclose(child[1], varied["red_cube_seed6_v3"], atol=1e-4), "a variation of a variation at 0 is its parent"


@pytest.mark.parametrize("argv, words", [
    (["--variations-of", "{base}#0"], "needs --strength"),
    (["--variations-of", "{base}#0", "--strength", "1.5"], "strength must be in [0, 1]"),
    (["--variations-of", "{base}#0", "--strength", "nan"], "finite"),
    (["--variations-of", "{base}#7", "--strength", "0.2"], "has 1 assets"),
    (["--variations-of", "{base}#0", "--strength", "0.2", "--prompt", "a cube"], "drop --prompt"),
    (["--prompt", "a cube", "--strength", "0.2"], "--strength needs --variations-of"),
    ([], "needs --prompt"),
])
def test_bad_variation_requests_exit_2_before_writing(tmp_path, capsys, argv, words):
    base = tmp_path / "base"
    assert main(["generate", "--prompt", "a cube", "--count", "1", "--out", str(base), *FAST]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["generate", *[a.format(base=base) for a in argv], "--out", str(out), *FAST]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()
