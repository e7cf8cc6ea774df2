"""DiffSplat's own numbers (not in any diffusers config), with the official defaults.

A converted folder may carry ``diffsplat.json`` overriding any of them (``scripts/convert_diffsplat.py``
writes one); unknown keys and ill-typed or non-finite values are refused, so a typo cannot silently
fall back to a default.

Where the official code differs from what its own settings say, the default reproduces what it
computes (chenguolin/DiffSplat, src/infer_gsdiff_pas.py, read 2026-12):

* ``plucker_bug``: its ``plucker_ray(..., bug=True)`` takes pixel ``j`` to ``j / (W - 1)`` and then
  subtracts the principal point after adding half a pixel, so the rays span one quadrant of the
  image instead of the whole frustum. The transformer was trained on those rays.
* ``rescale_betas_zero_snr``: it sets ``scheduler.config.rescale_betas_zero_snr = True`` after the
  scheduler is built; diffusers reads that flag only in the constructor, so the betas stay PixArt's
  plain linear ones (alpha_bar at t=999 is 4.0e-5, not 0). Trailing spacing, read at
  ``set_timesteps``, does take effect. tests/engine/models/diffsplat/test_schedulers.py shows both
  on the installed diffusers.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

SETTINGS_FILE = "diffsplat.json"


@dataclass(frozen=True)
class DiffSplatSettings:
    """``azimuths``/``elevation`` (degrees, the official orbit: elevation above the ground plane),
    ``radius`` (DiffSplat world units) and ``focal`` (focal length / image size, both axes; principal
    point at the centre) of the V generated views. ``plucker_resolution``: pixels a side the rays
    are computed at before being resized to the latent (None: the GSVAE's splatter-image size, 256
    for the release). ``scaling_factor``/``shift_factor``: the GSVAE's latent normalisation (None:
    its ``vae/config.json``, 0.13025 and none for the release). ``scale_min``/``scale_max``: the
    Gaussian scale range, DiffSplat units. ``opacity_threshold``: Gaussians at or below it are
    dropped (their opacity zeroed, as the official renderer does). ``world_scale``: engine units per
    DiffSplat unit (see frames.py). ``mesh_*``: what meshes are extracted with."""

    azimuths: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    elevation: float = 10.0
    radius: float = 1.4
    focal: float = 1422.222 / 1024
    plucker_resolution: int | None = None
    plucker_bug: bool = True
    scaling_factor: float | None = None
    shift_factor: float | None = None
    scale_min: float = 0.0005
    scale_max: float = 0.02
    opacity_threshold: float = 0.0
    timestep_spacing: str = "trailing"
    rescale_betas_zero_snr: bool = False
    default_guidance: float = 4.5
    max_token_length: int = 300
    prompt_cache_size: int = 16
    decode_chunk: int = 4
    world_scale: float = 2.0
    mesh_resolution: int = 128

    def __post_init__(self) -> None:
        if not self.azimuths:
            raise ValueError("azimuths must name at least one view")
        numbers = [*self.azimuths, self.elevation, self.radius, self.focal, self.scale_min, self.scale_max,
                   self.opacity_threshold, self.default_guidance, self.world_scale]
        numbers += [v for v in (self.scaling_factor, self.shift_factor) if v is not None]
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError("DiffSplat settings must be finite numbers")
        if self.radius <= 0 or self.focal <= 0 or self.world_scale <= 0 or not 0 < self.scale_min <= self.scale_max:
            raise ValueError("radius, focal, world_scale and 0 < scale_min <= scale_max must be positive")
        if self.scaling_factor is not None and self.scaling_factor == 0:
            raise ValueError("scaling_factor must not be 0")
        if not 0.0 <= self.opacity_threshold < 1.0 or self.default_guidance < 0:
            raise ValueError("opacity_threshold must be in [0, 1) and default_guidance >= 0")
        if self.timestep_spacing not in ("trailing", "leading", "linspace"):
            raise ValueError("timestep_spacing must be trailing, leading or linspace")
        for name in ("max_token_length", "prompt_cache_size", "decode_chunk", "mesh_resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.plucker_resolution is not None and self.plucker_resolution < 2:
            raise ValueError("plucker_resolution must be >= 2")

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)}


_TYPES = {"azimuths": list, "plucker_bug": bool, "rescale_betas_zero_snr": bool, "timestep_spacing": str,
          "plucker_resolution": int, "max_token_length": int, "prompt_cache_size": int, "decode_chunk": int,
          "mesh_resolution": int}


def settings_from_dict(values: dict) -> DiffSplatSettings:
    """Settings from a JSON object: official defaults for the keys it leaves out; a ValueError for
    unknown keys, wrong types or bad values."""
    if not isinstance(values, dict):
        raise ValueError(f"{SETTINGS_FILE} must hold a JSON object")
    known = {f.name for f in dataclasses.fields(DiffSplatSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown DiffSplat settings {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    checked = {}
    for key, value in values.items():
        expected = _TYPES.get(key, float)
        nullable = key in ("plucker_resolution", "scaling_factor", "shift_factor")
        if value is None and nullable:
            checked[key] = None
        elif expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            checked[key] = float(value)
        elif expected is int and isinstance(value, int) and not isinstance(value, bool):
            checked[key] = value
        elif expected is list and isinstance(value, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            checked[key] = tuple(float(v) for v in value)
        elif expected in (bool, str) and isinstance(value, expected):
            checked[key] = value
        else:
            raise ValueError(f"DiffSplat setting {key} must be {expected.__name__}, got {value!r}")
    return DiffSplatSettings(**checked)


def read_settings(folder: Path) -> DiffSplatSettings:
    """The folder's ``diffsplat.json`` over the official defaults (the defaults alone without one)."""
    path = Path(folder) / SETTINGS_FILE
    if not path.exists():
        return DiffSplatSettings()

    def refuse(constant: str):
        raise ValueError(f"{constant} is not a JSON number")

    values = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    return settings_from_dict(values)
