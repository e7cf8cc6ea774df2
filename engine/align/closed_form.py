"""Judging an aligner against the exact reward-tilted distribution on the closed-form toys.

The target of Nabla-GFlowNet, and of any method that finetunes a sampler's transitions, is the
tilt of the distribution *the base sampler produces*, p_base(x0) exp(beta R(x0)) / Z. With 20
stochastic steps that is not the tilt of the data distribution the toy's denoiser was built
from: the 20-step chain under-disperses (Gaussian toy: variance 0.327 per axis where the data has
0.49), so the exact tilt of its samples moves the mean by beta * 0.327 * c, 67% of the data-level
shift beta s^2 c. :func:`tilted_reference` draws exact samples of the sampler-level tilt by
importance resampling a large base sample (weights exp(beta R), exact as the base sample grows);
the data-level tilt (:meth:`MixtureToyModel.tilted`) is reported beside it.

Metrics (:class:`ToyReport`): the mean shift along c as a fraction of the reference's, the drift
across c, the mass of each mixture component (nearest mean), the within-component spread
(variance per axis), and the energy and sliced W2 distances to the reference samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..sampling.sampler import SamplerConfig, alpha_bar, make_scheduler, sample, transition

# A guidance field h(x, k) for the oracle samplers: the score added to transition k's mean at its
# end state (x is where it is evaluated, k the transition index); see guided_sample.
Guidance = Callable[[torch.Tensor, int], torch.Tensor]


def base_samples(model, n: int, seed: int, config: SamplerConfig = SamplerConfig(steps=20)) -> torch.Tensor:
    """n samples (n, d) of the model as it is, seeds seed .. seed + n - 1."""
    return sample(model, ["x"] * n, list(range(seed, seed + n)), config).latents


def tilted_reference(base: torch.Tensor, beta: float, direction: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n exact samples (n, d) of base(x) exp(beta c.x) / Z by importance resampling ``base`` (N, d), N >> n."""
    logw = beta * (base @ direction.to(base.dtype))
    w = torch.softmax(logw.double(), 0)
    ess = float(1.0 / (w.pow(2).sum()))
    if ess < 4 * n:
        raise ValueError(f"importance resampling has effective size {ess:.0f} for {n} samples: draw more base samples")
    idx = torch.multinomial(w, n, replacement=True, generator=torch.Generator().manual_seed(seed))
    return base[idx]


def tilted_expectation(base: torch.Tensor, beta: float, direction: torch.Tensor) -> torch.Tensor:
    """Mean (d,) of base(x) exp(beta c.x) / Z, self-normalised over all of ``base`` (N, d): less noisy than resampling."""
    w = torch.softmax((beta * (base @ direction.to(base.dtype))).double(), 0)
    return (w[:, None] * base.double()).sum(0).to(base.dtype)


