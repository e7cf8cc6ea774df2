"""Simulated artists for the preference reward: hidden rules that mark generated candidates.

Used by the tests (tests/engine/rewards/test_preference.py) and the study script
(scripts/preference_demo.py). Each rule has a *measure* of one asset (higher = more liked),
computed from the decoded field, the rendered albedo or the mesh, and marks candidates from it:
the top third liked, the bottom third disliked, the rest neutral (``"dislikes tori"`` marks
tori disliked and every other shape liked). Each rule also names a differentiable reward on the
same measure, the "align on the rule directly" baseline of the study, the figure alignment should
move on samples (no-tori: the prompt critic's mean p(torus), with the torus fraction as a second figure),
and the prompts the artist generates from.

"Dislikes tori" only means something where the prompt leaves the shape open: an artist who asks for
"a torus" and marks it disliked contradicts the prompt, and alignment could then only make tori look
less like tori. So that artist asks for "an object" (the unconditional prompt, which samples every
shape) and marks what the geometric judge reads in each mesh; the other two rules mark candidates of
the six shape prompts.

The rules read the embedded model's grammar (shape words) and its SDF fields: this is a study of
that model, not a general tool.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .. import model_spec
from ...render.types import RenderOutput
from ...rewards.base import Reward
from .grammar import COLOURS

ORANGE = COLOURS["orange"]  # the embedded model's "orange"
STUDY_PROMPTS = model_spec("embedded").example_prompts  # one per shape of the embedded model
OPEN_PROMPTS = ("an object",)  # the shape left open: the model samples every shape


@torch.no_grad()
def field_height(model, latents: torch.Tensor, resolution: int = 32) -> torch.Tensor:
    """Vertical extent (B,) in world units of each decoded field's inside (sdf < 0); Z is up and the
    grid is laid out (z, y, x). 0 for an empty field."""
    grid = model.decode(latents.float(), resolution=resolution).grid[:, 0]  # (B, D, H, W)
    rows = (grid < 0).flatten(2).any(-1)  # (B, D): z slices holding any inside voxel
    idx = torch.arange(rows.shape[1], dtype=torch.float32)
    top = torch.where(rows, idx, torch.full_like(idx, -1.0)).max(1).values
    bottom = torch.where(rows, idx, torch.full_like(idx, float(rows.shape[1]))).min(1).values
    return ((top - bottom + 1).clamp_min(0) * 2.0 / rows.shape[1])


def hue_distance_degrees(rgb: torch.Tensor, target=ORANGE, min_saturation: float = 0.25) -> torch.Tensor:
    """Circular hue distance (N,) in degrees of colours (N, 3) to ``target``; 180 for greyish colours
    (saturation below ``min_saturation``), whose hue means nothing."""
    import colorsys

    th = colorsys.rgb_to_hsv(*target)[0]
    out = []
    for r, g, b in rgb.clamp(0, 1).tolist():
        h, s, _ = colorsys.rgb_to_hsv(r, g, b)
        d = abs(h - th)
        out.append(min(d, 1 - d) * 360.0 if s >= min_saturation else 180.0)
    return torch.tensor(out)


def mean_albedo(renders: RenderOutput) -> torch.Tensor:
    """Coverage-weighted mean albedo (B, 3) over all views."""
    return renders.albedo.sum((1, 3, 4)) / renders.alpha.sum((1, 3, 4)).clamp_min(1e-6)


class SilhouetteHeight(Reward):
    """Differentiable height of the rendered silhouette: per view, the soft count of image rows the
    object covers (max of alpha along each row, summed), as a fraction of the image height."""

    name = "silhouette_height"
    channels = frozenset({"alpha"})

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        alpha = renders.alpha[:, :, 0]  # (B, V, R, R)
        soft_row = torch.logsumexp(alpha * 20.0, dim=-1) / 20.0  # smooth max over each row
        return soft_row.clamp(0, 1).mean(-1)


class NotTorus(Reward):
    """log(1 - p(torus)) of the prompt critic on each view: high when the view does not look like a torus."""

    name = "not_torus"
    channels = frozenset({"rgb"})

    def __init__(self):
        from ...rewards.critic import default_critic

        self.critic = default_critic()
        self.torus = self.critic.config.shapes.index("torus")

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        from ...rewards.critic import _run

        shape_lp = _run(self.critic, renders)[0]
        return torch.log1p(-shape_lp[..., self.torus].exp().clamp(max=1 - 1e-6))


@dataclass(frozen=True)
class Rule:
    """A simulated artist: ``measure(model, latents, prompts, renders)`` (B,) and how it marks.

    ``sample_measure`` is what alignment should move, on samples of any model (same signature), and
    ``unit``/``sign`` turn its mean into the reported figure (e.g. hue distance = -measure).
    ``prompts``: what the artist generates (candidates, alignment and held-out samples)."""

    name: str
    description: str
    measure: Callable[..., torch.Tensor]
    by_class: bool  # True: the measure is 0/1 (disliked/liked); False: marks by thirds
    direct_reward: Callable[[], Reward]  # the baseline's reward on the same measure
    sample_measure: Callable[..., torch.Tensor]
    unit: str  # what the reported figure is
    sign: float  # reported figure = sign * mean(sample_measure) + offset
    offset: float = 0.0
    second: "SecondFigure | None" = None  # a coarser figure reported beside the first (e.g. the torus fraction)
    prompts: tuple[str, ...] = STUDY_PROMPTS

    def report(self, sample_measure: torch.Tensor) -> float:
        return self.sign * float(sample_measure.float().mean()) + self.offset


@dataclass(frozen=True)
class SecondFigure:
    """A second figure of a rule on samples: ``sign * mean(measure(model, latents, prompts, renders)) + offset``."""

    unit: str
    measure: Callable[..., torch.Tensor]
    sign: float
    offset: float = 0.0

    def report(self, model, latents, prompts, renders) -> float:
        return self.sign * float(self.measure(model, latents, prompts, renders).float().mean()) + self.offset


def _height(model, latents, prompts, renders):
    return field_height(model, latents)


def _orange(model, latents, prompts, renders):
    return -hue_distance_degrees(mean_albedo(renders))


@torch.no_grad()
def _mesh_not_torus(model, latents, prompts, renders):
    """1 where the model's geometric judge (``judge_mesh``: mesh features, no network) reads no torus
    in the asset's mesh, 0 where it reads one: the artist's eye, independent of the critic whose
    features the preference head and the direct baseline use."""
    meshes = model.latents_to_meshes(latents.float())
    return torch.tensor([0.0 if model.judge_mesh(m, p).shape == "torus" else 1.0 for m, p in zip(meshes, prompts)])


def _seen_not_torus(model, latents, prompts, renders):
    from ...rewards.critic import PromptCritic

    shapes, _ = PromptCritic().predict(renders)
    return torch.tensor([0.0 if s == "torus" else 1.0 for s in shapes])


@torch.no_grad()
def torus_probability(renders: RenderOutput) -> torch.Tensor:
    """The prompt critic's p(torus) (B,) of each rendered asset: the softmax probability of its shape
    head's "torus", averaged over the V views (a continuous version of "is it seen as a torus")."""
    from ...rewards.critic import _run, default_critic

    critic = default_critic()
    shape_lp = _run(critic, renders)[0]  # (B, V, S) log-probabilities
    return shape_lp[..., critic.config.shapes.index("torus")].exp().mean(1).float()


