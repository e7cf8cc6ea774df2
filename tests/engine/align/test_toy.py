"""The closed-form checks: exact denoisers, a linear reward, and the exact tilt of the base sampler.

The targets are what engine/align/closed_form.py computes (the tilt of the 20-step sampler's own
distribution, importance-resampled); the figures in the comments are scripts/toy_alignment.py's
(docs/method.md, "Toys").
"""
import math

import pytest
import torch

from engine.align import closed_form as cf
from engine.align.config import AlignConfig
from engine.align.objective import LinearReward
from engine.align.trainer import Aligner
from engine.models.toy import GaussianToyModel, MixtureToyModel
from engine.sampling.sampler import SamplerConfig

C = torch.tensor([1.0, 0.0])
TOYS = {"gaussian": (GaussianToyModel, 2.0), "mixture": (MixtureToyModel, 1.0)}
SETTINGS = dict(trust_region=3.0, lr=1e-2, lora_rank=2, trajectories=16, micro_batch=8)
N = 2000


@pytest.fixture(scope="module")
def targets():
    out = {}
    for name, (kind, beta) in TOYS.items():
        model = kind()
        pool = cf.base_samples(model, 60_000, seed=10**7)
        out[name] = dict(base=cf.base_samples(model, N, seed=10**6), reference=cf.tilted_reference(pool, beta, C, N),
                         mean=cf.tilted_expectation(pool, beta, C))
    return out


def _report(name, model, samples, targets):
    t = targets[name]
    return cf.report(model, samples, t["base"], t["reference"], TOYS[name][1], C, t["mean"])


def _finetune(name, rounds, **overrides):
    kind, beta = TOYS[name]
    torch.manual_seed(0)
    model = kind()
    Aligner(model, LinearReward(C), ["x"], AlignConfig(**{**SETTINGS, "beta": beta, "steps": rounds, **overrides})).run()
    return model, cf.base_samples(model, N, seed=10**6)


def test_mixture_denoiser_is_the_exact_posterior_noise():
    # eps_hat(x_t) = -sqrt(1 - a) grad log p_t(x_t), p_t the closed-form noised mixture.
    model = MixtureToyModel()
    a_all = model.denoiser.alphas_cumprod
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.3
    for t in (0, 300, 900):
        a = float(a_all[t])
        v = a * model.std**2 + 1 - a
        xr = x.clone().requires_grad_(True)
        comp = -(xr[:, None] - math.sqrt(a) * model.means.double()[None]).pow(2).sum(-1) / (2 * v)
        logp = torch.logsumexp(model.weights.double().log() + comp, 1)
        (score,) = torch.autograd.grad(logp.sum(), xr)
        eps = model.denoiser.double()(x, torch.full((64,), t))
        assert torch.allclose(eps, -math.sqrt(1 - a) * score, atol=1e-9)


def test_one_component_mixture_is_the_gaussian_toy_and_its_tilt_is_closed_form():
    g = GaussianToyModel()
    means, weights = g.tilted(2.0, C)
    assert torch.allclose(means[0], g.mean + 2.0 * 0.49 * C) and weights.tolist() == [1.0]
    mix = MixtureToyModel()
    _, w = mix.tilted(1.0, C)
    expect = mix.weights * torch.exp(mix.means @ C)
    assert torch.allclose(w, expect / expect.sum())


def test_reference_is_the_tilt_of_the_sampler_not_of_the_data(targets):
    # The 20-step sampler under-disperses (variance 0.33 for 0.49), so its exact tilt moves the mean
    # by about 0.33 beta, two thirds of the data-level shift; the exact flow guidance reaches it.
    model = GaussianToyModel()
    rep = _report("gaussian", model, cf.guided_sample(model, cf.exact_flow_guidance(model, 2.0, C), N, 10**6), targets)
    assert abs(rep.shift - 1.0) < 0.06 and 0.6 < rep.shift_data < 0.75, rep
    assert rep.energy < 0.01, rep
    assert _report("gaussian", model, targets["gaussian"]["base"], targets).energy > 0.2


@pytest.mark.slow
def test_nabla_r2d3_with_w_1_through_the_base_reaches_the_exact_gaussian_tilt(targets):
    # Measured 99% of the exact shift, energy 0.0003 (150 rounds); the default w = sqrt(alpha_bar) 72%.
    model, samples = _finetune("gaussian", 60, reward_weighting="none", reward_gradient_from="base")
    rep = _report("gaussian", model, samples, targets)
    assert abs(rep.shift - 1.0) < 0.1 and abs(rep.drift) < 0.05, rep
    assert abs(rep.spread - 0.333) < 0.03 and rep.energy < 0.01, rep


