"""What renderers take and give, shared by every renderer and every reward.

A model's ``decode`` returns a representation; :func:`engine.render.render` picks the renderer by
the representation's type (:class:`SignedDistanceField` -> the volume renderer,
:class:`GaussianSplats` -> the splat rasteriser). Rewards read a
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


@dataclass
class GaussianSplats:
    """A batch of B assets of N 3D Gaussians each, in the engine's world frame (Z up, world units,
    the asset inside [-1, 1]^3), with gsplat's conventions:

    ``means`` (B, N, 3) centres; ``quats`` (B, N, 4) rotations as (w, x, y, z), normalised by the
    rasteriser (they need not be unit here); ``scales`` (B, N, 3) standard deviations along the
    rotated axes, world units (not logs); ``opacities`` (B, N) in [0, 1]; ``colors`` (B, N, 3)
    sRGB in [0, 1]. All on one device in one dtype; differentiable in every field.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor

    def __post_init__(self) -> None:
        b, n = self.means.shape[:2]
        expected = {"means": (b, n, 3), "quats": (b, n, 4), "scales": (b, n, 3), "opacities": (b, n),
                    "colors": (b, n, 3)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"GaussianSplats.{name} must be {shape}, got {tuple(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def __getitem__(self, index) -> "GaussianSplats":
        """The assets ``index`` (an int keeps a batch of one, a slice or index tensor selects)."""
        idx = slice(index, index + 1) if isinstance(index, int) else index
        return GaussianSplats(self.means[idx], self.quats[idx], self.scales[idx], self.opacities[idx], self.colors[idx])

    def to(self, device=None, dtype=None) -> "GaussianSplats":
        return GaussianSplats(*(t.to(device=device, dtype=dtype) for t in
                                (self.means, self.quats, self.scales, self.opacities, self.colors)))
