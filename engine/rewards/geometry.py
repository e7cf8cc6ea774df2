"""Depth-normal consistency (DNC): a geometry reward with no network (docs/method.md).

The rendered depth is unprojected along each pixel's ray into 3D points; pseudo-normals are the
cross product of the points' central differences across the image; the reward is the mean cosine
between pseudo-normals and rendered normals over pixels whose alpha and whose neighbours' alpha
exceed ``alpha_threshold``. A surface whose shading normals agree with its geometry scores 1.

``detach_depth=True`` stops the gradient through the depth, so only the rendered normals are pushed
toward the depth's pseudo-normals (what the paper's official code does; docs/method.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..render.cameras import camera_rays
from ..render.types import RenderOutput
from .base import Reward


class DepthNormalConsistency(Reward):
    name = "dnc"
    channels = frozenset({"depth", "normal", "alpha"})

    def __init__(self, alpha_threshold: float = 0.5, detach_depth: bool = False):
        if not 0.0 <= alpha_threshold < 1.0:
            raise ValueError(f"alpha_threshold must be in [0, 1), got {alpha_threshold!r}")
        self.alpha_threshold = alpha_threshold
        self.detach_depth = bool(detach_depth)

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        depth = renders.depth[:, :, 0]  # (B, V, R, R) distance along the unit ray
        if self.detach_depth:
            depth = depth.detach()
        b, v, r, _ = depth.shape
        origins, dirs = camera_rays(renders.cameras.to(depth.device), r)  # (V, R, R, 3)
        points = origins.to(depth.dtype) + dirs.to(depth.dtype) * depth[..., None]  # (B, V, R, R, 3)
        du = points[:, :, 1:-1, 2:] - points[:, :, 1:-1, :-2]  # along columns (image right)
        dv = points[:, :, :-2, 1:-1] - points[:, :, 2:, 1:-1]  # along rows, pointing image-up
        pseudo = F.normalize(torch.linalg.cross(du, dv, dim=-1), dim=-1, eps=1e-8)
        normal = F.normalize(renders.normal.permute(0, 1, 3, 4, 2)[:, :, 1:-1, 1:-1], dim=-1, eps=1e-8)
        # Central differences straddle edges only where every neighbour is on the object.
        a = renders.alpha[:, :, 0] > self.alpha_threshold
        mask = a[:, :, 1:-1, 1:-1] & a[:, :, 1:-1, 2:] & a[:, :, 1:-1, :-2] & a[:, :, 2:, 1:-1] & a[:, :, :-2, 1:-1]
        cosine = (pseudo * normal).sum(-1)
        m = mask.to(cosine.dtype)
        return (cosine * m).sum((-1, -2)) / m.sum((-1, -2)).clamp_min(1.0)