@pytest.mark.slow
def test_nabla_gflownet_comes_within_its_margin_of_the_exact_flow_oracle(targets):
    # Full Nabla-GFlowNet, w = 1: measured 98% / energy 0.0009 at 150 rounds; the oracle (exact flow
    # guidance) 101% / 0.0004. Before its terminal state was anchored it reached 14%.
    model, samples = _finetune("gaussian", 60, flow_network=True, reward_weighting="none")
    rep = _report("gaussian", model, samples, targets)
    assert abs(rep.shift - 1.0) < 0.15 and rep.energy < 0.02, rep


@pytest.mark.slow
def test_nabla_r2d3_keeps_the_within_mode_spread_where_refl_and_draft_run_away(targets):
    model, samples = _finetune("mixture", 60, reward_weighting="none")
    rep = _report("mixture", model, samples, targets)
    base = _report("mixture", model, targets["mixture"]["base"], targets)
    assert abs(rep.spread - base.spread) < 0.01, (rep, base)  # measured 0.061 against the base's 0.063
    assert rep.masses[1] > base.masses[1] + 0.1 and rep.energy < base.energy / 4, (rep, base)
    for method in ("refl", "draft"):
        model, samples = _finetune("mixture", 60, method=method, lr=3e-3, trust_region=0.0)
        rep = _report("mixture", model, samples, targets)
        # measured at 60 rounds: ReFL 908% of the exact shift, spread 0.28 (4.5x the base), one mode left
        assert rep.shift > 3 or rep.spread > 3 * base.spread or rep.spread < base.spread / 3, (method, rep)


def test_score_units_pin_the_lora_when_the_last_transition_is_stochastic(targets):
    # Why the aligner's default sampler ends on a deterministic step: a trained last step (std 0.01)
    # outweighs every other transition ~1e4:1 in score units (measured 1-7% of the shift at 150 rounds).
    model, samples = _finetune("gaussian", 20, sampler=SamplerConfig(scheduler="dpmsolver-sde", final_sigmas="sigma_min"))
    assert _report("gaussian", model, samples, targets).shift < 0.1


@pytest.mark.parametrize("method,lr", [("refl", 3e-3), ("draft", 3e-3), ("ddpo", 3e-2)])
def test_baselines_move_toward_the_reward(method, lr, targets):
    model, samples = _finetune("gaussian", 20, method=method, lr=lr, trust_region=0.0)
    assert _report("gaussian", model, samples, targets).shift > 0.1


def test_logged_fit_shows_the_toy_model_following_its_target():
    # fit_cos / fit_ratio compare the LoRA's mean shift with std^2 beta w g on fresh trajectories;
    # a model that drifts elsewhere shows cos ~0.
    torch.manual_seed(0)
    cfg = AlignConfig(**{**SETTINGS, "beta": 2.0, "steps": 15})
    history = Aligner(GaussianToyModel(), LinearReward(C), ["x"], cfg).run()
    assert history[0]["fit_ratio"] < 0.1  # the first update of a run starts from the base model
    late = history[-5:]
    assert min(r["fit_cos"] for r in late) > 0.8, [r["fit_cos"] for r in late]
    assert all(0.5 < r["fit_ratio"] < 2.0 for r in late), [r["fit_ratio"] for r in late]


def test_the_aligner_trains_only_on_schedulers_the_model_declares():
    from engine.align.config import AlignConfig
    from engine.align.objective import LinearReward
    from engine.align.trainer import Aligner
    from engine.models.toy import GaussianToyModel
    from engine.sampling.sampler import SamplerConfig

    with pytest.raises(ValueError, match="trains on trajectories of ddim, dpmsolver-sde .* not 'ddpm'"):
        Aligner(GaussianToyModel(), LinearReward(C), ["x"], AlignConfig(sampler=SamplerConfig(scheduler="ddpm")))


def test_a_scheduler_that_scales_the_denoiser_input_is_refused():
    from diffusers import EulerDiscreteScheduler

    from engine.align.config import AlignConfig
    from engine.align.objective import LinearReward
    from engine.align.trainer import Aligner
    from engine.models.toy import GaussianToyModel

    class EulerToy(GaussianToyModel):
        def make_scheduler(self, kind="ddim", final_sigmas_type="zero"):
            return EulerDiscreteScheduler(num_train_timesteps=1000)  # scales x by 1 / sqrt(sigma^2 + 1)

    with pytest.raises(ValueError, match="EulerDiscreteScheduler scales the denoiser's input"):
        Aligner(EulerToy(), LinearReward(C), ["x"], AlignConfig())
