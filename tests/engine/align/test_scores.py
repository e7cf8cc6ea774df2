"""The pieces of the loss, checked against autograd and finite differences."""
import torch

from engine.align.config import AlignConfig
from engine.align.methods import Chunk, StepContext, reward_and_gradient
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


def test_reward_gradient_through_denoiser_decoder_renderer_matches_finite_differences():
    torch.manual_seed(0)
    model = EmbeddedModel(EmbeddedConfig())
    model.denoiser.double()
    model.autoencoder.double()
    model.text_encoder.double()
    model.config.render_resolution = 12
    cfg = AlignConfig(render=VolumeRenderConfig(resolution=10, samples=16, sharpness=0.05), image_noise=0.0,
                      reward_weighting="sqrt")
    objective = RenderedReward(model, PaletteReward([(1.0, 0.2, 0.1), (0.1, 0.3, 0.9)], softness=0.2, alpha_threshold=0.0),
                               OrbitConfig(views=2), cfg.render, image_noise=0.0)
    scheduler = model.make_scheduler("ddim")
    scheduler.set_timesteps(20)
    prompts = ["a red cube"]
    cond = model.encode_prompts(prompts)
    chunk = Chunk(latents=None, model_outputs=None, stds=None, log_probs=None, prompts=prompts,
                  cond=cond, uncond=model.unconditional_embeds(1), transitions=[])
    ctx = StepContext(model, scheduler, cfg, objective, orbit_cameras(OrbitConfig(views=2)), 3.0, torch.Generator())
    x = torch.randn(1, *model.latent_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.5
    k = 12  # an intermediate state: the gradient runs through the denoiser's clean prediction
    r, g, w = reward_and_gradient(ctx, chunk, x, k)
    assert g.dtype == torch.float64 and g.abs().sum() > 0
    a = float(scheduler.alphas_cumprod[int(scheduler.timesteps[k])])
    assert abs(w - a ** 0.5) < 1e-12
    for seed in range(2):
        v = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        eps = 1e-5
        r_plus, _, _ = reward_and_gradient(ctx, chunk, x + eps * v, k)
        r_minus, _, _ = reward_and_gradient(ctx, chunk, x - eps * v, k)
        fd = float((r_plus - r_minus).sum()) / (2 * eps)
        analytic = float((g * v).sum())
        assert abs(analytic - fd) <= 1e-4 * abs(fd) + 1e-7, (analytic, fd)
