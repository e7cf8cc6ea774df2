"""DiffSplat's cameras, in DiffSplat's own frame: Y up, OpenCV camera axes (x right, y down, z forward).

These are the geometry the checkpoint was trained with, reproduced from the official code
(chenguolin/DiffSplat src/utils/geo_util.py and src/infer_gsdiff_pas.py, read 2026-12, not copied):

* orbit: a camera at elevation ``el`` above the ground plane and azimuth ``az`` sits at
  ``radius * (cos(el) sin(az), sin(el), cos(el) cos(az))`` (azimuth 0 on +Z, 90 on +X) and looks at
  the origin with +Y as the up hint; the OpenGL look-at frame becomes OpenCV by negating its y and z
  axes;
* intrinsics normalised by the image size: focal ``f`` on both axes, principal point (0.5, 0.5);
* Plücker rays ``(o x d, d)`` with unit ``d``, per pixel, channels first;
* unprojection of a splatter image's depth (camera-space z) through pixel ``(i, j)`` at
  ``(j / (W - 1), i / (H - 1))`` in normalised image coordinates.

Everything here stays in DiffSplat's frame; frames.py is the one place that moves to the engine's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .settings import DiffSplatSettings


def orbit_camera_to_world(settings: DiffSplatSettings, dtype: torch.dtype = torch.float64,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Camera-to-world matrices (V, 4, 4) of the settings' views: OpenCV camera axes, DiffSplat world."""
    az = torch.tensor(settings.azimuths, dtype=torch.float64).deg2rad()
    el = torch.full_like(az, math.radians(settings.elevation))
    position = settings.radius * torch.stack([el.cos() * az.sin(), el.sin(), el.cos() * az.cos()], -1)
    back = position / position.norm(dim=-1, keepdim=True)  # OpenGL +z: from the target to the camera
    up_hint = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(back)
    right = torch.linalg.cross(up_hint, back)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(back, right)
    c2w = torch.zeros(len(az), 4, 4, dtype=torch.float64)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = right, -up, -back  # OpenGL -> OpenCV: y, z negated
    c2w[:, :3, 3] = position
    c2w[:, 3, 3] = 1.0
    return c2w.to(device=device, dtype=dtype)


def plucker_rays(c2w: torch.Tensor, focal: float, resolution: int, bug: bool = True) -> torch.Tensor:
    """Plücker coordinates (V, 6, R, R) of every pixel's ray: ``cross(origin, direction)`` then the
    unit ``direction``, world frame of ``c2w`` (V, 4, 4). ``bug=True``: the official code's pixel
    coordinates ``j / (R - 1) + 0.5 - 0.5`` (one image quadrant, the checkpoint's training input);
    ``bug=False``: pixel centres ``(j + 0.5) / R - 0.5``."""
    index = torch.arange(resolution, dtype=c2w.dtype, device=c2w.device)
    coord = index / (resolution - 1) if bug else (index + 0.5) / resolution - 0.5
    v, u = torch.meshgrid(coord, coord, indexing="ij")  # row, column
    local = torch.stack([u / focal, v / focal, torch.ones_like(u)], -1)  # (R, R, 3) camera frame
    direction = torch.einsum("vij,hwj->vhwi", c2w[:, :3, :3], local)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    origin = c2w[:, None, None, :3, 3].expand_as(direction)
    return torch.cat([torch.linalg.cross(origin, direction), direction], -1).permute(0, 3, 1, 2)


def latent_plucker(c2w: torch.Tensor, focal: float, resolution: int, latent_size: tuple[int, int],
                   bug: bool = True) -> torch.Tensor:
    """The rays at ``resolution`` resized to the latent grid (V, 6, h, w) as the official pipeline
    resizes them (bilinear, corners not aligned, no antialiasing)."""
    rays = plucker_rays(c2w, focal, resolution, bug)
    return F.interpolate(rays, size=tuple(latent_size), mode="bilinear", align_corners=False)


def unproject(depth: torch.Tensor, c2w: torch.Tensor, focal: float) -> torch.Tensor:
    """World points (B, V, H, W, 3) of camera-space depths ``depth`` (B, V, H, W) seen by ``c2w``
    (V, 4, 4); differentiable in ``depth``."""
    _, _, h, w = depth.shape
    rows = torch.arange(h, dtype=depth.dtype, device=depth.device) / (h - 1)
    cols = torch.arange(w, dtype=depth.dtype, device=depth.device) / (w - 1)
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    local = torch.stack([(u - 0.5) / focal, (v - 0.5) / focal, torch.ones_like(u)], -1)  # per unit depth
    points = local * depth[..., None]  # (B, V, H, W, 3) camera frame
    rotation, position = c2w[:, :3, :3].to(depth.dtype), c2w[:, :3, 3].to(depth.dtype)
    return torch.einsum("vij,bvhwj->bvhwi", rotation, points) + position[None, :, None, None, :]
