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
    means: torch.Tensor | None = None  # (K, b, *L) transition means recorded at sampling time
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


def terminal_state(stds: torch.Tensor) -> int:
    """Index of the state after the last stochastic transition of a chunk's trajectories.

    What follows it is deterministic (e.g. SDE-DPM-Solver++'s last step to sigma 0, which lands on the
    one-step clean prediction), so its flow is known exactly: F = exp(beta R(x0_hat)), w = 1 and no
    learned residual flow (the terminal term pins it to zero there). K when every step is stochastic.
    """
    stochastic = [k for k in range(stds.shape[0]) if bool((stds[k] > 0).all())]
    return stochastic[-1] + 1 if stochastic else stds.shape[0]


def _stack(t: torch.Tensor, index: list[int]) -> torch.Tensor:
    """(K or K+1, b, ...) sliced at ``index`` (n,) -> (n * b, ...), grouped by index."""
    return t[index].flatten(0, 1)


def _group_timesteps(ctx: StepContext, states: list[int], b: int, device) -> torch.Tensor:
    K = len(ctx.timesteps)
    ts = [int(ctx.timesteps[j]) if j < K else 0 for j in states]
    return torch.tensor(ts, device=device).repeat_interleave(b)


def _rows(groups: list[int], b: int, device) -> torch.Tensor:
    """Row indices in a stacked (n * b, ...) tensor of the groups ``groups`` (each b rows)."""
    return torch.cat([torch.arange(i * b, (i + 1) * b) for i in groups]).to(device)


def _groups(n_rows: int, n: int) -> list[slice]:
    b = n_rows // n
    return [slice(i * b, (i + 1) * b) for i in range(n)]


