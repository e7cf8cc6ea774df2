"""Text -> 3D assets: sampling, decoding and mesh extraction in batches, with timings.

The computing inside the generate job (engine/generate/job.py ``run_generate``, which every entry
point runs and which owns validation, names and files); it knows nothing about files or bpy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .geometry.mesh import Mesh
from .models.protocol import DiffusionModel
from .render.types import GaussianSplats
from .sampling.sampler import SamplerConfig, sample


@dataclass
class Asset:
    prompt: str
    seed: int
    mesh: Mesh
    latent: torch.Tensor  # (*latent_shape), the clean latent x_0
    splats: GaussianSplats | None = None  # this asset's Gaussians (a batch of 1, CPU), when kept


@dataclass
class Timings:
    sample_s: float = 0.0
    mesh_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.sample_s + self.mesh_s


@dataclass
class GenerationResult:
    assets: list[Asset]
    timings: Timings = field(default_factory=Timings)


def generate(
    model: DiffusionModel,
    prompts: list[str],
    seeds: list[int],
    sampler: SamplerConfig = SamplerConfig(),
    batch_size: int = 8,
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    keep_splats: bool = False,
) -> GenerationResult:
    """One asset per (prompt, seed). ``progress(fraction, message)`` is called along the way.

    ``keep_splats``: also keep each asset's Gaussians (``Asset.splats``, on the CPU) for a model whose
    ``decode`` returns :class:`GaussianSplats`; the latents are decoded once and meshed from that
    same representation (``model.extract_meshes``). A ValueError for a model that decodes to
    anything else (callers check ``ModelSpec.representation`` before loading it).
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    model.encode_prompts(sorted(set(prompts)))  # validate every prompt before any work

    def sample_batch(start: int, n: int, step_progress) -> tuple[torch.Tensor, list]:
        p, s = prompts[start:start + n], seeds[start:start + n]
        return sample(model, p, s, sampler, progress=step_progress, should_cancel=should_cancel).latents, list(zip(p, s))

    return generate_in_batches(model, len(prompts), batch_size, sample_batch,
                               lambda tag, mesh, z, g: Asset(tag[0], tag[1], mesh, z, g), "sampling", progress, keep_splats)


def generate_in_batches(model: DiffusionModel, n: int, batch_size: int,
                        sample_batch: Callable[[int, int, Callable[[int, int], None]], tuple[torch.Tensor, list]],
                        make_asset: Callable, label: str, progress: Callable[[float, str], None] | None = None,
                        keep_splats: bool = False) -> GenerationResult:
    """``n`` assets, ``batch_size`` at a time: ``sample_batch(start, count, step_progress)`` gives a
    batch's clean latents (count, *latent_shape) and one tag per asset; each is meshed (and its
    Gaussians kept with ``keep_splats``) and becomes ``make_asset(tag, mesh, latent, splats)``.
    Progress: sampling is the first 80% of each batch, ``label`` names it."""
    result = GenerationResult([])
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)

        def step_progress(i: int, total: int) -> None:
            if progress is not None:
                done = start + count * i / total * 0.8
                progress(done / n, f"{label} {start + 1}-{start + count} of {n}: step {i}/{total}")

        t0 = time.perf_counter()
        latents, tags = sample_batch(start, count, step_progress)
        t1 = time.perf_counter()
        if keep_splats:
            meshes, splats = _meshes_and_splats(model, latents)
        else:
            meshes, splats = model.latents_to_meshes(latents), [None] * len(latents)
        t2 = time.perf_counter()
        result.timings.sample_s += t1 - t0
        result.timings.mesh_s += t2 - t1
        result.assets += [make_asset(tag, m, z, g) for tag, m, z, g in zip(tags, meshes, latents, splats)]
        if progress is not None:
            progress((start + count) / n, f"meshed {start + count} of {n}")
    return result


def _meshes_and_splats(model: DiffusionModel, latents: torch.Tensor) -> tuple[list[Mesh], list[GaussianSplats]]:
    """Decode once; mesh the decoded Gaussians and keep them, one asset each, on the CPU."""
    with torch.no_grad():
        representation = model.decode(latents)
        if not isinstance(representation, GaussianSplats):
            raise ValueError(f"model {model.name!r} decodes to {type(representation).__name__}, not Gaussian splats")
        meshes = model.extract_meshes(representation)
        splats = representation.to("cpu", torch.float32)
    return meshes, [splats[i] for i in range(len(splats))]
