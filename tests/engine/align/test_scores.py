"""The pieces of the loss, checked against autograd and finite differences."""
import pytest
import torch

from engine.align.config import AlignConfig
from engine.align.methods import Chunk, StepContext, reward_and_gradient, reward_gradients
from engine.align.objective import RenderedReward
from engine.models.embedded.model import EmbeddedConfig, EmbeddedModel
from engine.render.cameras import OrbitConfig, orbit_cameras
from engine.render.volume import VolumeRenderConfig
from engine.rewards import PaletteReward
from engine.sampling.sampler import gaussian_log_prob, guided_output, transition


def test_transition_score_is_the_gradient_of_the_gaussian_log_density():
    model = EmbeddedModel(EmbeddedConfig())
    scheduler = model.make_scheduler("ddim")
    scheduler.set_timesteps(20)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, *model.latent_shape, generator=g)
    embeds = model.encode_prompts(["a red cube", "a blue torus"])
    t = scheduler.timesteps[5]
    with torch.no_grad():
        out = guided_output(model, x_t, t.reshape(1), embeds, model.unconditional_embeds(2), 4.0)
    mean, std = transition(scheduler, out, int(t), x_t, 1.0)
    x_prev = (mean + std.view(-1, 1, 1, 1, 1) * torch.randn(mean.shape, generator=g)).requires_grad_(True)
    (autograd,) = torch.autograd.grad(gaussian_log_prob(x_prev, mean, std).sum(), x_prev)
    score = -(x_prev.detach() - mean) / std.view(-1, 1, 1, 1, 1) ** 2
    assert torch.allclose(autograd, score, rtol=1e-5, atol=1e-6)


def _palette_setup(**config):
    """A float64 embedded model with a palette reward on 2 views: (model, scheduler, ctx, chunk)."""
    torch.manual_seed(0)
    model = EmbeddedModel(EmbeddedConfig())
    model.denoiser.double()
    model.autoencoder.double()
    model.text_encoder.double()
    model.config.render_resolution = 12
    cfg = AlignConfig(render=VolumeRenderConfig(resolution=10, samples=16, sharpness=0.05), image_noise=0.0,
                      reward_weighting="sqrt", **config)
    objective = RenderedReward(model, PaletteReward([(1.0, 0.2, 0.1), (0.1, 0.3, 0.9)], softness=0.2, alpha_threshold=0.0),
                               OrbitConfig(views=2), cfg.render, image_noise=0.0)
    scheduler = model.make_scheduler("ddim")
    scheduler.set_timesteps(20)
    prompts = ["a red cube"]
    cond = model.encode_prompts(prompts)
    chunk = Chunk(latents=None, model_outputs=None, stds=None, log_probs=None, prompts=prompts,
                  cond=cond, uncond=model.unconditional_embeds(1), transitions=[])
    ctx = StepContext(model, scheduler, cfg, objective, orbit_cameras(OrbitConfig(views=2)), 3.0, torch.Generator())
    return model, scheduler, ctx, chunk


def test_reward_gradient_through_denoiser_decoder_renderer_matches_finite_differences(assert_reward_gradient):
    model, scheduler, ctx, chunk = _palette_setup()
    x = torch.randn(1, *model.latent_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.5
    k = 12  # an intermediate state: the gradient runs through the denoiser's clean prediction
    r, g, w = reward_and_gradient(ctx, chunk, x, k)
    assert g.dtype == torch.float64 and g.abs().sum() > 0
    a = float(scheduler.alphas_cumprod[int(scheduler.timesteps[k])])
    assert abs(w - a ** 0.5) < 1e-12
    assert_reward_gradient(ctx, chunk, x, k, g)


def test_cheap_intermediate_reward_gradients_are_exact_for_their_detail_and_leave_the_terminal_state_alone(assert_reward_gradient):
    """intermediate_detail / intermediate_views coarsen only the states before the terminal one; the
    batched call equals one call per state, and the coarse gradient is still the gradient (FD)."""
    model, scheduler, full, chunk = _palette_setup()
    _, _, cheap, _ = _palette_setup(intermediate_detail=0.5, intermediate_views=2)
    x = torch.randn(1, *model.latent_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.5
    clean = torch.randn(1, *model.latent_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 0.5
    K = len(scheduler.timesteps)
    r, g, w = reward_gradients(cheap, chunk, torch.cat([x, clean]), [12, K])
    r_end, g_end, _ = reward_gradients(full, chunk, clean, [K])  # the terminal state: full detail either way
    assert torch.allclose(r[1:], r_end) and torch.allclose(g[1:], g_end)
    r_in, g_in, _ = reward_gradients(cheap, chunk, x, [12])
    assert torch.allclose(r[:1], r_in) and torch.allclose(g[:1], g_in)
    r_full, g_full, _ = reward_gradients(full, chunk, x, [12])
    assert not torch.allclose(g_in, g_full)  # coarser decode and render: a different (cheaper) estimate
    assert_reward_gradient(cheap, chunk, x, 12, g_in)


def test_intermediate_detail_is_validated():
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="intermediate_detail"):
            AlignConfig(intermediate_detail=bad)


def test_cameras_per_transition_gives_every_state_its_own_views():
    model, scheduler, ctx, chunk = _palette_setup(cameras_per_transition=True, intermediate_views=1)
    seen = []
    objective = ctx.objective
    original = type(objective).__call__

    def recording(self, latents, prompts, views, generator=None, detail=1.0):
        seen.append((latents.shape[0], views.azimuth.clone(), detail))
        return original(self, latents, prompts, views, generator, detail)

    type(objective).__call__ = recording
    try:
        x = torch.randn(3, *model.latent_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.5
        K = len(scheduler.timesteps)
        ctx.generator.manual_seed(0)
        r, g, _ = reward_gradients(ctx, chunk, x, [8, 12, K])
    finally:
        type(objective).__call__ = original
    assert [n for n, _, _ in seen] == [1, 1, 1] and [len(a) for _, a, _ in seen] == [1, 1, 2]
    assert not torch.equal(seen[0][1], seen[1][1])  # fresh cameras, not the round's shared ones
    assert torch.isfinite(g).all() and g.abs().sum() > 0 and r.shape == (3,)
