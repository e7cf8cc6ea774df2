"""The low-noise forward target (engine/align/fit_diagnostics.py): exact where it must be, less noisy
with more redraws, and a run without it is untouched."""
import pytest
import torch

from engine.align.config import AlignConfig
from engine.align.fit_diagnostics import fit_summary, low_noise_target
from engine.align.lora import add_lora, lora_parameters
from engine.align.methods import Chunk, StepContext, _scaled_reward_gradient, nabla_loss, reward_gradients
from engine.align.objective import RenderedReward
from engine.models.embedded.model import EmbeddedConfig, EmbeddedModel
from engine.render.cameras import OrbitConfig, orbit_cameras
from engine.render.volume import VolumeRenderConfig
from engine.rewards import PaletteReward


def _setup(image_noise: float = 0.0, **config):
    """A float64 embedded model with a small nonzero LoRA, a recorded chunk of 2 DDIM trajectories
    (every step stochastic, std 0.1, recorded means), and a context with a palette reward."""
    torch.manual_seed(0)
    model = EmbeddedModel(EmbeddedConfig())
    for module in (model.denoiser, model.autoencoder, model.text_encoder):
        module.double()
    add_lora(model, rank=2)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    cfg = AlignConfig(render=VolumeRenderConfig(resolution=10, samples=16, sharpness=0.05), image_noise=image_noise,
                      orbit=OrbitConfig(views=2, random_azimuth=True, elevation_jitter=5.0), beta=10.0, **config)
    objective = RenderedReward(model, PaletteReward([(1.0, 0.2, 0.1), (0.1, 0.3, 0.9)], softness=0.2, alpha_threshold=0.0),
                               cfg.orbit, cfg.render, image_noise=image_noise)
    scheduler = model.make_scheduler("ddim")
    scheduler.set_timesteps(20)
    K = len(scheduler.timesteps)
    prompts = ["a red cube", "a blue torus"]
    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(K + 1, 2, *model.latent_shape, generator=gen, dtype=torch.float64) * 0.5
    chunk = Chunk(latents=latents, model_outputs=torch.randn(K, 2, *model.latent_shape, generator=gen, dtype=torch.float64),
                  stds=torch.full((K, 2), 0.1, dtype=torch.float64), log_probs=None, prompts=prompts,
                  cond=model.encode_prompts(prompts), uncond=model.unconditional_embeds(2), transitions=[5, K - 1],
                  means=latents[1:] + 0.01)
    views = orbit_cameras(cfg.orbit, torch.Generator().manual_seed(1))
    ctx = StepContext(model, scheduler, cfg, objective, views, 3.0, torch.Generator().manual_seed(11))
    return ctx, chunk


def test_one_redraw_without_noise_at_the_recorded_state_is_the_single_sample_target():
    ctx, chunk = _setup()
    ks = chunk.transitions
    ends = [k + 1 for k in ks]
    x_end = torch.cat([chunk.latents[j] for j in ends])
    _, g, w = reward_gradients(ctx, chunk, x_end, ends)
    single = _scaled_reward_gradient(ctx, g, w)
    clean = low_noise_target(ctx, chunk, ks, 1, fresh_views=False, redraw_ends=False)
    assert single.abs().sum() > 0
    assert torch.allclose(clean, single, rtol=1e-10, atol=1e-14)


def test_image_noise_is_off_in_the_estimate_and_back_on_after():
    ctx, chunk = _setup(image_noise=0.05)
    seen = []
    original = RenderedReward.__call__

    def recording(self, *args, **kwargs):
        seen.append(self.image_noise)
        return original(self, *args, **kwargs)

    RenderedReward.__call__ = recording
    try:
        low_noise_target(ctx, chunk, chunk.transitions, 2)
        quiet, seen[:] = list(seen), []
        low_noise_target(ctx, chunk, chunk.transitions, 1, image_noise=True)
    finally:
        RenderedReward.__call__ = original
    assert quiet == [0.0, 0.0] and seen == [0.05]
    assert ctx.objective.image_noise == 0.05


def test_averaging_redraws_reduces_the_variance():
    ctx, chunk = _setup()
    ks = [chunk.transitions[0]]

    def spread(redraws: int, repeats: int) -> float:
        draws = torch.stack([low_noise_target(ctx, chunk, ks, redraws, generator=torch.Generator().manual_seed(100 + i))
                             for i in range(repeats)])
        return float((draws - draws.mean(0)).pow(2).sum() / (repeats - 1))

    one, four = spread(1, 8), spread(4, 4)
    assert one > 0
    assert four < 0.6 * one  # about 1/4 expected; the margin is for 4-8 repeats


def test_option_off_leaves_the_loss_cost_logs_and_random_stream_unchanged():
    calls = []
    original = RenderedReward.__call__

    def counting(self, latents, *args, **kwargs):
        calls.append(latents.shape[0])
        return original(self, latents, *args, **kwargs)

    RenderedReward.__call__ = counting
    try:
        results = {}
        for redraws in (0, 3):
            ctx, chunk = _setup(fit_clean_redraws=redraws)
            calls.clear()
            loss, parts = nabla_loss(ctx, chunk)
            grads = torch.autograd.grad(loss, lora_parameters(ctx.model))
            results[redraws] = (loss.detach(), parts, list(calls), torch.randint(10**9, (1,), generator=ctx.generator), grads)
    finally:
        RenderedReward.__call__ = original
    (loss0, parts0, calls0, next0, grads0), (loss3, parts3, calls3, next3, grads3) = results[0], results[3]
    assert set(parts0) == {"loss_db", "loss_trust", "fit_cos", "fit_ratio"}
    assert calls0 == [4]  # one reward call for the 2 transitions x 2 trajectories
    assert calls3 == [4] * 4  # and 3 more with the diagnostic
    assert set(parts3) - set(parts0) == {"fit_cos_clean", "fit_ratio_clean", "target_cos", "target_ratio"}
    assert torch.equal(loss0, loss3) and all(torch.equal(a, b) for a, b in zip(grads0, grads3))
    assert all(parts0[k] == parts3[k] for k in parts0)
    assert torch.equal(next0, next3)  # the run's own random stream is not drawn from
    for key in ("fit_cos_clean", "target_cos"):
        assert -1.0 <= parts3[key] <= 1.0


def test_fit_summary_of_known_vectors():
    a = torch.tensor([[1.0, 0.0]])
    out = fit_summary(shift=a, single=torch.tensor([[0.0, 2.0]]), clean=torch.tensor([[2.0, 0.0]]))
    assert out["fit_cos_clean"] == pytest.approx(1.0) and out["fit_ratio_clean"] == pytest.approx(0.5)
    assert out["target_cos"] == pytest.approx(0.0) and out["target_ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_config_refuses_bad_redraw_counts(bad):
    with pytest.raises(ValueError, match="fit_clean_redraws"):
        AlignConfig(fit_clean_redraws=bad)


def test_redraws_must_be_positive():
    ctx, chunk = _setup()
    with pytest.raises(ValueError, match="redraws"):
        low_noise_target(ctx, chunk, chunk.transitions, 0)
