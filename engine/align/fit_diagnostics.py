"""How well the LoRA follows the forward target, with the target's own noise taken out.

``fit_cos`` (logged by :func:`engine.align.methods.nabla_loss`) compares the LoRA's change of the
transition mean with the *single-sample* forward target beta w g(x_{t-1}): one end state x_{t-1} per
start state x_t, one random camera set, image noise. The LoRA's shift is a function of x_t alone, so
the best it can do is E[target | x_t]; a low ``fit_cos`` may be the target's noise as much as a
failure to follow. This module estimates E[target | x_t] with little noise for the same start
states: K redraws of the end state from the recorded transition (x_{t-1} = mu_recorded(x_t) + std z),
a fresh full camera set for each, no image noise, full detail and all views at every state, averaged.
Logged against it (``AlignConfig.fit_clean_redraws`` > 0; off by default, it costs K extra reward
gradients per update and nothing else):

- ``fit_cos_clean`` / ``fit_ratio_clean``: the LoRA's shift against the low-noise target;
- ``target_cos``: the single-sample target against the low-noise one (near 1: a clean target; near
  0: mostly noise);
- ``target_ratio``: |low-noise| / |single-sample|.

All in the units the loss weighs transitions in (``residual_units``), summed over a chunk's
transitions like ``fit_cos``. docs/method.md, "Fit against target noise (issue 21 §2)".
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

from ..sampling.sampler import transition
from .methods import Chunk, StepContext, _bcast, _flow, _group_timesteps, _rows, _scaled_reward_gradient, _stack, \
    reward_gradients, terminal_state


@contextlib.contextmanager
def image_noise_off(objective):
    """The objective with its image noise (``image_noise``, where it has one) set to 0 inside."""
    old = getattr(objective, "image_noise", None)
    if old is None:
        yield objective
        return
    objective.image_noise = 0.0
    try:
        yield objective
    finally:
        objective.image_noise = old


def diagnostic_generator(ctx: StepContext, chunk: Chunk) -> torch.Generator:
    """A generator of its own for the diagnostic's cameras and redraws, seeded from the round's seed
    and the chunk's states without drawing from ``ctx.generator``: the run's own random stream (its
    cameras, transitions, image noise) stays what it is with the diagnostic off."""
    key = float(chunk.latents[-1].double().abs().sum()) if chunk.latents.numel() else 0.0
    seed = (ctx.generator.initial_seed() * 1_000_003 + int(key * 1e6)) % (2 ** 63)
    return torch.Generator().manual_seed(seed)


def _recorded_means(ctx: StepContext, chunk: Chunk, ks: list[int]) -> torch.Tensor:
    """The transition means (n * b, *L) the trajectories were sampled from (recorded, or rebuilt from
    the recorded denoiser outputs)."""
    if chunk.means is not None:
        return _stack(chunk.means, ks)
    return torch.cat([transition(ctx.scheduler, chunk.model_outputs[k], int(ctx.timesteps[k]), chunk.latents[k],
                                 ctx.config.sampler.eta)[0] for k in ks])


def low_noise_target(ctx: StepContext, chunk: Chunk, ks: list[int], redraws: int, *, fresh_views: bool = True,
                     redraw_ends: bool = True, image_noise: bool = False,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Estimate of E[target | x_t] (n * b, *L) at the start states of transitions ``ks`` (n) of a chunk.

    Each of ``redraws`` draws: the end state x_{t-1} (the recorded one when ``redraw_ends`` is False,
    else the recorded mean + std z), the views (a fresh camera set when ``fresh_views``, else the
    round's ``ctx.views``), the reward at full detail and with all views at every state, image noise
    off unless ``image_noise``; then the method's target beta w g(x_{t-1}) (+ the detached flow
    network at states before the terminal one), averaged over the draws. Rows grouped by transition
    like :func:`engine.align.methods.nabla_loss`'s. With ``redraws=1``, ``fresh_views=False``,
    ``redraw_ends=False`` and the same image noise it is the single-sample target itself.
    """
    if not isinstance(redraws, int) or redraws < 1:
        raise ValueError(f"redraws must be an integer >= 1, got {redraws!r}")
    gen = generator if generator is not None else diagnostic_generator(ctx, chunk)
    b = chunk.latents.shape[1]
    ends = [k + 1 for k in ks]
    terminal = terminal_state(chunk.stds)
    # The strong estimate: every state at full detail with the full view set, and the diagnostic's own generator.
    cfg = dataclasses.replace(ctx.config, intermediate_views=None, intermediate_detail=1.0, cameras_per_transition=False)
    recorded = _stack(chunk.latents, ends)
    mean = _recorded_means(ctx, chunk, ks) if redraw_ends else None
    std = _bcast(_stack(chunk.stds, ks), recorded)
    inner = [i for i, j in enumerate(ends) if j < terminal]
    total = torch.zeros_like(recorded)
    noise = contextlib.nullcontext() if image_noise else image_noise_off(ctx.objective)
    with noise:
        for _ in range(redraws):
            views = ctx.objective.sample_views(gen) if fresh_views else ctx.views
            sub = dataclasses.replace(ctx, config=cfg, views=views, generator=gen)
            x_end = recorded
            if redraw_ends:
                z = torch.randn(recorded.shape, generator=gen, dtype=recorded.dtype).to(recorded.device)
                x_end = mean + std * z
            _, g, w = reward_gradients(sub, chunk, x_end, ends)
            target = _scaled_reward_gradient(sub, g, w)
            if ctx.flow is not None and inner:
                rows = _rows(inner, b, x_end.device)
                with torch.no_grad():
                    flow = _flow(ctx, x_end[rows], _group_timesteps(ctx, [ends[i] for i in inner], b, x_end.device))
                target = target.index_add(0, rows, flow.to(target.dtype))
            total = total + target.detach()
    return total / redraws


def _cos_and_ratio(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.flatten().double(), b.flatten().double()
    aa, bb = float(a @ a), float(b @ b)
    return float(a @ b) / max(math.sqrt(aa * bb), 1e-30), math.sqrt(aa / max(bb, 1e-30))


def fit_summary(shift: torch.Tensor, single: torch.Tensor, clean: torch.Tensor) -> dict:
    """Cosines and norm ratios over all rows of a chunk, tensors (n * b, *L) in the same units:
    ``shift`` what the LoRA does, ``single`` the single-sample target, ``clean`` the low-noise one."""
    fit_cos, fit_ratio = _cos_and_ratio(shift, clean)
    target_cos, target_ratio = _cos_and_ratio(clean, single)
    return {"fit_cos_clean": fit_cos, "fit_ratio_clean": fit_ratio, "target_cos": target_cos, "target_ratio": target_ratio}


def clean_fit_stats(ctx: StepContext, chunk: Chunk, ks: list[int], shift: torch.Tensor, single: torch.Tensor,
                    scale: torch.Tensor) -> dict:
    """The hook :func:`engine.align.methods.nabla_loss` calls when ``fit_clean_redraws`` > 0.

    ``shift`` and ``single`` (n * b, *L): the LoRA's mean shift and the single-sample target, already in
    the loss's units (as ``fit_cos`` sees them); ``scale`` (broadcastable): std^2 times those units,
    which takes a score-unit target to them. Returns :func:`fit_summary`'s dict.
    """
    clean = low_noise_target(ctx, chunk, ks, ctx.config.fit_clean_redraws)
    return fit_summary(shift.detach(), single.detach(), (scale * clean).detach())
