"""Field representations: signed distance + colour, queryable at arbitrary points.

``SDFGrid`` is what the embedded model decodes to: a dense grid over [-1, 1]^3 holding a
truncated signed distance (in units of ``truncation``) and sRGB colour, interpolated trilinearly.
Any other implicit model (e.g. Shap-E's field MLP) can be rendered by the same volume renderer by
offering ``sample`` with the same shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F


@dataclass
class SDFGrid:
    """A batch of fields: ``grid`` (B, 4, D, H, W) laid out (z, y, x); channel 0 = sdf / truncation."""

    grid: torch.Tensor
    truncation: float

    def __len__(self) -> int:
        return int(self.grid.shape[0])

    @property
    def device(self) -> torch.device:
        return self.grid.device

    @property
    def dtype(self) -> torch.dtype:
        return self.grid.dtype

    @cached_property
    def _lookup_volume(self) -> torch.Tensor:
        """(B, 7, D, H, W): the grid plus its central-difference gradient, built once per field."""
        padded = F.pad(self.grid[:, :1], (1, 1, 1, 1, 1, 1), mode="replicate")
        gx = padded[:, :, 1:-1, 1:-1, 2:] - padded[:, :, 1:-1, 1:-1, :-2]
        gy = padded[:, :, 1:-1, 2:, 1:-1] - padded[:, :, 1:-1, :-2, 1:-1]
        gz = padded[:, :, 2:, 1:-1, 1:-1] - padded[:, :, :-2, 1:-1, 1:-1]
        return torch.cat([self.grid, gx, gy, gz], 1)

    def sample(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """At points (B, N, 3): signed distance (B, N) in world units, sRGB colour (B, N, 3) and unit
        outward normals (B, N, 3) from the grid's central-difference gradient, in one lookup.
        Points outside the cube read the border values."""
        volume = self._lookup_volume
        g = points.view(points.shape[0], -1, 1, 1, 3).to(volume.dtype)
        out = F.grid_sample(volume, g, mode="bilinear", padding_mode="border", align_corners=True)
        out = out.view(volume.shape[0], volume.shape[1], -1)
        grad = out[:, 4:7].transpose(1, 2)
        normals = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return out[:, 0] * self.truncation, out[:, 1:4].transpose(1, 2), normals

    def sample_shared(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`sample` at points (N, 3) shared by every field of the batch (the same rays for all):
        the same values, computed with one sparse lookup for the whole batch
        (``engine.render.volume_lookup``; the renderer's fast path). Not differentiable in ``points``."""
        from ..render.volume_lookup import shared_trilinear

        out = shared_trilinear(self._lookup_volume, points)  # (B, 7, N), contiguous
        grad = out[:, 4:7]
        # x / max(|x|, 1e-8) as a sum of squares: torch's norm over a 3-wide axis is several times slower.
        normals = grad * (grad * grad).sum(1, keepdim=True).clamp_min(1e-16).rsqrt()
        # (B, N, 3) views of channels-first storage, which the volume renderer reads without a copy.
        return out[:, 0] * self.truncation, out[:, 1:4].transpose(1, 2), normals.transpose(1, 2)
