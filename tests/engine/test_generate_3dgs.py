"""``generate --format 3dgs``: the Gaussians of a splat model as a 3DGS PLY beside the meshes."""
import json

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.geometry.mesh import load_mesh
from engine.geometry.splat_ply import PROPERTIES, read_3dgs_ply


@pytest.mark.parametrize("model", ["embedded", "shap-e"])
def test_3dgs_for_a_field_model_is_refused_up_front(tmp_path, capsys, model):
    out = tmp_path / "out"
    code = main(["generate", "--model", model, "--prompt", "a red cube", "--count", "1", "--out", str(out),
                 "--format", "glb", "--format", "3dgs"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "--format 3dgs" in err and model in err and "splat" in err
    assert not out.exists()


def test_keep_splats_is_refused_for_a_model_that_decodes_to_a_field():
    from engine.models import load_model
    from engine.pipeline import generate
    from engine.sampling.sampler import SamplerConfig

    model = load_model("embedded")
    with pytest.raises(ValueError, match="not Gaussian splats"):
        generate(model, ["a red cube"], [0], SamplerConfig(steps=1).for_model(model), keep_splats=True)


def test_generate_writes_a_3dgs_ply_and_a_glb_from_the_same_gaussians(tmp_path, tiny_diffsplat):
    out = tmp_path / "gen"
    code = main(["generate", "--model", "diffsplat", "--model-path", str(tiny_diffsplat), "--prompt", "a red chair",
                 "--count", "2", "--steps", "2", "--seed", "5", "--out", str(out), "--format", "3dgs"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for asset in manifest["assets"]:
        assert set(asset["files"]) == {"glb", "3dgs"}  # 3dgs alone still writes the default mesh
        assert asset["files"]["glb"] == f"a_red_chair_seed{asset['seed']}.glb"
        assert asset["files"]["3dgs"] == f"a_red_chair_seed{asset['seed']}.3dgs.ply"
        mesh = load_mesh(out / asset["files"]["glb"])
        assert len(mesh.vertices) > 0 and len(mesh.faces) == asset["faces"]
        path = out / asset["files"]["3dgs"]
        data = path.read_bytes()
        header = data[: data.index(b"end_header\n")].decode().splitlines()
        assert header[1] == "format binary_little_endian 1.0"
        assert [l.split()[2] for l in header if l.startswith("property")] == list(PROPERTIES)
        splats = read_3dgs_ply(path)
        assert splats.means.shape[1] == asset["gaussians"] > 0
        assert torch.isfinite(splats.means).all() and (splats.opacities > 0).all()
        # The mesh is made from these Gaussians: it lies within their bounds.
        lo, hi = splats.means[0].amin(0).numpy(), splats.means[0].amax(0).numpy()
        assert (mesh.vertices >= lo - 0.1).all() and (mesh.vertices <= hi + 0.1).all()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_pipeline_keeps_the_decoded_gaussians_it_meshed(tiny_diffsplat):
    from engine.models import load_model
    from engine.pipeline import generate
    from engine.sampling.sampler import SamplerConfig

    model = load_model("diffsplat", tiny_diffsplat)
    result = generate(model, ["a cup", "a cup"], [1, 2], SamplerConfig(steps=2).for_model(model), keep_splats=True)
    again = generate(model, ["a cup"], [1], SamplerConfig(steps=2).for_model(model))
    first = result.assets[0]
    assert len(first.splats) == 1 and first.splats.device.type == "cpu" and again.assets[0].splats is None
    decoded = model.decode(first.latent[None])
    np.testing.assert_allclose(first.splats.means, decoded.means.detach().cpu(), atol=1e-5)
    np.testing.assert_allclose(first.mesh.vertices, again.assets[0].mesh.vertices, atol=1e-5)