def _seen_not_torus_probability(model, latents, prompts, renders):
    return 1.0 - torus_probability(renders)


def _palette_orange() -> Reward:
    from ...rewards.appearance import PaletteReward

    return PaletteReward([ORANGE])


RULES: dict[str, Rule] = {
    "taller": Rule("taller", "prefers taller objects (vertical extent of the decoded field)", _height, False, SilhouetteHeight,
                   _height, "height (world units, higher is liked)", 1.0),
    "orange": Rule("orange", "prefers orange (hue distance of the mean albedo to orange)", _orange, False, _palette_orange,
                   _orange, "hue distance to orange (degrees, lower is liked)", -1.0),
    # The torus fraction of a few held-out samples moves in steps of 1/N; the critic's mean p(torus)
    # over them is the finer figure, the fraction stays as the second.
    "no-tori": Rule("no-tori", "dislikes tori among 'an object' samples (the geometric judge's reading)", _mesh_not_torus,
                    True, NotTorus, _seen_not_torus_probability, "mean p(torus) (critic, lower is liked)", -1.0, 1.0,
                    SecondFigure("torus fraction (critic's view, lower is liked)", _seen_not_torus, -1.0, 1.0),
                    prompts=OPEN_PROMPTS),
}


def marks_from_measure(measure: torch.Tensor, by_class: bool, thresholds: tuple[float, float] | None = None
                       ) -> tuple[list[str], tuple[float, float]]:
    """Marks of a rule: 0/1 measures -> disliked/liked; otherwise liked at or above the upper threshold,
    disliked at or below the lower one, neutral between (thresholds: the measure's thirds unless given)."""
    if by_class:
        return ["liked" if m > 0.5 else "disliked" for m in measure.tolist()], (0.5, 0.5)
    if thresholds is None:
        thresholds = (float(measure.quantile(1 / 3)), float(measure.quantile(2 / 3)))
    lo, hi = thresholds
    return ["liked" if m >= hi else "disliked" if m <= lo else "neutral" for m in measure.tolist()], thresholds


