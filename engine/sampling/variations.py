"""Variations of one asset: the same prompt, sampled from noise close to the asset's own.

An asset is fully determined by its prompt, its seed and the sampler settings: the sampler draws
every noise tensor of the run (the initial latent x_T, then one per stochastic transition) from a
generator seeded with the asset's seed (engine/sampling/sampler.py). A variation of strength ``s``
replaces each of those draws ``z`` by

    z' = sqrt(1 - s^2) * z + s * e,        e ~ N(0, I) from the variation's own generator,

which is again exactly N(0, I) (a sum of independent Gaussians with variances (1 - s^2) + s^2 = 1),
correlated with the original draw by sqrt(1 - s^2). So:

* every variation is an exact sample of the model (the same distribution generate, the aligner
  and the preference reward see), whatever ``s``; nothing is pushed off the noise distribution;
* ``s = 0`` gives the original asset exactly (the same noise, bit for bit; the same latent bit for
  bit in a batch of the same size, else to float rounding, ~1e-5, as any re-sampled asset), ``s = 1`` an
  independent sample of the prompt, and in between the asset moves away smoothly on average;
* it works with every scheduler alike (DDIM, DDPM, SDE-DPM-Solver++, Heun), since only the noise
  changes, and needs only (prompt, seed, settings), not the original's latent.

Why not partial re-noising (SDEdit: noise the original's clean latent to a level t(s) and sample
back from there)? It needs the clean latent kept on disk, a scheduler that can start mid-schedule
(the multistep and Heun solvers keep history), and its variations are samples of the model only
approximately (the re-noised latent is the forward process's, not the sampler's, marginal). With a
stochastic sampler, perturbing only x_T would not do either: the per-step noise would still be the
original's, and even ``s = 1`` would stay close to the original. Hence all draws are perturbed.

Variation ``k`` (1, 2, ...) of a seed draws ``e`` from a generator seeded with
:func:`variation_seed` (seed, (k,)), so a variation is reproducible from (prompt, seed, k, s,
settings). A variation of a variation perturbs again: its *lineage* ``((k1, s1), (k2, s2))`` applies
``z -> sqrt(1 - s^2) z + s e`` once per step (each step's ``e`` seeded by the indices so far), which
keeps the draws standard normal at every step.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..models.protocol import DiffusionModel
from .sampler import SamplerConfig, sample

MAX_VARIATIONS = 256  # per call
MAX_INDEX = 10**9
MAX_LINEAGE = 32  # variations of variations, deep


def variation_seed(seed: int, path: tuple[int, ...]) -> int:
    """The seed (0 .. 2**63 - 1) of the perturbation noise of the variation reached from ``seed`` by
    the variation indices ``path`` (``(3,)``: variation 3; ``(3, 1)``: variation 1 of variation 3):
    stable across platforms and Python versions (SHA-256, not ``hash``)."""
    text = f"nabla-variation:{int(seed)}:{'.'.join(str(int(k)) for k in path)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


Lineage = tuple[tuple[int, float], ...]  # ((variation index, strength), ...) from the seed's own asset


def check_lineage(lineage) -> Lineage:
    """``lineage`` as a tuple of (index >= 1, strength in [0, 1]) pairs; ValueError otherwise."""
    if not isinstance(lineage, (list, tuple)) or len(lineage) > MAX_LINEAGE:
        raise ValueError(f"a variation lineage must be a list of at most {MAX_LINEAGE} [index, strength] pairs, got {lineage!r}")
    out = []
    for step in lineage:
        if not isinstance(step, (list, tuple)) or len(step) != 2:
            raise ValueError(f"a variation lineage step must be [index, strength], got {step!r}")
        index, strength = step
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= MAX_INDEX:
            raise ValueError(f"a variation index must be an integer in 1..{MAX_INDEX}, got {index!r}")
        out.append((index, check_strength(strength)))
    return tuple(out)


def check_strength(strength) -> float:
    """``strength`` as a float in [0, 1]; ValueError otherwise (NaN and infinity included)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ValueError(f"variation strength must be a finite number in [0, 1], got {strength!r}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"variation strength must be in [0, 1], got {strength}")
    return float(strength)


class PerturbedNoise:
    """A ``noise`` callable for :func:`engine.sampling.sampler.sample`: row ``i`` is the draw of
    ``generators[i]`` perturbed by each step of ``lineages[i]`` in turn,
    ``z -> sqrt(1 - s^2) * z + s * e`` (``e`` from that step's own generator, :func:`variation_seed`).

    ``seed``: the seed all rows share (the original asset's). Each call draws the next tensor of every
    sequence, so the sampler's x_T and every transition's noise are perturbed alike.
    """

    def __init__(self, seed: int, lineages: list[Lineage]):
        self.steps = []  # per row: [(keep, strength, generator)]
        for lineage in lineages:
            lineage = check_lineage(lineage)
            path, row = (), []
            for index, strength in lineage:
                path = path + (index,)
                row.append((math.sqrt(1.0 - strength**2), strength, torch.Generator().manual_seed(variation_seed(seed, path))))
            self.steps.append(row)

    def __call__(self, generators: list[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor:
        if len(generators) != len(self.steps):
            raise ValueError(f"{len(generators)} samples but {len(self.steps)} variation lineages")
        rows = []
        for g, row in zip(generators, self.steps):
            z = torch.randn(shape, generator=g)
            for keep, strength, h in row:
                e = torch.randn(shape, generator=h)  # drawn even at s = 0: the sequences stay aligned
                z = z if strength == 0.0 else keep * z + strength * e
            rows.append(z)
        return torch.stack(rows).to(device)


@dataclass
class Variations:
    """``latents`` (count, *latent_shape): clean latents x_0 of the variations of (prompt, seed) whose
    lineages are ``lineages`` (each the parent's lineage plus (index, strength))."""

    prompt: str
    seed: int
    lineages: list[Lineage]
    latents: torch.Tensor


def sample_variations(model: DiffusionModel, prompt: str, seed: int, strength: float, count: int,
                      sampler: SamplerConfig = SamplerConfig(), first_index: int = 1, parent: Lineage = (),
                      progress: Callable[[int, int], None] | None = None,
                      should_cancel: Callable[[], bool] | None = None) -> Variations:
    """Variations ``first_index .. first_index + count - 1`` of the asset (prompt, seed, ``parent``
    lineage; () for the seed's own asset) sampled with ``sampler``: its noise perturbed once more with
    ``strength`` in [0, 1] (module docstring). ``sampler`` must be the original's settings for
    strength 0 to give the original back. One batch: callers split large counts."""
    strength = check_strength(strength)
    parent = check_lineage(parent)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_VARIATIONS:
        raise ValueError(f"variation count must be an integer in 1..{MAX_VARIATIONS}, got {count!r}")
    if isinstance(first_index, bool) or not isinstance(first_index, int) or not 1 <= first_index <= MAX_INDEX - count:
        raise ValueError(f"first variation index must be an integer in 1..{MAX_INDEX - count}, got {first_index!r}")
    lineages = [parent + ((k, strength),) for k in range(first_index, first_index + count)]
    noise = PerturbedNoise(int(seed), lineages)
    result = sample(model, [prompt] * count, [int(seed)] * count, sampler, progress=progress,
                    should_cancel=should_cancel, noise=noise)
    return Variations(prompt, int(seed), lineages, result.latents)
