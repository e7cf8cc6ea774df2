"""Known Gaussian-splat shapes with analytic surfaces: the ground truth for splat -> mesh methods.

A sphere and an axis-aligned cube covered by flat Gaussians tangent to the surface, built the way a
DiffSplat asset looks (pixel-aligned Gaussians lying on the surface: small, flat, many of low
opacity, with a little scatter along the normal), so the tests and ``scripts/measure_splat_meshes.py``
measure mesh extraction on the same thing. Engine frame (Z up, world units, inside [-1, 1]^3).

Each builder returns the splats and the analytic unsigned distance to the true surface, so Chamfer
distances need no reference mesh (:func:`chamfer_distance`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..render.splats import quaternion_multiply
from ..render.types import GaussianSplats
from .mesh import Mesh
from .splat_tsdf import fibonacci_directions


@dataclass(frozen=True)
class SplatShapeConfig:
    """How the Gaussians are drawn. ``count`` Gaussians spread evenly over the surface; tangent
    standard deviation ``tangent_scale`` x the mean spacing between centres, times a log-uniform
    factor in [1/``size_spread``, ``size_spread``]; normal standard deviation ``thickness`` (world
    units); centres scattered along the normal by N(0, ``normal_jitter``); opacities uniform in
    [``min_opacity``, 1]; ``floaters`` of them moved to random points of the cube (the stray
    Gaussians a real asset has)."""

    count: int = 16384
    tangent_scale: float = 0.8
    size_spread: float = 1.5
    thickness: float = 0.002
    normal_jitter: float = 0.002
    min_opacity: float = 0.1
    floaters: int = 0
    seed: int = 0


@dataclass
class SplatShape:
    """Splats of one asset (a batch of 1) and the unsigned distance (M, 3) -> (M,) to the true
    surface (numpy, world units); ``colour_at`` the intended sRGB colour (M, 3) at surface points."""

    splats: GaussianSplats
    distance: Callable[[np.ndarray], np.ndarray]
    sample_surface: Callable[[int, np.random.Generator], np.ndarray]
    colour_at: Callable[[np.ndarray], np.ndarray]


def _colour(points: np.ndarray) -> np.ndarray:
    """A smooth colour that varies over the surface, so colour transfer can be checked: sRGB
    0.5 + 0.4 * (x, y, z) / |p|."""
    p = np.asarray(points, dtype=np.float64)
    return 0.5 + 0.4 * p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-9)


def _quats_from_normals(normals: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) rotating +Z onto each unit normal (N, 3)."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, normals)
    w = 1.0 + normals @ z  # q = (1 + z.n, z x n), normalised: the half-angle rotation
    q = np.concatenate([w[:, None], axis], 1)
    antiparallel = w < 1e-9
    q[antiparallel] = (0.0, 1.0, 0.0, 0.0)  # 180 degrees about X maps +Z to -Z
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _finish(points: np.ndarray, normals: np.ndarray, area: float, config: SplatShapeConfig,
            rng: np.random.Generator) -> GaussianSplats:
    n = len(points)
    spacing = math.sqrt(area / n)
    spread = math.log(config.size_spread)
    tangent = config.tangent_scale * spacing * np.exp(rng.uniform(-spread, spread, n))
    # A random spin about the normal and unequal tangent axes, as real splats have.
    aspect = np.exp(rng.uniform(-0.3, 0.3, n))
    scales = np.stack([tangent * aspect, tangent / aspect, np.full(n, config.thickness)], 1)
    spin = rng.uniform(0, math.pi, n)
    q_spin = np.stack([np.cos(spin), np.zeros(n), np.zeros(n), np.sin(spin)], 1)
    quats = quaternion_multiply(torch.from_numpy(_quats_from_normals(normals)), torch.from_numpy(q_spin)).numpy()
    means = points + normals * rng.normal(0.0, config.normal_jitter, (n, 1)) if config.normal_jitter > 0 else points
    colours = _colour(points)
    opacities = rng.uniform(config.min_opacity, 1.0, n)
    if config.floaters:
        k = min(config.floaters, n)
        idx = rng.choice(n, k, replace=False)
        means = means.copy()
        means[idx] = rng.uniform(-0.95, 0.95, (k, 3))
        opacities[idx] = rng.uniform(config.min_opacity, 0.5, k)
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)[None]  # noqa: E731
    return GaussianSplats(as_t(means), as_t(quats), as_t(scales), as_t(opacities), as_t(np.clip(colours, 0, 1)))


def splat_sphere(radius: float = 0.6, config: SplatShapeConfig = SplatShapeConfig()) -> SplatShape:
    """A sphere of ``radius`` about the origin covered by ``config.count`` flat Gaussians."""
    rng = np.random.default_rng(config.seed)
    normals = fibonacci_directions(config.count).numpy()
    splats = _finish(radius * normals, normals, 4 * math.pi * radius**2, config, rng)

    def distance(p: np.ndarray) -> np.ndarray:
        return np.abs(np.linalg.norm(p, axis=-1) - radius)

    def sample(m: int, g: np.random.Generator) -> np.ndarray:
        v = g.normal(size=(m, 3))
        return radius * v / np.linalg.norm(v, axis=1, keepdims=True)

    return SplatShape(splats, distance, sample, _colour)


def splat_cube(half: float = 0.5, config: SplatShapeConfig = SplatShapeConfig()) -> SplatShape:
    """An axis-aligned cube of half-size ``half`` about the origin covered by ``config.count`` flat
    Gaussians, evenly over its six faces (a jittered grid on each)."""
    rng = np.random.default_rng(config.seed)
    per_face = max(1, config.count // 6)
    side = max(1, int(math.ceil(math.sqrt(per_face))))
    u, v = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side, indexing="ij")
    uv = np.stack([u.ravel(), v.ravel()], 1)[:per_face]
    points, normals = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            jitter = rng.uniform(-0.5, 0.5, uv.shape) / side
            face = np.empty((len(uv), 3))
            others = [a for a in range(3) if a != axis]
            face[:, others] = (2 * np.clip(uv + jitter, 0, 1) - 1) * half
            face[:, axis] = sign * half
            n = np.zeros((len(uv), 3))
            n[:, axis] = sign
            points.append(face)
            normals.append(n)
    splats = _finish(np.concatenate(points), np.concatenate(normals), 24 * half**2, config, rng)

    def distance(p: np.ndarray) -> np.ndarray:
        q = np.abs(p) - half
        outside = np.linalg.norm(np.maximum(q, 0), axis=-1)
        inside = np.minimum(q.max(-1), 0)
        return np.abs(outside + inside)

    def sample(m: int, g: np.random.Generator) -> np.ndarray:
        pts = g.uniform(-half, half, (m, 3))
        axis = g.integers(0, 3, m)
        pts[np.arange(m), axis] = np.where(g.random(m) < 0.5, -half, half)
        return pts

    return SplatShape(splats, distance, sample, _colour)


@dataclass
class MeshError:
    """How far a mesh lies from a known surface, world units: ``chamfer`` the symmetric mean
    distance, ½ (mesh -> surface + surface -> mesh); ``to_surface_p95`` the 95th percentile of the
    mesh -> surface distance (floaters and bulges); ``colour_mae`` mean absolute sRGB error of the
    vertex colours against the intended colour at the nearest surface direction."""

    chamfer: float
    mesh_to_surface: float
    surface_to_mesh: float
    to_surface_p95: float
    colour_mae: float


_CANDIDATES = 6  # nearest mesh samples whose triangles are measured exactly


def chamfer_distance(mesh: Mesh, shape: SplatShape, samples: int = 100_000, seed: int = 0) -> MeshError:
    """Compare ``mesh`` with the shape's analytic surface by area-uniform samples of both.

    An empty mesh is infinitely far (``inf`` everywhere)."""
    import trimesh
    from scipy.spatial import cKDTree

    if mesh.is_empty:
        return MeshError(*(float("inf"),) * 5)
    g = np.random.default_rng(seed)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    on_mesh, face_of = trimesh.sample.sample_surface(tm, samples, seed=seed)
    to_surface = shape.distance(np.asarray(on_mesh))
    on_surface = shape.sample_surface(samples, g)
    # Exact point-to-triangle distances to the triangles of the nearest few mesh samples: the
    # nearest sample alone would add about half the sample spacing to every distance.
    _, near = cKDTree(on_mesh).query(on_surface, k=_CANDIDATES)
    triangles = tm.triangles[face_of[near].ravel()]
    closest = trimesh.triangles.closest_point(triangles, np.repeat(on_surface, _CANDIDATES, axis=0))
    gaps = np.linalg.norm(closest - np.repeat(on_surface, _CANDIDATES, axis=0), axis=1)
    to_mesh = gaps.reshape(-1, _CANDIDATES).min(1)
    colour_mae = float(np.abs(mesh.colors - shape.colour_at(mesh.vertices)).mean())
    return MeshError(float(0.5 * (to_surface.mean() + to_mesh.mean())), float(to_surface.mean()),
                     float(to_mesh.mean()), float(np.percentile(to_surface, 95)), colour_mae)
