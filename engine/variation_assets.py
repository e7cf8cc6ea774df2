"""Variations of one asset as a generate job's assets (the sampling: engine/sampling/variations.py).

A *variation job* is a generate job of one prompt and one seed with ``variation_strength`` set: its
``count`` assets are variations ``variation_start .. variation_start + count - 1`` of that asset (or
of the variation ``variation_parent`` of it, a lineage ``[[index, strength], ...]``). Each is a
:class:`VariationAsset`, the pipeline's asset plus its lineage, which names its files
(engine/gallery_files.py, ``lineage_suffix``) so they never overwrite the seed's own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .gallery_files import CandidateError
from .pipeline import Asset


@dataclass
class VariationAsset(Asset):
    """A pipeline asset that is a variation: ``lineage`` ((index, strength), ...) from its seed's asset."""

    lineage: tuple = field(default=())


def check_variation_fields(params: dict, prompts, count: int, names: Callable[[str], str] = str) -> dict:
    """The variation fields of generate ``params`` checked: ``{"variation_strength": float | None,
    "variation_start": int, "variation_parent": lineage}``; a ValueError naming the field."""
    from .sampling.variations import MAX_INDEX, check_lineage, check_strength

    strength = params.get("variation_strength")
    if strength is None:
        for key in ("variation_start", "variation_parent"):
            if params.get(key) not in (None, 1, [], ()):
                raise CandidateError(f"{names(key)} needs {names('variation_strength')}")
        return {"variation_strength": None, "variation_start": 1, "variation_parent": ()}
    try:
        strength = check_strength(strength)
        parent = check_lineage(params.get("variation_parent") or [])
    except ValueError as exc:
        raise CandidateError(f"{names('variation_strength')}: {exc}") from None
    start = params.get("variation_start", 1)
    if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= MAX_INDEX - count:
        raise CandidateError(f"{names('variation_start')} must be an integer in 1..{MAX_INDEX - count}, got {start!r}")
    if len(prompts) != 1:
        raise CandidateError(f"variations are of one asset: give one prompt, not {len(prompts)}")
    return {"variation_strength": strength, "variation_start": start, "variation_parent": parent}


def generate_variations(model, prompt: str, seed: int, strength: float, count: int, sampler, batch_size: int = 8,
                        first_index: int = 1, parent=(), progress: Callable[[float, str], None] | None = None,
                        should_cancel: Callable[[], bool] | None = None, keep_splats: bool = False):
    """:func:`engine.pipeline.generate`'s result for ``count`` variations of (prompt, seed, ``parent``):
    the same assets and timings, each asset carrying its ``lineage``."""
    from .pipeline import generate_in_batches
    from .sampling.variations import sample_variations

    model.encode_prompts([prompt])  # validate before any work

    def sample_batch(start: int, n: int, step_progress):
        v = sample_variations(model, prompt, seed, strength, n, sampler, first_index + start, parent,
                              progress=step_progress, should_cancel=should_cancel)
        return v.latents, v.lineages

    return generate_in_batches(model, count, batch_size, sample_batch,
                               lambda lineage, mesh, z, g: VariationAsset(prompt, int(seed), mesh, z, g, lineage=lineage),
                               "variations", progress, keep_splats)


def variation_params(manifest_entry: str, strength, start: int = 1) -> dict:
    """The generate params (engine/generate/job.py ``GenerateJob``) of variations of the asset
    ``MANIFEST#NAME`` / ``MANIFEST#INDEX`` names: its prompt, seed, model, adapter and sampler settings
    from its manifest, with ``gallery`` on (a variation's latent is what a picks entry can fit on)."""
    from .gallery_files import resolve_manifest_entry
    from .sampling.variations import check_strength

    if strength is None:
        raise CandidateError("--variations-of needs --strength S (0: the asset itself, 1: an unrelated asset)")
    try:
        strength = check_strength(strength)
    except ValueError as exc:
        raise CandidateError(f"--strength: {exc}") from None
    entry = resolve_manifest_entry(manifest_entry)
    params = {"prompt": entry.prompt, "seed": entry.seed, "model": entry.model, "gallery": True,
              "variation_strength": strength, "variation_start": start,
              "variation_parent": [list(step) for step in entry.lineage]}
    params.update({k: entry.sampler[k] for k in ("steps", "guidance", "scheduler", "eta") if k in entry.sampler})
    if entry.model_path is not None:
        params["model_path"] = entry.model_path
    if entry.adapter is not None:
        params["adapter"] = entry.adapter["path"]
        params["adapter_weight"] = entry.adapter.get("weight", 1.0)
    return params
