"""Procedural training data for the embedded model: coloured primitives as signed distance fields.

World frame: right-handed, Z up (Blender's), objects centred at the origin inside the cube
[-1, 1]^3 (bounding-sphere radius at most 0.9). Lengths are in the same units as that cube.

Each sample is a :class:`ShapeSpec`: a family from :data:`grammar.SHAPES`, a colour, family
dimensions drawn from ranges that depend on the size word, a random yaw and a tilt of up to 15
degrees. Its SDF is analytic (exact for box, sphere, cylinder, cone, torus; for the pyramid the
max of plane distances, exact inside and on the surface, a lower bound outside near edges).

Volumes are laid out as ``(C, D, H, W) = (C, z, y, x)`` so that ``torch.nn.functional.grid_sample``
with a grid of ``(x, y, z)`` coordinates and ``align_corners=True`` reads them directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .grammar import AXIAL_SHAPES, COLOURS, SHAPES, Prompt

TRUNCATION = 0.2  # world units; the stored field is clamp(sdf / TRUNCATION, -1, 1)

# Bounding-sphere radius ranges per size word.
_RADIUS = {None: (0.55, 0.85), "small": (0.42, 0.55), "large": (0.78, 0.9), "tall": (0.6, 0.88), "flat": (0.6, 0.88)}
# half-height / radius ratio of axial shapes per size word.
_ASPECT = {None: (0.6, 1.4), "small": (0.6, 1.4), "large": (0.6, 1.4), "tall": (1.7, 2.5), "flat": (0.25, 0.45)}
_MAX_TILT = math.radians(15.0)


@dataclass(frozen=True)
class ShapeSpec:
    """One procedural object. ``dims`` is family-specific (see :func:`sdf_local`)."""

    shape: str
    colour: str
    rgb: tuple[float, float, float]
    dims: tuple[float, ...]
    rotation: tuple[tuple[float, ...], ...]  # 3x3, local -> world
    size: str | None = None

    @property
    def prompt(self) -> Prompt:
        return Prompt(shape=self.shape, colour=self.colour, size=self.size)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _rotation(g: torch.Generator) -> torch.Tensor:
    yaw = _uniform(g, 0.0, 2 * math.pi)
    tilt = _uniform(g, 0.0, _MAX_TILT)
    axis_angle = _uniform(g, 0.0, 2 * math.pi)
    c, s = math.cos(yaw), math.sin(yaw)
    r_yaw = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    # Rodrigues rotation about a horizontal axis.
    k = torch.tensor([math.cos(axis_angle), math.sin(axis_angle), 0.0])
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    r_tilt = torch.eye(3) + math.sin(tilt) * kx + (1 - math.cos(tilt)) * (kx @ kx)
    return r_tilt @ r_yaw


def sample_spec(g: torch.Generator, prompt: Prompt | None = None) -> ShapeSpec:
    """Draw one object; unspecified prompt slots are drawn uniformly (size: none half the time)."""
    shape = prompt.shape if prompt and prompt.shape else SHAPES[int(torch.randint(len(SHAPES), (), generator=g))]
    names = list(COLOURS)
    colour = prompt.colour if prompt and prompt.colour else names[int(torch.randint(len(names), (), generator=g))]
    if prompt is not None and prompt.size is not None:
        size = prompt.size
    elif prompt is not None and prompt.colour is not None:
        size = None
    else:
        options = ["small", "large"] + (["tall", "flat"] if shape in AXIAL_SHAPES else [])
        size = None if float(torch.rand((), generator=g)) < 0.5 else options[int(torch.randint(len(options), (), generator=g))]
    radius = _uniform(g, *_RADIUS[size])
    aspect = _uniform(g, *_ASPECT[size])
    if shape == "cube":
        a = radius / math.sqrt(3.0)
        dims = tuple(a * _uniform(g, 0.88, 1.0) for _ in range(3))
    elif shape == "sphere":
        dims = (0.8 * radius,)
    elif shape in ("cylinder", "cone"):
        r = radius / math.sqrt(1 + aspect**2)
        dims = (r, aspect * r)
    elif shape == "pyramid":
        b = radius / math.sqrt(2 + aspect**2)
        dims = (b, aspect * b)
    elif shape == "torus":
        ratio = _uniform(g, 0.25, 0.42)
        major = radius / (1 + ratio)
        dims = (major, ratio * major)
    else:  # pragma: no cover - SHAPES and this table are edited together
        raise ValueError(shape)
    base = torch.tensor(COLOURS[colour])
    rgb = (base + (torch.rand(3, generator=g) - 0.5) * 0.1).clamp(0, 1)
    rot = _rotation(g)
    return ShapeSpec(
        shape=shape,
        colour=colour,
        rgb=tuple(float(v) for v in rgb),
        dims=tuple(float(d) for d in dims),
        rotation=tuple(tuple(float(v) for v in row) for row in rot),
        size=size,
    )


def sdf_local(shape: str, dims: tuple[float, ...], p: torch.Tensor) -> torch.Tensor:
    """Signed distance of points ``p`` (N, 3), in the shape's own frame (Z up), to the surface."""
    x, y, z = p.unbind(-1)
    if shape == "cube":
        q = p.abs() - torch.tensor(dims, dtype=p.dtype)
        return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)
    if shape == "sphere":
        return p.norm(dim=-1) - dims[0]
    if shape == "cylinder":
        r, h = dims
        d = torch.stack([torch.hypot(x, y) - r, z.abs() - h], -1)
        return d.max(dim=-1).values.clamp(max=0) + d.clamp(min=0).norm(dim=-1)
    if shape == "cone":
        # Exact capped cone, base radius r at z=-h, apex at z=+h (Quilez's formulation).
        r, h = dims
        qx, qy = torch.hypot(x, y), z
        ca_x = qx - torch.minimum(qx, torch.where(qy < 0, torch.full_like(qx, r), torch.zeros_like(qx)))
        ca_y = qy.abs() - h
        k2x, k2y = -r, 2 * h
        t = (((-qx) * k2x + (h - qy) * k2y) / (k2x**2 + k2y**2)).clamp(0, 1)
        cb_x = qx + k2x * t
        cb_y = qy - h + k2y * t
        sign = torch.where((cb_x < 0) & (ca_y < 0), -1.0, 1.0)
        return sign * torch.minimum(ca_x**2 + ca_y**2, cb_x**2 + cb_y**2).sqrt()
    if shape == "torus":
        major, minor = dims
        return torch.stack([torch.hypot(x, y) - major, z], -1).norm(dim=-1) - minor
    if shape == "pyramid":
        b, h = dims
        n = math.hypot(2 * h, b)
        sides = [(sx * 2 * h * x + b * (z - h)) / n for sx in (1, -1)] + [(sy * 2 * h * y + b * (z - h)) / n for sy in (1, -1)]
        return torch.stack([-z - h, *sides], -1).max(dim=-1).values
    raise ValueError(f"unknown shape {shape!r}")


