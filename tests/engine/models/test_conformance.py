"""Every model behind the protocol passes the same checks: the closed-form toy, the embedded model,
a tiny random Shap-E and a tiny random DiffSplat (tests/conftest.py). What the sampler, the aligner and the exporters rely
on is asserted here once, for all of them."""
from __future__ import annotations

import pytest
import torch

from engine.align.config import AlignConfig
from engine.align.lora import AdapterError, add_lora, load_adapter, lora_parameters, remove_lora, save_adapter
from engine.align.methods import Chunk, StepContext, reward_and_gradient
from engine.align.objective import LinearReward, RenderedReward
from engine.models import load_model
from engine.models.protocol import DiffusionModel
from engine.models.toy import MixtureToyModel
from engine.render.cameras import OrbitConfig, orbit_cameras
from engine.render.volume import VolumeRenderConfig
from engine.rewards import PaletteReward
from engine.sampling.sampler import SamplerConfig, gaussian_log_prob, guided_output, sample, transition

MODELS = ("toy", "embedded", "shap-e", "diffsplat")
GEOMETRIC = ("embedded", "shap-e", "diffsplat")
PROMPTS = {"toy": ["anything", "at all"], "embedded": ["a red cube", "a blue torus"],
           "shap-e": ["a wooden chair", "a red sports car"], "diffsplat": ["a wooden chair", "a red sports car"]}


@pytest.fixture
def tiny_folders(tiny_shap_e, tiny_diffsplat) -> dict:
    """The folders of the tiny random backbones, by model name."""
    return {"shap-e": tiny_shap_e, "diffsplat": tiny_diffsplat}


def _model(name: str, tiny_folders, dtype=torch.float32):
    if name == "toy":
        model = MixtureToyModel()
        model.denoiser.to(dtype)
        return model
    if name == "embedded":
        model = load_model("embedded")
        model.config.render_resolution = 12
        modules = (model.denoiser, model.autoencoder, model.text_encoder)
    elif name == "shap-e":
        model = load_model("shap-e", tiny_folders["shap-e"])
        modules = (model.denoiser, model.renderer, model.text_encoder)
    else:
        model = load_model("diffsplat", tiny_folders["diffsplat"])
        modules = (model.denoiser, model.vae, model.text_encoder)
    for module in modules:
        module.to(dtype)
    return model


@pytest.fixture(params=MODELS)
def name(request):
    return request.param


def test_implements_the_protocol(name, tiny_folders):
    model = _model(name, tiny_folders)
    assert isinstance(model, DiffusionModel)
    assert set(model.training_schedulers) <= {"ddim", "ddpm", "dpmsolver-sde"}
    names = {n.rsplit(".", 1)[-1] for n, m in model.denoiser.named_modules() if isinstance(m, torch.nn.Linear)}
    full = {n for n, m in model.denoiser.named_modules() if isinstance(m, torch.nn.Linear)}
    for target in model.lora_target_modules:  # every target names Linear layers that exist
        assert any(n == target or n.endswith("." + target) for n in full), target
    assert names


def test_sampling_gives_reproducible_trajectories_of_the_declared_shapes(name, tiny_folders):
    model = _model(name, tiny_folders)
    prompts, k = PROMPTS[name], 4
    config = SamplerConfig(steps=k, scheduler="ddim")
    result = sample(model, prompts, [3, 4], config, return_trajectory=True)
    b, shape = len(prompts), tuple(model.latent_shape)
    traj = result.trajectory
    assert result.latents.shape == (b, *shape) and torch.isfinite(result.latents).all()
    assert traj.latents.shape == (k + 1, b, *shape) and traj.model_outputs.shape == (k, b, *shape)
    assert traj.means.shape == (k, b, *shape) and traj.stds.shape == (k, b) and traj.log_probs.shape == (k, b)
    assert torch.equal(traj.latents[-1], result.latents)
    assert (traj.stds > 0).all()  # DDIM eta 1: every transition stochastic, so every one is trainable
    again = sample(model, prompts[1:], [4], config)
    assert torch.allclose(again.latents[0], result.latents[1], atol=1e-5)  # a (prompt, seed) pair, not the batch


