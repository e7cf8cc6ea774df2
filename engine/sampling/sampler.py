"""Stochastic sampling with classifier-free guidance that can keep the whole trajectory.

Every reverse step is a Gaussian transition ``p(x_prev | x_t) = N(mean, std^2 I)``. The mean comes
from the diffusers scheduler's own ``step`` (so prediction types, clipping and timestep spacing are
the scheduler's), the std from its variance formula; we then draw ``x_prev = mean + std * noise``
ourselves with one ``torch.Generator`` per sample, so a (prompt, seed) pair gives the same asset
whatever else is in the batch. The aligner reuses :func:`guided_output` and :func:`transition` to
recompute means under the finetuned denoiser.

Schedulers: ``ddim`` (eta = 1 by default: every transition stochastic, the final one included
because the model's DDIM uses ``set_alpha_to_one=False``), ``ddpm`` (its last transition is
deterministic, std 0), ``dpmsolver-sde`` (first-order SDE-DPM-Solver++; mean and std read off
two calls of its ``step`` with zero and with drawn noise) and ``heun`` (deterministic, two denoiser
calls a step, each a "transition" of std 0 here; for generation only).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler, HeunDiscreteScheduler

from ..models.protocol import DiffusionModel, PromptEmbeds


class Cancelled(RuntimeError):
    """Raised inside a long job when its ``should_cancel`` callback returns True."""


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 20
    guidance: float | None = None  # None: the model's ``default_guidance``
    scheduler: str = "ddim"
    eta: float = 1.0
    # dpmsolver-sde only: "zero" ends on a deterministic step to the clean latent; "sigma_min" ends
    # on a stochastic step to the schedule's smallest noise level (std about 0.01), so the last
    # transition can be trained on, as the paper's code samples DiffSplat (docs/method.md).
    final_sigmas: str = "zero"

    def __post_init__(self) -> None:
        if self.final_sigmas not in ("zero", "sigma_min"):
            raise ValueError("final_sigmas must be 'zero' or 'sigma_min'")
        if self.final_sigmas != "zero" and self.scheduler != "dpmsolver-sde":
            raise ValueError("final_sigmas='sigma_min' needs the dpmsolver-sde scheduler")
        if not 1 <= self.steps <= 1000:
            raise ValueError("steps must be in 1..1000")
        if self.guidance is not None and (self.guidance < 0 or not math.isfinite(self.guidance)):
            raise ValueError("guidance must be a finite number >= 0")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError("eta must be in [0, 1]")

    def for_model(self, model: DiffusionModel) -> "SamplerConfig":
        """This config with ``guidance`` filled in from the model when it was left as None."""
        return self if self.guidance is not None else dataclasses.replace(self, guidance=model.default_guidance)


@dataclass
class Trajectory:
    """What the aligner needs from a sampled batch. K steps, B samples, latent shape L.

    ``latents`` (K+1, B, *L): x_T, ..., x_0.  ``timesteps`` (K,): t of each transition's start.
    ``model_outputs`` (K, B, *L): guided denoiser outputs.  ``means`` (K, B, *L) and ``stds`` (K, B):
    the Gaussian of each transition.  ``log_probs`` (K, B): log-density of the taken transition
    (0 where std is 0).
    """

    latents: torch.Tensor
    timesteps: torch.Tensor
    model_outputs: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    log_probs: torch.Tensor
    prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    config: SamplerConfig = SamplerConfig()


@dataclass
class SampleResult:
    latents: torch.Tensor  # (B, *L) clean latents x_0
    trajectory: Trajectory | None


def make_scheduler(model: DiffusionModel, config: SamplerConfig):
    """The model's scheduler of kind ``config.scheduler``, with the config's overrides applied.

    Timesteps are not set; callers set ``config.steps`` on their own device.
    """
    scheduler = model.make_scheduler(config.scheduler)
    if config.final_sigmas != "zero":
        if getattr(scheduler.config, "final_sigmas_type", None) is None:
            raise ValueError(f"{type(scheduler).__name__} has no final_sigmas_type; final_sigmas needs dpmsolver-sde")
        alphas = scheduler.alphas_cumprod
        scheduler = type(scheduler).from_config(scheduler.config, final_sigmas_type=config.final_sigmas)
        scheduler.alphas_cumprod = alphas  # keep the model's precision choice (float64 coefficients)
    return scheduler


def guided_output(
    model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, cond: PromptEmbeds, uncond: PromptEmbeds, guidance: float
) -> torch.Tensor:
    """Classifier-free guided denoiser output for x (B, *L) at timestep t ((1,) or (B,): one per sample)."""
    t = t.reshape(-1).expand(x.shape[0])
    if guidance == 1.0:
        return model.denoise(x, t, cond)
    both = model.denoise(torch.cat([x, x]), torch.cat([t, t]), PromptEmbeds.cat([uncond, cond]))
    out_u, out_c = both.chunk(2)
    return out_u + guidance * (out_c - out_u)


def _alpha_prod(scheduler, t: int) -> torch.Tensor:
    if t >= 0:
        return scheduler.alphas_cumprod[t]
    return getattr(scheduler, "final_alpha_cumprod", torch.tensor(1.0))


def predict_clean(
    scheduler, prediction_type: str, model_output: torch.Tensor, t: int, x: torch.Tensor
) -> torch.Tensor:
    """One-step clean prediction x0_hat (B, *L) from a denoiser output at timestep ``t``.

    Differentiable in both ``model_output`` and ``x`` (the aligner takes reward gradients through it).
    """
    a = _alpha_prod(scheduler, int(t)).to(x.device)
    sa, sb = a.sqrt().to(x.dtype), (1 - a).sqrt().to(x.dtype)
    if prediction_type == "epsilon":
        return (x - sb * model_output) / sa
    if prediction_type == "v_prediction":
        return sa * x - sb * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def alpha_bar(scheduler, t: int) -> float:
    """Cumulative alpha at timestep ``t`` (t < 0: the scheduler's final alpha, 1 for most)."""
    return float(_alpha_prod(scheduler, int(t)))


def transition(
    scheduler, model_output: torch.Tensor, t: int | torch.Tensor, x: torch.Tensor, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian of the reverse step from ``x`` (B, *L) at ``t`` (one of the scheduler's timesteps,
    as it holds them: Heun's are fractional): mean (B, *L) and std (B,).

    Differentiable in ``model_output`` (the aligner's gradient path). For schedulers with state
    (DPM-Solver, Heun), the state is not advanced here; see :func:`step_scheduler`.
    """
    b = x.shape[0]
    if isinstance(scheduler, HeunDiscreteScheduler):  # an ODE solver: every step deterministic
        mean = copy.deepcopy(scheduler).step(model_output, t, x).prev_sample
        return mean, torch.zeros(b, dtype=x.dtype, device=x.device)
    t = int(t)
    if isinstance(scheduler, DDIMScheduler):
        prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        mean = scheduler.step(model_output, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample
        a_t, a_prev = _alpha_prod(scheduler, t), _alpha_prod(scheduler, prev_t)
        var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        return mean, (eta * var.sqrt()).to(x.dtype).expand(b)
    if isinstance(scheduler, DDPMScheduler):
        # diffusers' DDPM step always adds its own noise; take its x0 estimate and form the
        # posterior mean (Ho et al. eq. 7) with the scheduler's coefficients.
        x0 = scheduler.step(model_output, t, x, generator=torch.Generator(device=x.device)).pred_original_sample
        prev_t = scheduler.previous_timestep(t)
        a_t, a_prev = _alpha_prod(scheduler, t), _alpha_prod(scheduler, int(prev_t))
        beta_t = 1 - a_t / a_prev
        mean = (a_prev.sqrt() * beta_t / (1 - a_t)) * x0 + ((1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)) * x
        var = (1 - a_prev) / (1 - a_t) * beta_t if t > 0 else torch.tensor(0.0)
        return mean, var.clamp_min(0).sqrt().to(x.dtype).expand(b)
    # Generic path: any scheduler whose step accepts variance_noise and is affine in it.
    probe = copy.deepcopy(scheduler)
    mean = probe.step(model_output, t, x, variance_noise=torch.zeros_like(x)).prev_sample
    probe = copy.deepcopy(scheduler)
    ones = torch.ones_like(x)
    std = (probe.step(model_output, t, x, variance_noise=ones).prev_sample - mean).flatten(1).mean(1)
    return mean, std


def step_scheduler(scheduler, model_output: torch.Tensor, t: int | torch.Tensor, x: torch.Tensor) -> None:
    """Advance a stateful scheduler's internal step counter/history after a transition."""
    if isinstance(scheduler, HeunDiscreteScheduler):
        scheduler.step(model_output, t, x)
    elif not isinstance(scheduler, (DDIMScheduler, DDPMScheduler)):
        scheduler.step(model_output, int(t), x, variance_noise=torch.zeros_like(x))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2 I) summed over all but the batch dimension: (B,). 0 where std == 0."""
    d = x[0].numel()
    safe = std.clamp_min(1e-12)
    sq = (x - mean).flatten(1).pow(2).sum(1)
    lp = -sq / (2 * safe**2) - d * safe.log() - 0.5 * d * math.log(2 * math.pi)
    return torch.where(std > 0, lp, torch.zeros_like(lp))


def _noise(generators: list[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


@torch.no_grad()
def sample(
    model: DiffusionModel,
    prompts: list[str],
    seeds: list[int],
    config: SamplerConfig = SamplerConfig(),
    return_trajectory: bool = False,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    noise: Callable[[list[torch.Generator], tuple[int, ...], torch.device], torch.Tensor] | None = None,
) -> SampleResult:
    """Sample one latent per (prompt, seed) pair. Prompts are validated before any compute.

    ``noise(generators, latent_shape, device) -> (B, *latent_shape)``: draws every noise tensor of the
    run (the initial latent's, then each transition's), one row per sample from its seed's generator;
    default: standard normal draws. engine/sampling/variations.py perturbs it to sample variations."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if not prompts:
        raise ValueError("nothing to sample: empty prompt list")
    config = config.for_model(model)
    cond = model.encode_prompts(prompts)
    uncond = model.unconditional_embeds(len(prompts))
    device = (cond.hidden if cond.hidden is not None else cond.pooled).device
    scheduler = make_scheduler(model, config)
    scheduler.set_timesteps(config.steps, device=device)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    draw = noise or _noise
    x = draw(generators, model.latent_shape, device) * scheduler.init_noise_sigma
    keep: dict[str, list[torch.Tensor]] = {k: [] for k in ("latents", "outputs", "means", "stds", "log_probs")}
    keep["latents"].append(x)
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        if should_cancel is not None and should_cancel():
            raise Cancelled("sampling cancelled")
        out = guided_output(model, scheduler.scale_model_input(x, t), t.reshape(1).to(device), cond, uncond, config.guidance)
        mean, std = transition(scheduler, out, t, x, config.eta)
        step_scheduler(scheduler, out, t, x)
        x_prev = mean + std.view(-1, *[1] * (x.dim() - 1)) * draw(generators, model.latent_shape, device)
        if return_trajectory:
            keep["outputs"].append(out)
            keep["means"].append(mean)
            keep["stds"].append(std)
            keep["log_probs"].append(gaussian_log_prob(x_prev, mean, std))
            keep["latents"].append(x_prev)
        x = x_prev
        if progress is not None:
            progress(i + 1, len(timesteps))
    trajectory = None
    if return_trajectory:
        trajectory = Trajectory(
            latents=torch.stack(keep["latents"]),
            timesteps=timesteps.detach().clone().cpu(),
            model_outputs=torch.stack(keep["outputs"]),
            means=torch.stack(keep["means"]),
            stds=torch.stack(keep["stds"]),
            log_probs=torch.stack(keep["log_probs"]),
            prompts=list(prompts),
            seeds=[int(s) for s in seeds],
            config=config,
        )
    return SampleResult(latents=x, trajectory=trajectory)