def reward_gradients(ctx: StepContext, chunk: Chunk, x: torch.Tensor, states: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R3D at the one-step clean predictions of states ``states`` (n,), stacked in x (n * b, *L).

    One batched denoiser call, one decode/render/reward call and one backward for all n states
    (docs/method.md, "Speed"). Returns rewards (n * b,), g = dR/dx (n * b, *L) (detached) and the
    weights w (n * b,): 1 at the terminal state and after it (:func:`terminal_state`), else
    ``reward_weighting`` of alpha_bar. The gradient runs through the current (LoRA) denoiser, or the
    frozen one with ``reward_gradient_from="base"``, then decoder, renderer and reward; parameters
    get no gradient here. With ``intermediate_gradient="terminal"`` the reward's gradient is read once
    per trajectory, at the terminal state's prediction, and pulled back through every state's
    prediction (:func:`_pulled_back_gradients`; docs/method.md, "Round cost").
    """
    K = len(ctx.timesteps)
    n, b = len(states), x.shape[0] // len(states)
    terminal = K if chunk.stds is None else terminal_state(chunk.stds)
    weights = [reward_weight(ctx.config.reward_weighting, alpha_bar(ctx.scheduler, int(ctx.timesteps[j])))
               if j < terminal else 1.0 for j in states]
    w = torch.tensor(weights, dtype=x.dtype, device=x.device).repeat_interleave(b)
    if ctx.config.intermediate_gradient == "terminal" and any(j < terminal for j in states):
        r, g = _pulled_back_gradients(ctx, chunk, x, states, terminal)
        return r, g, w.to(g.dtype)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        x0 = _clean_predictions(ctx, chunk, x, states)
        r = torch.empty(n * b, dtype=x.dtype, device=x.device)
        total = 0.0
        for states_in, views, detail in _reward_groups(ctx, states, terminal):
            rows_g = _rows(states_in, b, x.device)
            r_g = ctx.objective(x0[rows_g], chunk.prompts * len(states_in), views, ctx.generator, detail)
            total = total + r_g.sum()
            r = r.index_copy(0, rows_g, r_g.detach().to(r.dtype))
        (g,) = torch.autograd.grad(total, x)
    return r.detach(), g.detach(), w.to(g.dtype)


def _clean_predictions(ctx: StepContext, chunk: Chunk, x: torch.Tensor, states: list[int]) -> torch.Tensor:
    """One-step clean predictions x0_hat (n * b, *L) of states ``states`` stacked in x (n * b, *L): one
    batched denoiser call (the current model, or the frozen one with ``reward_gradient_from="base"``);
    clean states (index K) are their own prediction. Differentiable in x."""
    K = len(ctx.timesteps)
    b = x.shape[0] // len(states)
    noisy = [i for i, j in enumerate(states) if j < K]
    if not noisy:
        return x
    rows = _rows(noisy, b, x.device)
    t = _group_timesteps(ctx, [states[i] for i in noisy], b, x.device)
    cond, uncond = _repeat_embeds(chunk.cond, len(noisy)), _repeat_embeds(chunk.uncond, len(noisy))
    with lora_disabled(ctx.model) if ctx.config.reward_gradient_from == "base" else contextlib.nullcontext():
        out = guided_output(ctx.model, x[rows], t, cond, uncond, ctx.guidance)
    cleans = [predict_clean(ctx.scheduler, ctx.model.prediction_type, out[sl], int(ctx.timesteps[states[i]]), x[rows][sl])
              for sl, i in zip(_groups(len(rows), len(noisy)), noisy)]
    x0 = x.clone()
    x0[rows] = torch.cat(cleans)
    return x0


def _pulled_back_gradients(ctx: StepContext, chunk: Chunk, x: torch.Tensor, states: list[int],
                           terminal: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``intermediate_gradient="terminal"``: g = J_x0_hat(x_j)^T v for every state j, with v = dR/dx0 at
    the terminal state's clean prediction x0_hat(x_terminal) (the trajectory's sample, up to the
    policy's change since sampling). One objective call (decode, render, reward) on the b terminal
    predictions, at the round's views and full detail, instead of one per state; one vector-Jacobian
    product through the batched denoiser for all states. Exact at the terminal state (and after it);
    before it, the reward's gradient is read at the sample rather than at the state's own blurrier
    prediction. Returns rewards (n * b,): the terminal prediction's reward on every row, and g (n * b, *L)."""
    n, b = len(states), x.shape[0] // len(states)
    extra = [] if terminal in states else [terminal]
    everything = x.detach() if not extra else torch.cat([x.detach(), chunk.latents[terminal].to(x.dtype)])
    everything = everything.requires_grad_(True)
    at = (states + extra).index(terminal)
    with torch.enable_grad():
        x0 = _clean_predictions(ctx, chunk, everything, states + extra)
        anchor = x0[at * b:(at + 1) * b].detach().requires_grad_(True)
        (_, views, _), = _reward_groups(ctx, [terminal], terminal)
        reward = ctx.objective(anchor, chunk.prompts, views, ctx.generator, 1.0)
        (v,) = torch.autograd.grad(reward.sum(), anchor)
        (g,) = torch.autograd.grad(x0, everything, grad_outputs=v.repeat(n + len(extra), *[1] * (v.dim() - 1)))
    r = reward.detach().to(x.dtype).repeat(n)
    return r, g[: n * b].detach()


def _reward_groups(ctx: StepContext, states: list[int], terminal: int) -> list[tuple[list[int], object, float]]:
    """How the states (indices into ``states``) are rendered: [(indices, views, detail)], one objective
    call each. States before the terminal one (w < 1) get ``intermediate_views`` of the views at
    ``intermediate_detail``; with ``cameras_per_transition`` every state gets its own fresh views, so
    the few views' errors do not line up across the transitions of an update (docs/method.md, "Speed").
    """
    cfg = ctx.config
    few, detail = cfg.intermediate_views, cfg.intermediate_detail
    inner = [i for i, j in enumerate(states) if j < terminal]
    outer = [i for i, j in enumerate(states) if j >= terminal]

    def views_for(is_inner: bool):
        views = ctx.objective.sample_views(ctx.generator) if cfg.cameras_per_transition else ctx.views
        return ctx.objective.subset_views(views, few, ctx.generator) if is_inner and few is not None else views

    if cfg.cameras_per_transition:
        return [([i], views_for(i in inner), detail if i in inner else 1.0) for i in range(len(states))]
    if few is None and detail == 1.0:
        return [(list(range(len(states))), ctx.views, 1.0)]
    return [(part, views_for(part is inner), detail if part is inner else 1.0) for part in (inner, outer) if part]


def reward_and_gradient(ctx: StepContext, chunk: Chunk, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """:func:`reward_gradients` of one state ``latents[k]`` = x (b, *L): rewards (b,), g (b, *L), w."""
    r, g, w = reward_gradients(ctx, chunk, x, [k])
    return r, g, float(w[0])


def reward_weight(weighting: str, a: float) -> float:
    """w of the forward target at a state with cumulative alpha ``a``: sqrt(a), a or 1 (docs/method.md)."""
    return {"sqrt": math.sqrt(a), "squared": a, "none": 1.0}[weighting]


def _repeat_embeds(e: PromptEmbeds, n: int) -> PromptEmbeds:
    return e if n == 1 else PromptEmbeds.cat([e] * n)


def _scaled_reward_gradient(ctx: StepContext, g: torch.Tensor, w) -> torch.Tensor:
    """beta * w * g, w a float or per-row (B,), clipped per row to ``clip_reward_grad``."""
    w = torch.as_tensor(w, dtype=g.dtype, device=g.device)
    shift = ctx.config.beta * (_bcast(w, g) if w.dim() else w) * g
    clip = ctx.config.clip_reward_grad
    if clip is not None:
        norm = shift.flatten(1).norm(dim=1).clamp_min(1e-12)
        shift = shift * _bcast((clip / norm).clamp(max=1.0), shift)
    return shift


def _flow(ctx: StepContext, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The residual flow g_phi at x (B, *L), timesteps t (B,) (0 for clean states)."""
    return ctx.flow(x, t.to(x.device).float())


def _means(ctx: StepContext, out: torch.Tensor, x: torch.Tensor, transitions: list[int]) -> torch.Tensor:
    """Transition means (n * b, *L) of stacked outputs/states, one scheduler step per group."""
    groups = _groups(x.shape[0], len(transitions))
    return torch.cat([transition(ctx.scheduler, out[sl], int(ctx.timesteps[k]), x[sl], ctx.config.sampler.eta)[0]
                      for sl, k in zip(groups, transitions)])


def nabla_loss(ctx: StepContext, chunk: Chunk) -> tuple[torch.Tensor, dict]:
    """Residual forward nabla-DB (+ trust region; + reverse and terminal terms with a flow network).

    With a flow network (``flow_network``) g_phi(x_{t-1}) joins the target, and the flow is fitted by
    :func:`_bootstrap_term` (``flow_target="bootstrap"``, the default) or by the reverse nabla-DB term
    and the terminal term (``"reverse"``, :func:`_reverse_term`).

    Per transition: ``r = s_theta - s_base - beta w g`` where ``s_theta - s_base = (mu_theta - mu_base) / std^2``
    (the sampled end point cancels; computing the difference directly avoids subtracting two large
    scores). The loss is mean(r^2) times ``std^(2p)`` per transition (``residual_units``; default p = 0,
    score units as the paper writes it): every transition's term has the same minimiser, only the
    weight between transitions changes (docs/method.md, "Which transitions weigh most").

    All chosen transitions of the chunk go through the denoiser, decoder and renderer as one batch:
    the policy and base outputs at the start states in one call each, the reward gradients at the
    end states in one call (:func:`reward_gradients`).
    """
    cfg = ctx.config
    K = len(ctx.timesteps)
    ks = list(chunk.transitions)
    n, b = len(ks), chunk.latents.shape[1]
    ends = [k + 1 for k in ks]
    terminal = terminal_state(chunk.stds)
    x_t, x_prev = _stack(chunk.latents, ks), _stack(chunk.latents, ends)
    t_start = _group_timesteps(ctx, ks, b, x_t.device)
    cond, uncond = _repeat_embeds(chunk.cond, n), _repeat_embeds(chunk.uncond, n)
    if ctx.policy is not None:
        with ctx.policy():
            out = guided_output(ctx.model, x_t, t_start, cond, uncond, ctx.guidance)
    else:
        out = guided_output(ctx.model, x_t, t_start, cond, uncond, ctx.guidance)
    mean = _means(ctx, out, x_t, ks)
    with torch.no_grad(), lora_disabled(ctx.model):
        mean_base = _means(ctx, guided_output(ctx.model, x_t, t_start, cond, uncond, ctx.guidance), x_t, ks)
    r, g, w = reward_gradients(ctx, chunk, x_prev, ends)
    target = _scaled_reward_gradient(ctx, g, w)
    flow_rows = None
    if ctx.flow is not None:
        inner = [i for i, j in enumerate(ends) if j < terminal]
        if inner:
            flow_rows = _rows(inner, b, x_prev.device)
            t_end = _group_timesteps(ctx, [ends[i] for i in inner], b, x_prev.device)
            flow = _flow(ctx, x_prev[flow_rows], t_end)
            # The bootstrap fit keeps the flow off the forward term: that term would pull it to the policy's shift.
            trains_flow = cfg.flow_forward_grad and cfg.flow_target == "reverse"
            target = target.index_add(0, flow_rows, flow if trains_flow else flow.detach())
    wanted = target.detach()  # the forward target: the estimate of grad log F at the end points
    std = _stack(chunk.stds, ks)
    var = _bcast(std.pow(2), x_t)
    shift = mean - mean_base.detach()
    resid = shift / var - target
    power = RESIDUAL_POWER[cfg.residual_units]
    units = _bcast(std.pow(power - 2), x_t)  # mean shifts -> the units the loss weighs them in
    fit = torch.zeros(3, dtype=torch.float64)
    _fit_stats(fit, (shift * units).detach(), (var * target * units).detach())
    loss_db = (resid.pow(2) * var.pow(power)).mean()
    loss_trust = cfg.trust_region * (out.float() - _stack(chunk.model_outputs, ks).float()).pow(2).mean()
    total = loss_db + loss_trust
    parts = {"loss_db": float(loss_db.detach()), "loss_trust": float(loss_trust.detach())}
    if K in ends:
        i = ends.index(K)
        chunk.stats["rewards"] = r[i * b:(i + 1) * b]
    if ctx.flow is not None and cfg.flow_target == "bootstrap":
        loss_flow = _bootstrap_term(ctx, chunk, x_t, ks, t_start, wanted)
        total = total + loss_flow
        parts.update(loss_flow=float(loss_flow.detach()))
    elif ctx.flow is not None:
        end_point = x_prev if cfg.reverse_point == "sampled" else _stack(chunk.means, ks)
        loss_rev = _reverse_term(ctx, chunk, x_t, end_point, ks, t_start)
        # The terminal term: g_phi is zero where the flow is known exactly (the terminal state and after).
        at_end = [i for i, j in enumerate(ends) if j >= terminal]
        loss_term = torch.zeros(())
        if at_end:
            rows = _rows(at_end, b, x_prev.device)
            loss_term = _flow(ctx, x_prev[rows], _group_timesteps(ctx, [ends[i] for i in at_end], b, x_prev.device)).pow(2).mean()
            loss_term = loss_term * len(at_end) / n
        total = total + loss_rev + loss_term
        parts.update(loss_reverse=float(loss_rev.detach()), loss_terminal=float(loss_term.detach()))
    parts.update(_fit_summary(fit))
    if cfg.fit_clean_redraws:  # opt-in: the fit against a low-noise target (docs/method.md, "Fit against target noise")
        from .fit_diagnostics import clean_fit_stats
        parts.update(clean_fit_stats(ctx, chunk, ks, shift * units, var * target * units, var * units))
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


def _bootstrap_term(ctx: StepContext, chunk: Chunk, x_t: torch.Tensor, ks: list[int], t_start: torch.Tensor,
                    wanted: torch.Tensor) -> torch.Tensor:
    """The flow network's fit to the base's flow recursion at the start states x_t (n * b, *L).

    The base's flow satisfies F_t(x) = E_base[F_{t-1}(x') | x], x' = mu_base(x) + std z, so
    grad log F_t(x) = J_base(x)^T E[grad log F_{t-1}(x')], the expectation under the tilted transition
    (which the policy approximates, so its recorded end points serve). ``wanted`` (n * b, *L) is the
    forward target beta w g(x') + g_phi(x') at those end points (detached: a bootstrap, as in TD
    learning; exact at the terminal state, where g_phi is 0). The flow is regressed onto
    J_base^T wanted - beta w g(x_t): a target made of the base and the flow's own estimate one state
    later, not of the policy's current shift, so an under-tilted policy cannot hold the flow short.
    One vector-Jacobian product through the frozen denoiser; no double backward.
    """
    n = len(ks)
    std = _bcast(_stack(chunk.stds, ks), x_t)
    cond, uncond = _repeat_embeds(chunk.cond, n), _repeat_embeds(chunk.uncond, n)
    x = x_t.detach().requires_grad_(True)
    with torch.enable_grad(), lora_disabled(ctx.model):
        mean = _means(ctx, guided_output(ctx.model, x, t_start, cond, uncond, ctx.guidance), x, ks)
        (pulled,) = torch.autograd.grad((mean * wanted).sum(), x)
    _, g, w = reward_gradients(ctx, chunk, x_t, ks)
    resid = _flow(ctx, x_t, t_start) - (pulled - _scaled_reward_gradient(ctx, g, w)).detach()
    return (resid.pow(2) * std.pow(2 * RESIDUAL_POWER[ctx.config.flow_fit_units])).mean()


def _reverse_term(ctx: StepContext, chunk: Chunk, x_t: torch.Tensor, x_prev: torch.Tensor, ks: list[int],
                  t_start: torch.Tensor) -> torch.Tensor:
    """Gradient of the DB condition in x_t: d/dx_t [log p_theta - log p_base](x_prev | x_t) + beta w g_t + flow(x_t).

    Stacked over the chunk's transitions like :func:`nabla_loss`; needs a double backward through the
    denoiser (the reason the flow network cannot run under DDP).
    """
    n, b = len(ks), x_t.shape[0] // len(ks)
    std = _bcast(_stack(chunk.stds, ks), x_t)
    cond, uncond = _repeat_embeds(chunk.cond, n), _repeat_embeds(chunk.uncond, n)

    def score_in_xt(use_lora: bool) -> torch.Tensor:
        x = x_t.detach().requires_grad_(True)
        with torch.enable_grad():
            with contextlib.nullcontext() if use_lora else lora_disabled(ctx.model):
                out = guided_output(ctx.model, x, t_start, cond, uncond, ctx.guidance)
            mean = _means(ctx, out, x, ks)
            logp = -((x_prev - mean).pow(2) / (2 * std.pow(2))).sum()
            (grad,) = torch.autograd.grad(logp, x, create_graph=use_lora and ctx.config.reverse_policy_grad)
        return grad

    diff = score_in_xt(True) - score_in_xt(False).detach()
    _, g, w = reward_gradients(ctx, chunk, x_t, ks)
    resid = diff + _scaled_reward_gradient(ctx, g, w) + _flow(ctx, x_t, t_start)
    return (resid.pow(2) * std.pow(2 * RESIDUAL_POWER[ctx.config.residual_units])).mean()


def ddpo_loss(ctx: StepContext, chunk: Chunk) -> tuple[torch.Tensor, dict]:
    """PPO-clip on per-transition probability ratios with per-prompt normalised advantages (Black et al.).

    The ratio is exp of the log-probability difference averaged over latent dimensions (ddpo-pytorch's
    and TRL's convention), so ``ddpo_clip`` means what it means there.
    """
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
        # Per-dimension mean of the log-ratio, as ddpo-pytorch and TRL compute it: the clip range
        # (1e-4) was tuned for that; on the sum over the embedded model's 2,048 dimensions the same
        # clip is ~2,000x tighter (docs/method.md, "Fair baselines").
        ratio = torch.exp((log_prob - chunk.log_probs[k]) / x_t[0].numel())
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


# residual^2 * std^(2p): p = 0 scores as the paper writes them (docs/method.md), 1 units of std, 2 units of the mean.
RESIDUAL_POWER = {"score": 0, "std": 1, "mean": 2}

LOSSES = {"nabla": nabla_loss, "ddpo": ddpo_loss, "refl": refl_loss, "draft": draft_loss}


def choose_transitions(config: AlignConfig, steps: int, stds: torch.Tensor, generator: torch.Generator) -> list[int]:
    """Transition indices for one update of one trajectory batch (docs/method.md, "Subsampling").

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
