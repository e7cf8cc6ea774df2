"""The losses: Nabla-R2D3 (residual forward nabla-DB, optional full Nabla-GFlowNet) and the baselines
DDPO, ReFL and DRaFT-1, all computed on trajectories recorded by ``engine.sampling.sample``.

Every loss function takes a :class:`StepContext` (model, scheduler, objective, settings of one
update) and a :class:`Chunk` (a few trajectories of the batch) and returns ``(loss, stats)``; the
trainer sums the losses' gradients over chunks. Index conventions: transition ``k`` goes from
``latents[k]`` (timestep ``timesteps[k]``) to ``latents[k + 1]``; ``latents[K]`` is the clean x0.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..models.protocol import PromptEmbeds
from ..sampling.sampler import alpha_bar, gaussian_log_prob, guided_output, predict_clean, transition
from .config import AlignConfig
from .lora import lora_disabled


@dataclass
class StepContext:
    model: Any
    scheduler: Any  # diffusers scheduler with timesteps set (stateless: ddim/ddpm)
    config: AlignConfig
    objective: Any  # LatentObjective
    views: Any
    guidance: float
    generator: torch.Generator
    flow: torch.nn.Module | None = None
    policy: Callable | None = None  # denoiser call whose parameter gradients are kept (DDP wrapper)

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps


@dataclass
class Chunk:
    """b trajectories of K steps: tensors sliced from a ``Trajectory`` along the batch axis."""

    latents: torch.Tensor  # (K+1, b, *L)
    model_outputs: torch.Tensor  # (K, b, *L) guided outputs recorded at sampling time
    stds: torch.Tensor  # (K, b)
    log_probs: torch.Tensor  # (K, b)
    prompts: list[str]
    cond: PromptEmbeds
    uncond: PromptEmbeds
    transitions: list[int]  # which k to train on
    advantages: torch.Tensor | None = None  # (b,) DDPO
    stats: dict = field(default_factory=dict)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


def _policy_output(ctx: StepContext, chunk: Chunk, x: torch.Tensor, k: int) -> torch.Tensor:
    """Guided output of the trained model at latents index k; parameter grads flow (through DDP if set)."""
    t = ctx.timesteps[k].reshape(1).to(x.device)
    if ctx.policy is not None:
        with ctx.policy():
            return guided_output(ctx.model, x, t, chunk.cond, chunk.uncond, ctx.guidance)
    return guided_output(ctx.model, x, t, chunk.cond, chunk.uncond, ctx.guidance)


def _output(ctx: StepContext, chunk: Chunk, x: torch.Tensor, k: int) -> torch.Tensor:
    t = ctx.timesteps[k].reshape(1).to(x.device)
    return guided_output(ctx.model, x, t, chunk.cond, chunk.uncond, ctx.guidance)


def reward_and_gradient(ctx: StepContext, chunk: Chunk, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """R3D at the one-step clean prediction of state ``latents[k]`` = x, its gradient in x, and w.

    Returns rewards (b,), g = dR/dx (b, *L) (detached) and the weight w (ALGORITHM.md): 1 at x0
    (k = K), else sqrt(alpha_bar) / alpha_bar / 1 by ``reward_weighting``. The gradient runs through
    the current (LoRA) denoiser, decoder, renderer and reward; parameters get no gradient here.
    """
    x = x.detach().requires_grad_(True)
    K = len(ctx.timesteps)
    with torch.enable_grad():
        if k == K:
            x0, w = x, 1.0
        else:
            t = int(ctx.timesteps[k])
            with lora_disabled(ctx.model) if ctx.config.reward_gradient_from == "base" else contextlib.nullcontext():
                out = _output(ctx, chunk, x, k)
            x0 = predict_clean(ctx.scheduler, ctx.model.prediction_type, out, t, x)
            a = alpha_bar(ctx.scheduler, t)
            w = {"sqrt": math.sqrt(a), "squared": a, "none": 1.0}[ctx.config.reward_weighting]
        r = ctx.objective(x0, chunk.prompts, ctx.views, ctx.generator)
        (g,) = torch.autograd.grad(r.sum(), x)
    return r.detach(), g.detach(), w


def _scaled_reward_gradient(ctx: StepContext, g: torch.Tensor, w: float) -> torch.Tensor:
    shift = ctx.config.beta * w * g
    clip = ctx.config.clip_reward_grad
    if clip is not None:
        norm = shift.flatten(1).norm(dim=1).clamp_min(1e-12)
        shift = shift * _bcast((clip / norm).clamp(max=1.0), shift)
    return shift


def _flow(ctx: StepContext, x: torch.Tensor, k: int) -> torch.Tensor:
    K = len(ctx.timesteps)
    t = ctx.timesteps[k] if k < K else torch.tensor(0)
    return ctx.flow(x, t.to(x.device).float().expand(x.shape[0]))


def nabla_loss(ctx: StepContext, chunk: Chunk) -> tuple[torch.Tensor, dict]:
    """Residual forward nabla-DB (+ trust region; + reverse and terminal terms with a flow network).

    Per transition: ``r = s_theta - s_base - beta w g`` where ``s_theta - s_base = (mu_theta - mu_base) / std^2``
    (the sampled end point cancels; computing the difference directly avoids subtracting two large
    scores). The loss is mean(r^2) times ``std^(2p)`` per transition (``residual_units``; default p = 0,
    score units as ALGORITHM.md writes it): the minimiser of every transition's term is the one
    ALGORITHM.md states, only the weight between transitions changes. Score units let the late
    transitions, whose targets are small and consistent, drive the fit; in std (p = 1) and mean
    (p = 2) units the early transitions' huge, noisy targets dominate and the LoRA's by-product
    shifts at late steps move the model without raising the reward. On DDIM trajectories the last
    transition (std 0.0064 on the embedded model) outweighs the others in score units by ~1e4, hence
    the aligner's SDE-DPM-Solver++ default. See docs/alignment.md, "Which transitions weigh most".
    """
    cfg = ctx.config
    K = len(ctx.timesteps)
    total = torch.zeros(())
    parts = {"loss_db": 0.0, "loss_trust": 0.0, "loss_reverse": 0.0, "loss_terminal": 0.0}
    fit = torch.zeros(3, dtype=torch.float64)
    n = len(chunk.transitions)
    rewards_final = None
    for k in chunk.transitions:
        x_t, x_prev = chunk.latents[k], chunk.latents[k + 1]
        t = int(ctx.timesteps[k])
        std = chunk.stds[k]
        out = _policy_output(ctx, chunk, x_t, k)
        mean, _ = transition(ctx.scheduler, out, t, x_t, ctx.config.sampler.eta)
        with torch.no_grad(), lora_disabled(ctx.model):
            out_base = _output(ctx, chunk, x_t, k)
            mean_base, _ = transition(ctx.scheduler, out_base, t, x_t, ctx.config.sampler.eta)
        r, g, w = reward_and_gradient(ctx, chunk, x_prev, k + 1)
        if k + 1 == K:
            rewards_final = r
        target = _scaled_reward_gradient(ctx, g, w)
        if ctx.flow is not None and k + 1 < K:
            target = target + _flow(ctx, x_prev, k + 1)
        var = _bcast(std.pow(2), x_t)
        shift = mean - mean_base.detach()
        resid = shift / var - target
        power = RESIDUAL_POWER[cfg.residual_units]
        units = _bcast(std.pow(power - 2), x_t)  # mean shifts -> the units the loss weighs them in
        _fit_stats(fit, (shift * units).detach(), (var * target * units).detach())
        loss_db = (resid.pow(2) * var.pow(power)).mean()
        loss_trust = cfg.trust_region * (out.float() - chunk.model_outputs[k].float()).pow(2).mean()
        loss = loss_db + loss_trust
        parts["loss_db"] += float(loss_db.detach()) / n
        parts["loss_trust"] += float(loss_trust.detach()) / n
        if ctx.flow is not None:
            loss_rev = _reverse_term(ctx, chunk, x_t, x_prev, k)
            loss = loss + loss_rev
            parts["loss_reverse"] += float(loss_rev.detach()) / n
            if k + 1 == K:
                loss_term = _flow(ctx, x_prev, K).pow(2).mean()
                loss = loss + loss_term
                parts["loss_terminal"] += float(loss_term.detach()) / n
        total = total + loss / n
    if rewards_final is not None:
        chunk.stats["rewards"] = rewards_final
    if ctx.flow is None:
        parts.pop("loss_reverse")
        parts.pop("loss_terminal")
    parts.update(_fit_summary(fit))
    return total, parts


def _fit_stats(fit: torch.Tensor, shift: torch.Tensor, wanted: torch.Tensor) -> None:
    """Accumulate, over a chunk's transitions, <shift, wanted>, |shift|^2 and |wanted|^2 into ``fit`` (3,).

    shift = mu_theta - mu_base (b, *L) is what the LoRA does before this update, wanted = std^2 (beta w g
    + flow) what the target asks, both scaled per transition to the units the loss weighs them in
    (``residual_units``). :func:`_fit_summary` turns the sums into the cosine and the norm ratio over
    the whole chunk, logged so a run shows whether the model follows its target (cosine near 1,
    ratio near 1) or moves elsewhere (cosine near 0). The trajectories are fresh samples, so this is
    a held-out measure of the fit.
    """
    s, w = shift.flatten().double(), wanted.flatten().double()
    fit += torch.stack([s @ w, s @ s, w @ w])


def _fit_summary(fit: torch.Tensor) -> dict:
    dot, ss, ww = fit.tolist()
    return {"fit_cos": dot / max(math.sqrt(ss * ww), 1e-30), "fit_ratio": math.sqrt(ss / max(ww, 1e-30))}


def _reverse_term(ctx: StepContext, chunk: Chunk, x_t: torch.Tensor, x_prev: torch.Tensor, k: int) -> torch.Tensor:
    """Gradient of the DB condition in x_t: d/dx_t [log p_theta - log p_base](x_prev | x_t) + beta w g_t + flow(x_t)."""
    t = int(ctx.timesteps[k])
    std = _bcast(chunk.stds[k], x_t)
    eta = ctx.config.sampler.eta

    def score_in_xt(use_lora: bool) -> torch.Tensor:
        x = x_t.detach().requires_grad_(True)
        with torch.enable_grad():
            if use_lora:
                out = _policy_output(ctx, chunk, x, k)
            else:
                with lora_disabled(ctx.model):
                    out = _output(ctx, chunk, x, k)
            mean, _ = transition(ctx.scheduler, out, t, x, eta)
            logp = -((x_prev - mean).pow(2) / (2 * std.pow(2))).sum()
            (grad,) = torch.autograd.grad(logp, x, create_graph=use_lora)
        return grad

    diff = score_in_xt(True) - score_in_xt(False).detach()
    _, g, w = reward_and_gradient(ctx, chunk, x_t, k)
    resid = diff + _scaled_reward_gradient(ctx, g, w) + _flow(ctx, x_t, k)
    return (resid.pow(2) * std.pow(2 * RESIDUAL_POWER[ctx.config.residual_units])).mean()


def ddpo_loss(ctx: StepContext, chunk: Chunk) -> tuple[torch.Tensor, dict]:
    """PPO-clip on per-transition probability ratios with per-prompt normalised advantages (Black et al.)."""
    cfg = ctx.config
    total = torch.zeros(())
    n = len(chunk.transitions)
    adv = chunk.advantages.clamp(-cfg.ddpo_adv_clip, cfg.ddpo_adv_clip)
    clipped = 0.0
    for k in chunk.transitions:
        x_t, x_prev = chunk.latents[k], chunk.latents[k + 1]
        out = _policy_output(ctx, chunk, x_t, k)
        mean, std = transition(ctx.scheduler, out, int(ctx.timesteps[k]), x_t, cfg.sampler.eta)
        log_prob = gaussian_log_prob(x_prev, mean, chunk.stds[k])
        ratio = torch.exp(log_prob - chunk.log_probs[k])
        unclipped = -adv * ratio
        clipped_loss = -adv * ratio.clamp(1 - cfg.ddpo_clip, 1 + cfg.ddpo_clip)
        total = total + torch.maximum(unclipped, clipped_loss).mean() / n
        clipped += float(((ratio - 1).abs() > cfg.ddpo_clip).float().mean()) / n
    return total, {"clip_fraction": clipped}


def refl_loss(ctx: StepContext, chunk: Chunk) -> tuple[torch.Tensor, dict]:
    """ReFL: one denoiser call at a random late state, maximise the reward of its clean prediction."""
    total = torch.zeros(())
    for k in chunk.transitions:  # the trainer picks one late k per chunk
        x_t = chunk.latents[k]
        out = _policy_output(ctx, chunk, x_t, k)
        x0 = predict_clean(ctx.scheduler, ctx.model.prediction_type, out, int(ctx.timesteps[k]), x_t)
        r = ctx.objective(x0, chunk.prompts, ctx.views, ctx.generator)
        total = total - r.mean() / len(chunk.transitions)
    return total, {}


def draft_loss(ctx: StepContext, chunk: Chunk) -> tuple[torch.Tensor, dict]:
    """DRaFT-1: backpropagate the reward of x0 through the last sampling step only (same noise)."""
    K = len(ctx.timesteps)
    k = K - 1
    x_t = chunk.latents[k]
    out = _policy_output(ctx, chunk, x_t, k)
    mean, _ = transition(ctx.scheduler, out, int(ctx.timesteps[k]), x_t, ctx.config.sampler.eta)
    with torch.no_grad():
        mean_old, _ = transition(ctx.scheduler, chunk.model_outputs[k], int(ctx.timesteps[k]), x_t, ctx.config.sampler.eta)
    x0 = mean + (chunk.latents[K] - mean_old)  # the recorded noise std * z, re-used
    r = ctx.objective(x0, chunk.prompts, ctx.views, ctx.generator)
    return -r.mean(), {}


# residual^2 * std^(2p): p = 0 scores as ALGORITHM.md writes them, 1 units of std, 2 units of the mean.
RESIDUAL_POWER = {"score": 0, "std": 1, "mean": 2}

LOSSES = {"nabla": nabla_loss, "ddpo": ddpo_loss, "refl": refl_loss, "draft": draft_loss}


def choose_transitions(config: AlignConfig, steps: int, stds: torch.Tensor, generator: torch.Generator) -> list[int]:
    """Transition indices for one update of one trajectory batch (ALGORITHM.md "Subsampling").

    nabla / ddpo: ``round(subsample * K)`` transitions, the final one always, the rest uniformly or
    stratified over quarters of the chain (``low_variance``); deterministic transitions (std 0) are
    skipped. refl: one index in [refl_late * K, K). draft: the last one.
    """
    K = steps
    stochastic = [k for k in range(K) if bool((stds[k] > 0).all())]
    if config.method == "draft":
        return [K - 1]
    if config.method == "refl":
        lo = min(int(config.refl_late * K), K - 1)
        return [lo + int(torch.randint(K - lo, (1,), generator=generator))]
    if not stochastic:
        raise ValueError("every transition is deterministic (std 0): use a stochastic sampler (DDIM eta > 0)")
    n = max(1, min(len(stochastic), round(config.subsample * K)))
    final, rest = stochastic[-1], stochastic[:-1]
    picked = [final]
    if n > 1 and rest:
        if config.low_variance:
            strata = [s for s in (rest[i * len(rest) // 4:(i + 1) * len(rest) // 4] for i in range(4)) if s]
            # n-1 picks spread over the strata in turn, without replacement inside each.
            order = [torch.randperm(len(s), generator=generator).tolist() for s in strata]
            i = 0
            while len(picked) < n and any(order):
                s = i % len(strata)
                if order[s]:
                    picked.append(strata[s][order[s].pop()])
                i += 1
        else:
            perm = torch.randperm(len(rest), generator=generator).tolist()
            picked += [rest[j] for j in perm[: n - 1]]
    return sorted(picked)
