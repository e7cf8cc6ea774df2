"""intermediate_gradient="terminal": one decode/render per trajectory, pulled back through every
state's clean-prediction Jacobian. Exact where it should be, the stated approximation elsewhere."""
import pytest
import torch

from engine.align.config import AlignConfig
from engine.align.methods import Chunk, StepContext, reward_gradients
from engine.align.objective import LinearReward, RenderedReward
from engine.models.embedded.model import EmbeddedConfig, EmbeddedModel
from engine.render.cameras import OrbitConfig, orbit_cameras
from engine.render.volume import VolumeRenderConfig
from engine.rewards import PaletteReward
from engine.sampling.sampler import guided_output, predict_clean


def _setup(objective_kind: str, **config):
    """A float64 embedded model, a chunk of 2 trajectories with K + 1 recorded states (DDIM, every step
    stochastic: the terminal state is the clean sample), and a context with the given objective."""
    torch.manual_seed(0)
    model = EmbeddedModel(EmbeddedConfig())
    for module in (model.denoiser, model.autoencoder, model.text_encoder):
        module.double()
    model.config.render_resolution = 12
    cfg = AlignConfig(render=VolumeRenderConfig(resolution=10, samples=16, sharpness=0.05), image_noise=0.0, **config)
    if objective_kind == "linear":
        direction = torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        objective = LinearReward(direction)
    else:
        objective = RenderedReward(model, PaletteReward([(1.0, 0.2, 0.1), (0.1, 0.3, 0.9)], softness=0.2, alpha_threshold=0.0),
                                   OrbitConfig(views=2), cfg.render, image_noise=0.0)
    scheduler = model.make_scheduler("ddim")
    scheduler.set_timesteps(20)
    K = len(scheduler.timesteps)
    prompts = ["a red cube", "a blue torus"]
    latents = torch.randn(K + 1, 2, *model.latent_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.5
    chunk = Chunk(latents=latents, model_outputs=None, stds=torch.ones(K, 2), log_probs=None, prompts=prompts,
                  cond=model.encode_prompts(prompts), uncond=model.unconditional_embeds(2), transitions=[])
    views = orbit_cameras(OrbitConfig(views=2)) if objective_kind != "linear" else None
    ctx = StepContext(model, scheduler, cfg, objective, views, 3.0, torch.Generator())
    return model, ctx, chunk, K


def _stacked(chunk, states):
    return torch.cat([chunk.latents[j] for j in states])


def test_for_a_reward_linear_in_the_latent_the_pulled_back_gradient_is_the_full_one():
    _, own, chunk, K = _setup("linear")
    _, terminal, _, _ = _setup("linear", intermediate_gradient="terminal")
    states = [3, 9, 15, K]
    r_own, g_own, w_own = reward_gradients(own, chunk, _stacked(chunk, states), states)
    r_t, g_t, w_t = reward_gradients(terminal, chunk, _stacked(chunk, states), states)
    assert g_own.abs().sum() > 0
    assert torch.allclose(g_t, g_own, rtol=1e-9, atol=1e-12) and torch.equal(w_t, w_own)
    assert torch.allclose(r_t[-2:], r_own[-2:])  # the rewards returned are the terminal sample's


def test_rendered_reward_pulled_back_gradient_is_exact_at_the_terminal_state_and_a_vjp_elsewhere():
    model, own, chunk, K = _setup("palette")
    _, terminal, _, _ = _setup("palette", intermediate_gradient="terminal")
    calls = []
    original = type(terminal.objective).__call__

    def counting(self, latents, *args, **kwargs):
        calls.append(latents.shape[0])
        return original(self, latents, *args, **kwargs)

    states = [4, 12, K - 1]  # the terminal state (K, the clean sample) is not among them: it is added
    type(terminal.objective).__call__ = counting
    try:
        _, g_t, _ = reward_gradients(terminal, chunk, _stacked(chunk, states), states)
    finally:
        type(terminal.objective).__call__ = original
    assert calls == [2]  # one decode/render/reward call, on the 2 trajectories' terminal samples
    # By hand: v = dR/dx0 at the terminal sample, then <x0_hat(x_j), v> differentiated in x_j.
    x0 = chunk.latents[K].clone().requires_grad_(True)
    (v,) = torch.autograd.grad(own.objective(x0, chunk.prompts, own.views).sum(), x0)
    for i, j in enumerate(states):
        x = chunk.latents[j].clone().requires_grad_(True)
        t = own.timesteps[j].reshape(1)
        out = guided_output(model, x, t, chunk.cond, chunk.uncond, own.guidance)
        (expected,) = torch.autograd.grad((predict_clean(own.scheduler, model.prediction_type, out, int(t), x) * v).sum(), x)
        assert expected.abs().max() > 0
        assert torch.allclose(g_t[2 * i:2 * i + 2], expected, rtol=1e-7, atol=1e-9 * float(expected.abs().max())), j
    # An approximation before the terminal state: not the gradient at the state's own prediction.
    _, g_own, _ = reward_gradients(own, chunk, _stacked(chunk, states), states)
    assert not torch.allclose(g_t[:2], g_own[:2], rtol=1e-3, atol=0.0)
    # At the terminal state itself it is the full estimate.
    _, g_end_own, _ = reward_gradients(own, chunk, chunk.latents[K], [K])
    _, g_end_t, _ = reward_gradients(terminal, chunk, chunk.latents[K], [K])
    assert g_end_own.abs().max() > 0 and torch.allclose(g_end_t, g_end_own, rtol=1e-9, atol=1e-9 * float(g_end_own.abs().max()))


def test_intermediate_gradient_is_validated():
    with pytest.raises(ValueError, match="intermediate_gradient"):
        AlignConfig(intermediate_gradient="sample")
