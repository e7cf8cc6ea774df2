"""Shap-E through diffusers, on a tiny random Shap-E saved in the real layout (tests/conftest.py):
the engine's pieces reproduce diffusers' own pipeline, the field is differentiable without touching
the global RNG, loading is offline with clear errors, and the CLI generates and aligns on it."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from engine.models import load_model
from engine.models.errors import ModelLoadError
from engine.models.embedded.model import WEIGHTS_DIR
from engine.models.prompts import PromptError
from engine.models.shap_e.field import ShapEField
from engine.render.cameras import OrbitConfig, orbit_cameras
from engine.render.volume import VolumeRenderConfig, render_field
from engine.sampling.sampler import SamplerConfig, sample


@pytest.fixture(scope="module")
def model(tiny_shap_e):
    return load_model("shap-e", tiny_shap_e)


@pytest.fixture(scope="module")
def pipeline(tiny_shap_e):
    from diffusers import ShapEPipeline

    return ShapEPipeline.from_pretrained(tiny_shap_e, local_files_only=True)


def test_heun_sampling_reproduces_diffusers_shap_e_pipeline(model, pipeline):
    """Prompt embedding, guidance, the prior's output and the native Heun sampler all as diffusers has them."""
    ours = sample(model, ["a red chair"], [7], SamplerConfig(steps=5, scheduler="heun", guidance=15.0)).latents
    theirs = pipeline("a red chair", num_inference_steps=5, guidance_scale=15.0, generator=torch.Generator().manual_seed(7),
                      output_type="latent").images
    assert ours.shape == theirs.shape == (1, *model.latent_shape)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_open_prompts_are_taken_and_blank_ones_refused(model):
    assert model.vocabulary() is None
    model.validate_prompts(["a wooden chair with armrests", "an avocado armchair"])
    with pytest.raises(PromptError, match="non-blank"):
        model.encode_prompts(["a chair", "  "])


def test_the_field_is_the_renderers_mlp_with_the_latents_weights(model):
    """ShapEField.query gives what diffusers' decode path computes after copying the projected
    weights into the MLP, with the engine's sign (negative inside) and sRGB colour."""
    latents = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    points = torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    sdf, colour = model.decode(latents).query(points)
    renderer = model.renderer
    projected = renderer.params_proj(latents)
    for i in range(2):
        mlp = copy.deepcopy(renderer.mlp)
        with torch.no_grad():
            for name, param in mlp.state_dict().items():
                if f"nerstf.{name}" in projected:
                    param.copy_(projected[f"nerstf.{name}"][i])
            ref = mlp(position=points[i : i + 1], direction=None, ts=None, nerf_level="fine", rendering_mode="stf")
        assert torch.allclose(sdf[i], -ref.signed_distance[0, :, 0], atol=1e-6)
        assert torch.allclose(colour[i], ref.channels[0], atol=1e-6)


