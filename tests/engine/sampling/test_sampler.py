import math

import pytest
import torch

from engine.models.embedded.model import EmbeddedConfig, EmbeddedModel
from engine.models.embedded.denoiser import DenoiserConfig
from engine.sampling.sampler import Cancelled, SamplerConfig, gaussian_log_prob, sample, transition


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = EmbeddedModel(EmbeddedConfig(denoiser=DenoiserConfig(width=32, depth=1, heads=2)))
    torch.nn.init.normal_(m.denoiser.proj_out.weight, std=0.05)  # zero-initialised otherwise
    return m


@pytest.mark.parametrize("kind", ["ddim", "dpmsolver-sde"])
def test_transition_matches_scheduler_step(model, kind):
    sched = model.make_scheduler(kind)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *model.latent_shape, generator=g)
    out = torch.randn(3, *model.latent_shape, generator=g)
    noise = torch.randn(3, *model.latent_shape, generator=g)
    for t in sched.timesteps[:3]:
        mean, std = transition(sched, out, int(t), x)
        kwargs = {"eta": 1.0} if kind == "ddim" else {}
        stepped = sched.step(out, t, x, variance_noise=noise, **kwargs).prev_sample
        assert torch.allclose(stepped, mean + std.view(-1, 1, 1, 1, 1) * noise, atol=1e-5)
        assert (std > 0).all()
        x = stepped


def test_ddpm_transition_matches_scheduler_distribution(model):
    sched = model.make_scheduler("ddpm")
    sched.set_timesteps(10)
    x = torch.randn(2, *model.latent_shape)
    out = torch.randn(2, *model.latent_shape)
    t = int(sched.timesteps[2])
    mean, std = transition(sched, out, t, x)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    stepped = sched.step(out, t, x, generator=g1).prev_sample
    noise = torch.randn(x.shape, generator=g2)
    assert torch.allclose(stepped, mean + std.view(-1, 1, 1, 1, 1) * noise, atol=1e-5)
    # The last DDPM transition is deterministic.
    assert float(transition(sched, out, int(sched.timesteps[-1]), x)[1][0]) == 0.0


def test_log_prob_matches_torch_normal():
    g = torch.Generator().manual_seed(0)
    mean, x = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    std = torch.tensor([0.5, 1.7])
    ref = torch.distributions.Normal(mean, std.view(-1, 1, 1)).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gaussian_log_prob(x, mean, std), ref, atol=1e-4)
    assert gaussian_log_prob(x, mean, torch.zeros(2)).tolist() == [0.0, 0.0]


def test_trajectory_is_complete_and_consistent(model):
    cfg = SamplerConfig(steps=6, guidance=3.0)
    res = sample(model, ["a red cube", "a blue torus"], [0, 1], cfg, return_trajectory=True)
    tr = res.trajectory
    assert tr.latents.shape == (7, 2, *model.latent_shape)
    assert tr.model_outputs.shape == tr.means.shape == (6, 2, *model.latent_shape)
    assert tr.stds.shape == tr.log_probs.shape == (6, 2) and tr.timesteps.shape == (6,)
    assert torch.equal(tr.latents[-1], res.latents)
    # x_{k+1} - mean_k is exactly std_k times a standard normal draw: its empirical std is ~1.
    z = (tr.latents[1:] - tr.means) / tr.stds.view(6, 2, 1, 1, 1, 1)
    assert abs(float(z.std()) - 1.0) < 0.05 and abs(float(z.mean())) < 0.05
    assert tr.timesteps[0] > tr.timesteps[-1]


def test_seeded_runs_reproduce_and_do_not_depend_on_batch(model):
    cfg = SamplerConfig(steps=5)
    a = sample(model, ["a red cube", "a blue torus"], [3, 4], cfg).latents
    b = sample(model, ["a red cube", "a blue torus"], [3, 4], cfg).latents
    c = sample(model, ["a blue torus"], [4], cfg).latents
    assert torch.equal(a, b)
    assert torch.allclose(a[1], c[0], atol=1e-4)
    assert not torch.allclose(a[0], sample(model, ["a red cube"], [5], cfg).latents[0])


def test_bad_input_and_cancel(model):
    with pytest.raises(ValueError):
        sample(model, ["a red cube"], [1, 2])
    with pytest.raises(ValueError):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError):
        SamplerConfig(guidance=math.inf)
    with pytest.raises(Cancelled):
        sample(model, ["a red cube"], [0], SamplerConfig(steps=5), should_cancel=lambda: True)