@dataclass
class Candidates:
    """Generated candidates: prompts, seeds, latents (N, *L), views rendered from the fit orbit, features (N, D)."""

    prompts: list[str]
    seeds: list[int]
    latents: torch.Tensor
    renders: RenderOutput
    features: torch.Tensor


@torch.no_grad()
def make_candidates(model, count: int, first_seed: int, features, sampler=None, resolution: int = 32,
                    prompts=STUDY_PROMPTS) -> Candidates:
    """``count`` candidates cycling through ``prompts`` with seeds ``first_seed``...; rendered from the
    fit views (engine.rewards.preference.fit_orbit) and featurised with ``features``."""
    from ...render import render
    from ...render.cameras import orbit_cameras
    from ...sampling.sampler import SamplerConfig, sample
    from ...rewards.preference import fit_orbit, fit_render_config

    sampler = sampler or SamplerConfig(steps=8)
    ps = [prompts[i % len(prompts)] for i in range(count)]
    seeds = [first_seed + i for i in range(count)]
    latents = torch.cat([sample(model, ps[i:i + 16], seeds[i:i + 16], sampler).latents for i in range(0, count, 16)])
    cams = orbit_cameras(fit_orbit())
    parts = [render(model.decode(latents[i:i + 16]), cams, fit_render_config(resolution)) for i in range(0, count, 16)]
    renders = RenderOutput(**{k: torch.cat([getattr(p, k) for p in parts]) for k in ("rgb", "albedo", "alpha", "depth", "normal")},
                           cameras=cams)
    feats = features(renders.rgb, renders.alpha).mean(1)
    return Candidates(ps, seeds, latents, renders, feats)


def rule_measure(rule: Rule, model, cands: Candidates) -> torch.Tensor:
    """The rule's measure (N,) of every candidate."""
    out = rule.measure(model, cands.latents, cands.prompts, cands.renders).float()
    if not torch.isfinite(out).all():
        raise RuntimeError(f"rule {rule.name}: non-finite measure")
    return out


def held_out_auc(scores: torch.Tensor, measure: torch.Tensor, by_class: bool, thresholds: tuple[float, float]) -> float:
    """AUC of ``scores`` for the rule's liked vs disliked held-out candidates (neutral ones left out)."""
    from ...rewards.preference import auc

    marks, _ = marks_from_measure(measure, by_class, None if by_class else thresholds)
    keep = torch.tensor([m != "neutral" for m in marks])
    liked = torch.tensor([m == "liked" for m in marks])
    if math.isclose(float(keep.sum()), 0.0):
        raise RuntimeError("no liked or disliked held-out candidates")
    return auc(scores[keep].double(), liked[keep])
