"""Orbit cameras: the one camera convention shared by the differentiable renderer and Cycles.

World is Z up (Blender). A camera sits at
``radius * (cos(el) cos(az), cos(el) sin(az), sin(el))`` looking at the origin, with the image's
up direction as close to +Z as possible. Azimuth is measured from +X towards +Y, elevation above the
XY plane, both in degrees; ``fov`` is the full field of view of the square image in degrees.
Pixel (row i, column j) of an ``R x R`` image looks through its centre; row 0 is the top of the image.

Camera-to-world matrices follow Blender's camera frame: the camera looks down its local -Z axis and
its local +Y is image-up, so a matrix from :func:`camera_to_world` can be assigned to a Blender
camera's ``matrix_world`` unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Cameras:
    """A batch of V orbit cameras; every field is a float tensor of shape (V,) in degrees/world units."""

    azimuth: torch.Tensor
    elevation: torch.Tensor
    radius: torch.Tensor
    fov: torch.Tensor

    def __len__(self) -> int:
        return int(self.azimuth.shape[0])

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(*(t.to(device) for t in (self.azimuth, self.elevation, self.radius, self.fov)))

    def __getitem__(self, index) -> "Cameras":
        idx = index if isinstance(index, (slice, torch.Tensor)) else slice(index, index + 1)
        return Cameras(self.azimuth[idx], self.elevation[idx], self.radius[idx], self.fov[idx])


@dataclass(frozen=True)
class OrbitConfig:
    """How to place views around the object (defaults: the paper's 4 orthogonal azimuths)."""

    views: int = 4
    elevation: float = 20.0
    radius: float = 3.0
    fov: float = 40.0
    azimuth_offset: float = 0.0
    random_azimuth: bool = False  # one shared random offset per call, in [0, 360 / views)
    elevation_jitter: float = 0.0  # uniform +- degrees per view


def orbit_cameras(config: OrbitConfig = OrbitConfig(), generator: torch.Generator | None = None) -> Cameras:
    """Evenly spaced azimuths with optional random offset and elevation jitter."""
    if config.views < 1:
        raise ValueError("views must be >= 1")
    if not 0.0 < config.fov < 180.0:
        raise ValueError("fov must be in (0, 180) degrees")
    if config.radius <= math.sqrt(3.0):
        raise ValueError("radius must put the camera outside the [-1, 1]^3 scene cube (> 1.733)")
    step = 360.0 / config.views
    offset = config.azimuth_offset
    if config.random_azimuth:
        offset += float(torch.rand((), generator=generator)) * step
    azimuth = torch.arange(config.views, dtype=torch.float32) * step + offset
    elevation = torch.full((config.views,), float(config.elevation))
    if config.elevation_jitter > 0:
        elevation = elevation + (torch.rand(config.views, generator=generator) * 2 - 1) * config.elevation_jitter
    return Cameras(
        azimuth=azimuth,
        elevation=elevation,
        radius=torch.full((config.views,), float(config.radius)),
        fov=torch.full((config.views,), float(config.fov)),
    )


def camera_positions(cams: Cameras) -> torch.Tensor:
    """World positions (V, 3)."""
    az, el = torch.deg2rad(cams.azimuth), torch.deg2rad(cams.elevation)
    return cams.radius[:, None] * torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)


def cameras_from_positions(positions: torch.Tensor, fov: float) -> Cameras:
    """Cameras at world ``positions`` (V, 3), looking at the origin like every orbit camera, with a
    full field of view of ``fov`` degrees; the inverse of :func:`camera_positions` (in the tensor's
    dtype). A camera straight above or below the origin gets azimuth 0.

    Raises:
        ValueError: if ``positions`` is not (V, 3), holds a non-finite number or a point at the origin."""
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be (V, 3), got {tuple(positions.shape)}")
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("positions must be finite")
    radius = positions.norm(dim=-1)
    if bool((radius == 0).any()):
        raise ValueError("a camera at the origin cannot look at it")
    x, y, z = positions.unbind(-1)
    azimuth = torch.rad2deg(torch.atan2(y, x))
    elevation = torch.rad2deg(torch.atan2(z, torch.hypot(x, y)))
    return Cameras(azimuth, elevation, radius, torch.full_like(radius, float(fov)))


def camera_to_world(cams: Cameras) -> torch.Tensor:
    """Blender-convention camera-to-world matrices (V, 4, 4): columns right, up, back, position."""
    pos = camera_positions(cams)
    forward = -pos / pos.norm(dim=-1, keepdim=True)
    world_up = torch.tensor([0.0, 0.0, 1.0], dtype=pos.dtype, device=pos.device).expand_as(forward)
    right = torch.linalg.cross(forward, world_up)
    # Looking straight up or down: any horizontal right vector will do.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], dtype=pos.dtype, device=pos.device), right)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(right, forward)
    mat = torch.zeros(len(cams), 4, 4, dtype=pos.dtype, device=pos.device)
    mat[:, :3, 0], mat[:, :3, 1], mat[:, :3, 2], mat[:, :3, 3] = right, up, -forward, pos
    mat[:, 3, 3] = 1.0
    return mat


def camera_rays(cams: Cameras, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions, each (V, R, R, 3), for square images of ``resolution`` pixels."""
    c2w = camera_to_world(cams)
    half = torch.tan(torch.deg2rad(cams.fov) / 2)  # (V,)
    centres = (torch.arange(resolution, dtype=c2w.dtype, device=c2w.device) + 0.5) / resolution * 2 - 1
    ys, xs = torch.meshgrid(-centres, centres, indexing="ij")  # row 0 is the top
    local = torch.stack([xs, ys, -torch.ones_like(xs)], -1)  # (R, R, 3) in camera frame
    local = local[None] * torch.stack([half, half, torch.ones_like(half)], -1)[:, None, None, :]
    dirs = torch.einsum("vij,vhwj->vhwi", c2w[:, :3, :3], local)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, None, :3, 3].expand_as(dirs)
    return origins, dirs