def test_transition_is_the_schedulers_step_and_its_score_the_log_density_gradient(name, tiny_folders):
    model = _model(name, tiny_folders)
    for kind in model.training_schedulers:
        scheduler = model.make_scheduler(kind)
        scheduler.set_timesteps(10)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, *model.latent_shape, generator=g)
        t = scheduler.timesteps[3]
        embeds = model.encode_prompts(PROMPTS[name])
        with torch.no_grad():
            out = guided_output(model, x, t.reshape(1), embeds, model.unconditional_embeds(2), model.default_guidance)
        mean, std = transition(scheduler, out, int(t), x, 1.0)
        noise = torch.randn(x.shape, generator=g)
        if kind == "ddim":
            stepped = scheduler.step(out, int(t), x, eta=1.0, variance_noise=noise).prev_sample
            assert torch.allclose(stepped, mean + std.view(-1, *[1] * (x.dim() - 1)) * noise, atol=1e-5)
        x_prev = (mean + std.view(-1, *[1] * (x.dim() - 1)) * noise).requires_grad_(True)
        (autograd,) = torch.autograd.grad(gaussian_log_prob(x_prev, mean, std).sum(), x_prev)
        score = -(x_prev.detach() - mean) / std.view(-1, *[1] * (x.dim() - 1)) ** 2
        assert torch.allclose(autograd, score, rtol=1e-5, atol=1e-5), kind


def _context(name: str, model):
    if name == "toy":
        objective = LinearReward(torch.tensor([1.0, 0.5]))
    else:
        objective = RenderedReward(model, PaletteReward([(1.0, 0.2, 0.1), (0.1, 0.3, 0.9)], softness=0.2, alpha_threshold=0.0),
                                   OrbitConfig(views=2), VolumeRenderConfig(resolution=10, samples=16, sharpness=0.05),
                                   image_noise=0.0)
    scheduler = model.make_scheduler("ddim")
    scheduler.set_timesteps(10)
    prompts = PROMPTS[name][:1]
    chunk = Chunk(latents=None, model_outputs=None, stds=None, log_probs=None, prompts=prompts,
                  cond=model.encode_prompts(prompts), uncond=model.unconditional_embeds(1), transitions=[])
    cfg = AlignConfig(image_noise=0.0, reward_weighting="sqrt")
    views = objective.sample_views(torch.Generator().manual_seed(0))
    return StepContext(model, scheduler, cfg, objective, views, 3.0, torch.Generator()), chunk


def test_reward_gradients_through_denoiser_decoder_and_renderer_match_finite_differences(name, tiny_folders, assert_reward_gradient):
    model = _model(name, tiny_folders, torch.float64)
    ctx, chunk = _context(name, model)
    x = torch.randn(1, *model.latent_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.5
    k = 6  # an intermediate state: the gradient runs through the denoiser's clean prediction
    r, grad, _ = reward_and_gradient(ctx, chunk, x, k)
    assert grad.dtype == torch.float64 and grad.abs().sum() > 0
    assert_reward_gradient(ctx, chunk, x, k, grad)


@pytest.mark.parametrize("name", GEOMETRIC)
def test_meshes_are_vertex_coloured_and_inside_the_scene_cube(name, tiny_folders):
    model = _model(name, tiny_folders)
    latents = sample(model, PROMPTS[name], [0, 1], SamplerConfig(steps=4)).latents
    meshes = model.latents_to_meshes(latents)
    assert len(meshes) == 2
    for mesh in meshes:
        assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
        assert (abs(mesh.vertices) <= 1.05).all()  # the cube, plus the closing shell at most a voxel outside
        assert ((mesh.colors >= 0) & (mesh.colors <= 1)).all()
    rendered = RenderedReward(model, PaletteReward([(1.0, 0.0, 0.0)])).render(latents, orbit_cameras(OrbitConfig(views=2)))
    assert rendered.alpha.shape == (2, 2, 1, 64, 64) and rendered.alpha.amax() > 0.5  # the field renders too


def test_adapters_round_trip_and_refuse_another_models(name, tiny_folders, tmp_path):
    model = _model(name, tiny_folders)
    add_lora(model, rank=2)
    with torch.no_grad():
        for i, p in enumerate(lora_parameters(model)):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.1)
    x = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([500, 500])
    embeds = model.encode_prompts(PROMPTS[name])
    with torch.no_grad():
        tuned = model.denoise(x, t, embeds)
    folder = save_adapter(model, tmp_path / "adapter")
    fresh = _model(name, tiny_folders)
    with torch.no_grad():
        base = fresh.denoise(x, t, embeds)
    load_adapter(fresh, folder)
    with torch.no_grad():
        assert torch.allclose(fresh.denoise(x, t, embeds), tuned, atol=1e-6)
    assert not torch.allclose(base, tuned, atol=1e-4)
    other = _model({"toy": "embedded", "embedded": "shap-e", "shap-e": "diffsplat", "diffsplat": "shap-e"}[name],
                   tiny_folders)
    with pytest.raises(AdapterError, match=f"trained for model {model.name!r}"):
        load_adapter(other, folder)
    assert not any(True for _ in lora_parameters(other))  # refused before anything was added
    remove_lora(model)