def energy_distance(x: torch.Tensor, y: torch.Tensor, max_points: int = 3000) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (0 iff the distributions agree), on up to max_points each."""
    x, y = x[:max_points].double(), y[:max_points].double()
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def sliced_w2(x: torch.Tensor, y: torch.Tensor, directions: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two samples (n, d) and (m, d): the root mean over random unit
    directions of the squared 1-D W2 between the projections (quantiles matched at n' = min(n, m) levels)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(x.shape[1], directions, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    n = min(len(x), len(y))
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    px, py = (x.double() @ u).sort(0).values, (y.double() @ u).sort(0).values
    qx = torch.quantile(px, levels, dim=0) if len(x) != n else px
    qy = torch.quantile(py, levels, dim=0) if len(y) != n else py
    return float((qx - qy).pow(2).mean().sqrt())


@dataclass
class ToyReport:
    shift: float  # mean shift along c, as a fraction of the reference's (1 = exact)
    shift_data: float  # the same as a fraction of the data-level tilt beta s^2 c (+ reweighting)
    drift: float  # mean shift across c
    masses: list[float]  # per component (nearest mean)
    spread: float  # within-component variance per axis, averaged over components
    energy: float  # energy distance to the reference samples
    sw2: float = math.nan  # sliced W2 distance to the reference samples

    def row(self) -> str:
        masses = " / ".join(f"{m:.2f}" for m in self.masses)
        return (f"{self.shift:.0%} | {self.shift_data:.0%} | {self.drift:+.3f} | {masses} | {self.spread:.4f} | {self.energy:.4f} "
                f"| {self.sw2:.3f}")


def report(model, samples: torch.Tensor, base: torch.Tensor, reference: torch.Tensor, beta: float,
           direction: torch.Tensor, reference_mean: torch.Tensor | None = None) -> ToyReport:
    """Compare ``samples`` (n, 2) with the reference tilt; ``base`` are samples of the untuned sampler.

    ``reference_mean`` (the tilt's exact mean, :func:`tilted_expectation`) defaults to the reference samples' mean.
    """
    c = direction / direction.norm()
    perp = torch.stack([-c[1], c[0]])
    delta = samples.mean(0) - base.mean(0)
    wanted = float(((reference.mean(0) if reference_mean is None else reference_mean) - base.mean(0)) @ c)
    data_wanted = float((model.tilted_mean(beta, direction) - model.mean) @ c)
    labels = torch.cdist(samples, model.means).argmin(1)
    masses = torch.bincount(labels, minlength=len(model.means)).float() / len(samples)
    spreads = [samples[labels == k].var(0).mean() for k in range(len(model.means)) if int((labels == k).sum()) > 1]
    return ToyReport(
        shift=float(delta @ c) / wanted, shift_data=float(delta @ c) / data_wanted, drift=float(delta @ perp),
        masses=masses.tolist(), spread=float(torch.stack(spreads).mean()) if spreads else math.nan,
        energy=energy_distance(samples, reference), sw2=sliced_w2(samples, reference),
    )


@torch.no_grad()
def guided_sample(model, guidance: Guidance, n: int, seed: int, config: SamplerConfig = SamplerConfig(steps=20)) -> torch.Tensor:
    """Sample the base with every transition mean moved by std^2 h(mean, k): an oracle of a target h.

    A tilted transition N(mu, std^2) exp(h(x')) is, to first order in std, N(mu + std^2 grad h(mu), std^2),
    so with h the exact log-flow gradient this samples the tilted model up to the sampler's own error.
    """
    g = torch.Generator().manual_seed(seed)
    scheduler = make_scheduler(model, config)
    scheduler.set_timesteps(config.steps)
    x = torch.randn(n, *model.latent_shape, generator=g)
    cond, uncond = model.encode_prompts(["x"] * n), model.unconditional_embeds(n)
    for k, t in enumerate(scheduler.timesteps):
        out = model.denoise(x, t.reshape(1), cond)
        mean, std = transition(scheduler, out, int(t), x, config.eta)
        var = std.pow(2)[:, None]
        x = mean + var * guidance(mean, k) + std[:, None] * torch.randn(x.shape, generator=g)
    return x


def _next_timestep(scheduler, k: int) -> int:
    return int(scheduler.timesteps[k + 1]) if k + 1 < len(scheduler.timesteps) else -1


def exact_flow_guidance(model, beta: float, direction: torch.Tensor, config: SamplerConfig = SamplerConfig(steps=20)) -> Guidance:
    """h = grad log F_{t_{k+1}} with the base's exact flow (``model.log_flow``)."""
    scheduler = make_scheduler(model, config)
    scheduler.set_timesteps(config.steps)

    def h(x: torch.Tensor, k: int) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(model.log_flow(x, _next_timestep(scheduler, k), beta, direction).sum(), x)
        return g

    return h


def forward_target_guidance(model, beta: float, direction: torch.Tensor, weighting: str,
                            config: SamplerConfig = SamplerConfig(steps=20)) -> Guidance:
    """h = beta w grad_x R(x0_hat_base(x)) at the end state of each transition: R2D3's forward target, exactly."""
    from .methods import reward_weight
    from ..sampling.sampler import predict_clean

    scheduler = make_scheduler(model, config)
    scheduler.set_timesteps(config.steps)
    c = direction.float()

    def h(x: torch.Tensor, k: int) -> torch.Tensor:
        t = _next_timestep(scheduler, k)
        if t < 0:
            return beta * c.expand_as(x)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            out = model.denoise(x, torch.tensor([t]), model.encode_prompts(["x"] * len(x)))
            x0 = predict_clean(scheduler, model.prediction_type, out, t, x)
            (g,) = torch.autograd.grad((x0 @ c).sum(), x)
        return beta * reward_weight(weighting, alpha_bar(scheduler, t)) * g

    return h