def test_normals_are_the_unit_gradient_of_the_distance(model):
    latents = torch.randn(1, *model.latent_shape, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    field = ShapEField.from_latents(copy.deepcopy(model.renderer).double(), latents.double())  # float64 for FD
    points = torch.rand(1, 20, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.6 - 0.8
    _, _, normals = field.sample(points)
    eps = 1e-5
    fd = torch.stack([(field.query(points + eps * e)[0] - field.query(points - eps * e)[0]) / (2 * eps)
                      for e in torch.eye(3)], -1)
    fd = fd / fd.norm(dim=-1, keepdim=True)
    assert torch.allclose(normals, fd, atol=1e-6)
    with torch.no_grad():  # the renderer samples fields under no_grad too (evaluation)
        _, _, quiet = field.sample(points)
    assert torch.allclose(quiet, normals) and not quiet.requires_grad


def test_decoding_rendering_and_meshing_leave_the_global_rng_alone(model):
    """diffusers' Shap-E ray sampler calls torch.manual_seed(0); the engine's path must not."""
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    latents = sample(model, ["a lamp"], [0], SamplerConfig(steps=3)).latents
    field = model.decode(latents)
    render_field(field, orbit_cameras(OrbitConfig(views=2)), VolumeRenderConfig(resolution=8, samples=8))
    model.latents_to_meshes(latents)
    assert torch.equal(torch.get_rng_state(), state)


def test_missing_wrong_and_corrupt_folders_say_what_is_expected(tmp_path, tiny_shap_e):
    for folder in (tmp_path / "nowhere", WEIGHTS_DIR):
        with pytest.raises(ModelLoadError, match="missing model_index.json.*hf download openai/shap-e"):
            load_model("shap-e", folder)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_shap_e, broken)
    (broken / "prior" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=f"could not load Shap-E from {broken}"):
        load_model("shap-e", broken)


class _Payload:
    """Pickled, this runs ``touch <marker>`` when unpickled: what a malicious .bin can do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("part, weights", [("text_encoder", "model.safetensors"),
                                           ("prior", "diffusion_pytorch_model.safetensors")])
def test_a_pickled_bin_is_a_model_load_error_and_never_unpickled(tmp_path, tiny_shap_e, part, weights):
    """Once an uncaught UnpicklingError; now weights are read from safetensors only, so a .bin's
    payload cannot run even under a torch whose weights-only unpickler would let it through."""
    import pickle

    folder = tmp_path / "shap-e"
    shutil.copytree(tiny_shap_e, folder)
    (folder / part / weights).unlink()
    marker = tmp_path / "payload_ran"
    bin_name = "pytorch_model.bin" if part == "text_encoder" else "diffusion_pytorch_model.bin"
    with open(folder / part / bin_name, "wb") as f:
        pickle.dump({"weight": _Payload(marker)}, f)
    with pytest.raises(ModelLoadError, match=f"could not load Shap-E from {folder}.*safetensors"):
        load_model("shap-e", folder)
    assert not marker.exists()


def test_without_a_folder_the_hugging_face_cache_is_read_offline(tmp_path, tiny_shap_e, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache.*hf download openai/shap-e"):
        load_model("shap-e")
    # The cache's own layout: refs/main names a snapshot folder holding the files.
    repo = tmp_path / "cache" / "models--openai--shap-e"
    shutil.copytree(tiny_shap_e, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert load_model("shap-e").latent_shape == load_model("shap-e", tiny_shap_e).latent_shape


def test_cli_generates_aligns_and_reloads_the_adapter(tiny_shap_e, tmp_path, capsys):
    from engine.cli import main
    from engine.geometry.mesh import load_mesh

    shap_e = ["--model", "shap-e", "--model-path", str(tiny_shap_e)]
    gen = ["generate", "--prompt", "a wooden chair", "--count", "2", "--steps", "3", *shap_e]
    assert main([*gen, "--out", str(tmp_path / "base"), "--scheduler", "heun"]) == 0
    glbs = sorted((tmp_path / "base").glob("*.glb"))
    assert len(glbs) == 2 and all(len(load_mesh(p).vertices) > 0 for p in glbs)

    align = ["align", "--reward", "dnc", "--steps", "2", "--trajectories", "1", "--views", "1", "--resolution", "12",
             "--sampling-steps", "3", "--eval-seeds", "1", "--prompt", "a wooden chair", *shap_e]
    assert main([*align, "--out", str(tmp_path / "run")]) == 0
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "shap-e"
    assert main([*gen, "--out", str(tmp_path / "tuned"), "--adapter", str(adapter)]) == 0
    assert len(list((tmp_path / "tuned").glob("*.glb"))) == 2
    capsys.readouterr()

    # An adapter belongs to its model: the embedded model refuses Shap-E's, and Shap-E the embedded one's.
    embedded = ["generate", "--prompt", "a red cube", "--count", "1", "--steps", "2"]
    assert main([*embedded, "--out", str(tmp_path / "x"), "--adapter", str(adapter)]) == 2  # bad input
    assert "trained for model 'shap-e', not 'embedded'" in capsys.readouterr().err
    assert main(["align", "--reward", "dnc", "--steps", "1", "--trajectories", "1", "--views", "1", "--resolution", "8",
                 "--sampling-steps", "2", "--eval-seeds", "1", "--out", str(tmp_path / "emb")]) == 0
    assert main([*gen, "--out", str(tmp_path / "y"), "--adapter", str(tmp_path / "emb" / "adapter")]) == 2
    assert "trained for model 'embedded', not 'shap-e'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["nabla", "ddpo", "refl", "draft"])
def test_every_method_trains_on_shap_e_with_a_combined_reward(method, tiny_shap_e, tmp_path):
    """One round of each method on a weighted reward; the job around it is the CLI test's."""
    from engine.align.config import AlignConfig
    from engine.align.lora import load_adapter
    from engine.align.objective import RenderedReward
    from engine.align.trainer import Aligner
    from engine.rewards.registry import build_reward_expression

    model = load_model("shap-e", tiny_shap_e)
    config = AlignConfig.from_dict({"method": method, "steps": 1, "trajectories": 2, "orbit": {"views": 1},
                                    "render": {"resolution": 8, "samples": 8}, "sampler": {"steps": 2}})
    reward = build_reward_expression("0.5*dnc + palette", {"palette": {"palette": "red"}})
    aligner = Aligner(model, RenderedReward(model, reward, config.orbit, config.render, config.image_noise),
                      ["a wooden chair"], config)
    before = {k: v.clone() for k, v in model.denoiser.state_dict().items() if "lora_B" in k}
    (record,) = aligner.run()
    assert torch.isfinite(torch.tensor(record["reward_mean"]))
    moved = [k for k, v in model.denoiser.state_dict().items() if "lora_B" in k and not torch.equal(v, before[k])]
    assert moved, f"{method} left every LoRA weight where it was"
    aligner.save_adapter(tmp_path / "adapter", {})
    fresh = load_model("shap-e", tiny_shap_e)
    load_adapter(fresh, tmp_path / "adapter")