def sdf_world(spec: ShapeSpec, points: torch.Tensor) -> torch.Tensor:
    """Signed distance (N,) of world points (N, 3) to ``spec``'s surface."""
    rot = torch.tensor(spec.rotation, dtype=points.dtype)
    return sdf_local(spec.shape, spec.dims, points @ rot)  # row-vector form of R^T p


def grid_points(resolution: int) -> torch.Tensor:
    """World coordinates of a ``resolution^3`` grid over [-1, 1]^3, shape (z, y, x, 3) as (x, y, z)."""
    axis = torch.linspace(-1.0, 1.0, resolution)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def field_volume(spec: ShapeSpec, resolution: int = 32) -> torch.Tensor:
    """Ground-truth field (4, z, y, x): truncated SDF in [-1, 1] then sRGB colour (constant)."""
    pts = grid_points(resolution).reshape(-1, 3)
    tsdf = (sdf_world(spec, pts) / TRUNCATION).clamp(-1, 1).reshape(1, resolution, resolution, resolution)
    rgb = torch.tensor(spec.rgb).view(3, 1, 1, 1).expand(3, resolution, resolution, resolution)
    return torch.cat([tsdf, rgb], dim=0)


def near_surface_points(spec: ShapeSpec, count: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Training query points (count, 3), half of them within 0.1 of the surface, with their tsdf (count,)."""
    cand = torch.rand(count * 4, 3, generator=g) * 2 - 1
    sdf = sdf_world(spec, cand)
    weight = 1.0 + 8.0 * (sdf.abs() < 0.1).float()
    idx = torch.multinomial(weight, count, replacement=False, generator=g)
    return cand[idx], (sdf[idx] / TRUNCATION).clamp(-1, 1)
