"""The one conversion from DiffSplat's world to the engine's.

DiffSplat's world is Y up; its first view looks from +Z (azimuth 0), its second from +X (azimuth 90),
from 1.4 units with a 39.6 degree field of view. The engine's world is Z up with orbit azimuth 0 on
+X and 90 on +Y (engine/render/cameras.py), and its default cameras look from 3 units with 40 degrees.
So a point ``p = (x, y, z)`` of DiffSplat's becomes ``world_scale * (z, x, y)``:

* the axis permutation (x, y, z) -> (z, x, y) is a proper rotation (120 degrees about (1, 1, 1)),
  so handedness is kept and DiffSplat's view at azimuth ``a`` is the engine's view at azimuth ``a``;
* ``world_scale`` (2 by default) maps DiffSplat's framing onto the engine's: an object that fills
  DiffSplat's views (half-width 1.4 tan 19.8 deg = 0.50) fills the engine's default ones
  (3 tan 20 deg = 1.09 at scale 2.2) about as much, and stays inside [-1, 1]^3.

A Gaussian's rotation becomes ``P R``, its quaternion ``q_P * q`` with ``q_P = (0.5, 0.5, 0.5, 0.5)``
(w, x, y, z), the rotation P as a quaternion; its scales are multiplied by ``world_scale``.
"""
from __future__ import annotations

import torch

from ...render.splats import quaternion_multiply

# (w, x, y, z) of the rotation taking DiffSplat axes to engine axes: e_x -> e_y, e_y -> e_z, e_z -> e_x.
_AXES_QUATERNION = (0.5, 0.5, 0.5, 0.5)


def points_to_engine(points: torch.Tensor, world_scale: float) -> torch.Tensor:
    """DiffSplat points (..., 3) -> engine points (..., 3)."""
    return world_scale * points[..., [2, 0, 1]]


def gaussians_to_engine(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, world_scale: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Means (..., 3), quaternions (..., 4, w x y z) and scales (..., 3) of DiffSplat Gaussians, in
    DiffSplat's frame and units -> the same Gaussians in the engine's. The quaternions' norms are kept."""
    axes = torch.tensor(_AXES_QUATERNION, dtype=quats.dtype, device=quats.device)
    return points_to_engine(means, world_scale), quaternion_multiply(axes, quats), world_scale * scales
