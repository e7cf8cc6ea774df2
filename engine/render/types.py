"""What renderers take and give, shared by every renderer and every reward.

A model's ``decode`` returns a representation; :func:`engine.render.render` picks the renderer by
the representation's type (:class:`SignedDistanceField` -> the volume renderer). Rewards read a
:class:`RenderOutput` and declare which of its channels they need (``Reward.channels``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .cameras import Cameras


@dataclass(frozen=True)
class RenderConfig:
    """What every renderer is asked for: square images of ``resolution`` pixels over ``background``
    (an sRGB display colour)."""

    resolution: int = 64
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class RenderOutput:
    """Images (B, V, C, R, R): ``rgb`` shaded and composited over the background (sRGB, [0, 1]);
    ``albedo`` unshaded colour premultiplied by ``alpha`` (coverage, [0, 1]); ``depth`` distance
    along the unit ray (0 off the asset); ``normal`` world-space unit normals (0 off the asset)."""

    rgb: torch.Tensor
    albedo: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor
    cameras: Cameras


@runtime_checkable
class SignedDistanceField(Protocol):
    """A batch of implicit surfaces queryable at points: what the volume renderer draws.

    ``sample(points (B, N, 3))`` returns the signed distance (B, N) in world units (negative inside),
    the sRGB colour (B, N, 3) and unit outward normals (B, N, 3). ``device`` and ``dtype`` say where
    and in what precision the field computes: renderers build their rays there.
    """

    device: torch.device
    dtype: torch.dtype

    def __len__(self) -> int: ...

    def sample(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
