"""DiffSplat end to end on a tiny random DiffSplat saved in the real layout (tests/conftest.py):
offline loading with clear errors, decoding differentiable through the splat rasteriser, and the
CLI generating, aligning with every method and reloading adapters."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine.models import load_model
from engine.models.errors import ModelLoadError
from engine.render import render
from engine.render.cameras import OrbitConfig, orbit_cameras
from engine.render.splat_render import SplatRenderConfig
from engine.render.types import GaussianSplats


@pytest.fixture(scope="module")
def model(tiny_diffsplat):
    return load_model("diffsplat", tiny_diffsplat)


def test_loads_the_folder_with_its_settings(model):
    assert model.latent_shape == (4, 4, 8, 8) and model.splatter_resolution == 16
    assert model.settings.max_token_length == 16 and model.settings.scale_max == 0.08  # diffsplat.json
    assert model.settings.radius == 1.4 and model.default_guidance == 4.5  # official defaults
    assert model.scaling_factor == 0.5 and model.shift_factor == 0.0  # the VAE's config
    assert model.vocabulary() is None


def test_missing_wrong_and_corrupt_folders_say_what_is_expected(tmp_path, tiny_diffsplat, tiny_shap_e):
    for folder in (tmp_path / "nowhere", tiny_shap_e):
        with pytest.raises(ModelLoadError, match="no DiffSplat weights.*missing transformer/config.json.*"
                                                 "scripts/convert_diffsplat.py"):
            load_model("diffsplat", folder)
    with pytest.raises(ValueError, match="needs the folder of its weights.*scripts/convert_diffsplat.py --out DIR"):
        load_model("diffsplat")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_diffsplat, broken)
    (broken / "vae" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=f"could not load DiffSplat from {broken}.*convert_diffsplat"):
        load_model("diffsplat", broken)
    shutil.rmtree(broken)
    shutil.copytree(tiny_diffsplat, broken)
    (broken / "diffsplat.json").write_text('{"radius": -1}')
    with pytest.raises(ModelLoadError, match="could not load DiffSplat.*radius"):
        load_model("diffsplat", broken)
    shutil.rmtree(broken)
    shutil.copytree(tiny_diffsplat, broken)  # an SD VAE (4 image channels) where the GSVAE belongs
    config = json.loads((broken / "vae" / "config.json").read_text())
    config["in_channels"] = config["out_channels"] = 3
    (broken / "vae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError):
        load_model("diffsplat", broken)


def test_decode_gives_pixel_aligned_splats_in_the_scene(model):
    latents = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        splats = model.decode(latents)
        images = model.decode_splatter(latents)
    assert isinstance(splats, GaussianSplats) and splats.means.shape == (2, 4 * 16 * 16, 3)
    assert images.shape == (2, 4, 12, 16, 16) and images.abs().max() <= 1.0
    assert torch.allclose(splats.colors, ((images[:, :, :3] + 1) / 2).permute(0, 1, 3, 4, 2).reshape(2, -1, 3))
    assert splats.means.abs().max() < 1.2  # the tiny GSVAE's depths stay near the orbit radius
    out = render(splats, orbit_cameras(OrbitConfig(views=2)), SplatRenderConfig(resolution=16, backend="torch"))
    assert out.rgb.shape == (2, 2, 3, 16, 16) and out.alpha.amax() > 0.5


def test_reward_gradients_reach_the_latents_through_the_gsvae_and_the_rasteriser(tiny_diffsplat):
    """Central finite differences of a rendered reward in float64 against autograd, through
    un-scaling, the GSVAE, the clamp, unprojection, the frame change and the rasteriser."""
    model = load_model("diffsplat", tiny_diffsplat)
    model.vae.double()
    cameras = orbit_cameras(OrbitConfig(views=2))
    config = SplatRenderConfig(resolution=8, backend="torch")
    target = torch.tensor([0.9, 0.2, 0.1], dtype=torch.float64)

    def reward(latents):
        out = render(model.decode(latents), cameras, config)
        return -((out.rgb - target[:, None, None]) ** 2).mean() + out.depth.mean() * 0.1

    g = torch.Generator().manual_seed(4)
    x = (torch.randn(1, *model.latent_shape, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    (grad,) = torch.autograd.grad(reward(x), x)
    assert grad.abs().sum() > 0
    for seed in range(2):
        v = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        eps = 1e-6
        with torch.no_grad():
            fd = (reward(x + eps * v) - reward(x - eps * v)) / (2 * eps)
        assert float((grad * v).sum()) == pytest.approx(float(fd), rel=1e-4, abs=1e-8)


def test_cli_generates_aligns_and_reloads_the_adapter_and_refuses_another_models(tiny_diffsplat, tmp_path, capsys):
    from engine.cli import main
    from engine.geometry.mesh import load_mesh

    diffsplat = ["--model", "diffsplat", "--model-path", str(tiny_diffsplat)]
    gen = ["generate", "--prompt", "a wooden chair", "--count", "2", "--steps", "3", *diffsplat]
    assert main([*gen, "--out", str(tmp_path / "base"), "--scheduler", "dpmsolver-sde"]) == 0
    glbs = sorted((tmp_path / "base").glob("*.glb"))
    assert len(glbs) == 2 and all(len(load_mesh(p).vertices) > 0 for p in glbs)

    align = ["align", "--reward", "dnc", "--steps", "1", "--trajectories", "1", "--views", "1", "--resolution", "8",
             "--sampling-steps", "3", "--eval-seeds", "1", "--prompt", "a wooden chair", *diffsplat]
    assert main([*align, "--out", str(tmp_path / "run")]) == 0
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "diffsplat"
    assert main([*gen, "--out", str(tmp_path / "tuned"), "--adapter", str(adapter)]) == 0
    assert len(list((tmp_path / "tuned").glob("*.glb"))) == 2
    capsys.readouterr()
    embedded = ["generate", "--prompt", "a red cube", "--count", "1", "--steps", "2"]
    assert main([*embedded, "--out", str(tmp_path / "x"), "--adapter", str(adapter)]) == 2
    assert "trained for model 'diffsplat', not 'embedded'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["nabla", "ddpo", "refl", "draft"])
def test_every_method_aligns_from_the_cli_and_its_adapter_loads(method, tiny_diffsplat, tmp_path):
    """`align --method M` for one round on a weighted reward writes an adapter whose LoRA moved
    (B starts at zero), and `generate --adapter` takes it."""
    from safetensors.torch import load_file

    from engine.cli import main

    diffsplat = ["--model", "diffsplat", "--model-path", str(tiny_diffsplat)]
    assert main(["align", "--method", method, "--reward", "0.5*dnc + palette", "--option", "palette.palette=red",
                 "--steps", "1", "--trajectories", "2", "--views", "1", "--resolution", "8", "--sampling-steps", "2",
                 "--eval-seeds", "1", "--prompt", "a wooden chair", *diffsplat, "--out", str(tmp_path / "run")]) == 0
    weights = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items()), f"{method} left every LoRA B at zero"
    assert main(["generate", "--prompt", "a wooden chair", "--count", "1", "--steps", "2", *diffsplat,
                 "--adapter", str(tmp_path / "run" / "adapter"), "--out", str(tmp_path / "tuned")]) == 0
    assert len(list((tmp_path / "tuned").glob("*.glb"))) == 1


def test_lora_reaches_the_official_targets_and_the_conditioning_layers(tiny_diffsplat):
    from peft.tuners.lora import LoraLayer

    from engine.align.lora import add_lora, lora_parameters

    model = load_model("diffsplat", tiny_diffsplat)
    add_lora(model, rank=2, target_modules=model.lora_target_modules + model.lora_conditioning_modules)
    wrapped = {n for n, m in model.denoiser.named_modules() if isinstance(m, LoraLayer)}
    for target in model.lora_conditioning_modules:
        assert target in wrapped, target
    for block in range(2):
        for name in ("attn1.to_q", "attn2.to_k", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2"):
            assert f"transformer_blocks.{block}.{name}" in wrapped
    assert "proj_out" in wrapped
    x = torch.randn(1, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    embeds = model.encode_prompts(["a chair"])
    with torch.no_grad():
        base = model.denoise(x, torch.tensor([500]), embeds)
        for i, p in enumerate(lora_parameters(model)):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.1)
        assert not torch.allclose(model.denoise(x, torch.tensor([500]), embeds), base, atol=1e-4)
