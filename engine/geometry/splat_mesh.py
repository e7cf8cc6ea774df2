"""Meshes from Gaussian splats: marching cubes of an opacity-density field, or TSDF fusion of
rendered depth (see docs/rendering.md, "Meshes from splats", for the measured comparison).

Density route (:func:`splats_to_meshes` with ``method="density"``): on a grid of ``resolution``
points a side over [-1, 1]^3 (corners on the bounds, as :func:`engine.geometry.mesh.extract_mesh`
expects) evaluate

    D(x) = sum_i opacity_i * exp(-1/2 (x - mu_i)^T Sigma_i'^-1 (x - mu_i)),
    Sigma_i' = R_i diag(s_i^2) R_i^T + sigma_f^2 I,

each Gaussian scattered only into the grid points of its own 3-sigma box, in chunks of bounded
size. ``sigma_f`` (``filter_voxels`` grid spacings) widens every Gaussian to at least about a voxel,
as Mip-Splatting's 3D filter does: real splats are flatter than a voxel (0.002 world units against
0.016 at 128^3) and would otherwise fall between grid points. Peak heights are kept (not masses),
so a surface's density does not depend on how thin its splats are.

A splat surface is a thin *shell* of density, so its level set has two sheets, outside and inside
the shell. The shell's enclosed voxels are filled (a hole-filling flood from the grid's border, after
closing gaps of ``close_voxels``), which leaves only the outer sheet; the level is a fraction
``level`` of the surface's own density (the opacity-weighted median of D at the Gaussians' centres),
so it adapts to how densely and how opaquely a model covers its surfaces. A flat layer whose density
falls off as a Gaussian of standard deviation sigma_n across it crosses that level
sigma_n * sqrt(2 ln(1 / level)) outside its centre: that offset is removed by moving the vertices
inward along their normals (``correct_offset``). Marching cubes runs on sqrt(2 ln(surface / D)), the
distance from the layer in standard deviations, which is linear across the surface where D's tail is
not, so linear interpolation between grid points does not bias the level outward. Connected pieces with fewer than
``min_piece`` of the largest piece's voxels are dropped (floaters). Vertex colours are the
density-weighted mean colour, interpolated as two fields (sum of w c, sum of w) and divided at the
vertex, so the empty outside never darkens the surface.

TSDF route (``method="tsdf"``, engine/geometry/splat_tsdf.py): renders depth, colour and coverage
from ``views`` cameras spread over the sphere with the splat rasteriser
(:func:`engine.render.splats.rasterize`) and fuses them into a truncated signed distance grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..render.splats import quats_to_rotmats
from ..render.types import GaussianSplats
from .mesh import Mesh, extract_mesh

METHODS = ("density", "tsdf")

_CUTOFF = 3.0  # Gaussians are scattered into their 3-sigma boxes: exp(-4.5) = 1 % of the peak at the edge
_CHUNK_ELEMENTS = 1 << 20  # Gaussians x box cells evaluated at once (about 100 MB of temporaries)
_MAX_BOX_RADIUS = 24  # grid cells; a larger Gaussian is cut at this box (none of a DiffSplat asset's)


@dataclass(frozen=True)
class SplatMeshConfig:
    """``method``: "density" or "tsdf"; ``resolution``: grid points a side over [-1, 1]^3.

    Density: ``filter_voxels`` the added isotropic standard deviation in grid spacings; ``level``
    the iso-level as a fraction of the surface's median density; ``close_voxels`` the widest gap
    (voxels) bridged when filling the shell's inside; ``correct_offset`` removes the level's
    outward offset; ``min_opacity`` ignores fainter Gaussians; ``min_piece`` drops pieces smaller
    than this fraction of the largest.

    TSDF: ``views`` cameras, ``image_resolution`` pixels a side, ``truncation_voxels`` the
    truncation band, ``alpha_threshold`` the coverage above which a pixel's depth counts.
    """

    method: str = "density"
    resolution: int = 128
    filter_voxels: float = 0.5
    level: float = 0.5
    close_voxels: int = 1
    correct_offset: bool = True
    min_opacity: float = 0.005
    min_piece: float = 0.05
    views: int = 32
    image_resolution: int = 192
    truncation_voxels: float = 3.0
    alpha_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown splat meshing method {self.method!r}; use one of {', '.join(METHODS)}")
        if not 8 <= self.resolution <= 256:  # 256^3: 0.3 GB of density and colour sums
            raise ValueError(f"resolution must be in [8, 256], got {self.resolution}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if not self.filter_voxels > 0.0:
            raise ValueError(f"filter_voxels must be > 0, got {self.filter_voxels}")


def splats_to_meshes(splats: GaussianSplats, resolution: int | None = None,
                     config: SplatMeshConfig = SplatMeshConfig()) -> list[Mesh]:
    """One vertex-coloured :class:`Mesh` per asset of ``splats`` (engine frame, sRGB colours).

    ``resolution`` overrides ``config.resolution``. An asset with no Gaussian above
    ``config.min_opacity`` gives an empty mesh. Raises ValueError for non-finite splats.
    """
    if resolution is not None:
        config = replace(config, resolution=int(resolution))
    _check_finite(splats)
    with torch.no_grad():
        if config.method == "tsdf":
            from .splat_tsdf import tsdf_meshes

            return tsdf_meshes(splats, config)
        return [_density_mesh(splats[i], config) for i in range(len(splats))]


def _check_finite(splats: GaussianSplats) -> None:
    for name in ("means", "quats", "scales", "opacities", "colors"):
        if not bool(torch.isfinite(getattr(splats, name)).all()):
            raise ValueError(f"GaussianSplats.{name} holds non-finite values")


def _empty() -> Mesh:
    return Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))


@dataclass
class DensityGrid:
    """Sums over Gaussians on the grid (R, R, R) indexed (z, y, x): ``density`` sum w, ``colour``
    (3, R, R, R) sum w c, with w = opacity * exp(-q/2)."""

    density: torch.Tensor
    colour: torch.Tensor
    spacing: float


def density_grid(means: torch.Tensor, rotations: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                 colours: torch.Tensor, resolution: int, filter_std: float) -> DensityGrid:
    """Splat N Gaussians (means (N, 3), rotations (N, 3, 3), scales (N, 3) std devs, opacities (N,),
    colours (N, 3)) onto a ``resolution``^3 grid over [-1, 1]^3, each widened by ``filter_std``.

    Memory stays bounded: Gaussians are grouped by their box size (cells per axis) and evaluated in
    chunks of at most ``_CHUNK_ELEMENTS`` Gaussian-cell pairs, accumulated with ``index_add_``.
    """
    r = resolution
    h = 2.0 / (r - 1)
    dtype = torch.float32
    cov = (rotations * scales[:, None, :].square()) @ rotations.transpose(1, 2)
    cov = cov.double() + (filter_std**2) * torch.eye(3, dtype=torch.float64)
    precision = torch.linalg.inv(cov).to(dtype)
    radius = torch.ceil(_CUTOFF * cov.diagonal(dim1=1, dim2=2).sqrt() / h).long().clamp(1, _MAX_BOX_RADIUS)  # (N, 3) x, y, z
    centre = torch.round((means + 1.0) / h).long()  # nearest grid point (x, y, z)
    density = torch.zeros(r**3, dtype=dtype)
    colour = torch.zeros(r**3, 3, dtype=dtype)
    keys = (radius[:, 0] * 64 + radius[:, 1]) * 64 + radius[:, 2]
    for key in torch.unique(keys).tolist():
        members = torch.nonzero(keys == key).squeeze(1)
        rx, ry, rz = key // 4096, (key // 64) % 64, key % 64
        offsets = torch.stack(torch.meshgrid(torch.arange(-rx, rx + 1), torch.arange(-ry, ry + 1),
                                             torch.arange(-rz, rz + 1), indexing="ij"), -1).reshape(-1, 3)
        per_chunk = max(1, _CHUNK_ELEMENTS // len(offsets))
        for start in range(0, len(members), per_chunk):
            idx = members[start:start + per_chunk]
            cells = centre[idx, None, :] + offsets[None]  # (G, K, 3) integer grid coordinates (x, y, z)
            d = (cells.to(dtype) * h - 1.0) - means[idx, None, :]
            q = torch.einsum("gki,gij,gkj->gk", d, precision[idx], d)
            inside = ((cells >= 0) & (cells < r)).all(-1) & (q < _CUTOFF**2)
            w = opacities[idx, None] * torch.exp(-0.5 * q) * inside
            flat = ((cells[..., 2].clamp(0, r - 1) * r + cells[..., 1].clamp(0, r - 1)) * r
                    + cells[..., 0].clamp(0, r - 1)).reshape(-1)
            density.index_add_(0, flat, w.reshape(-1))
            colour.index_add_(0, flat, (w[..., None] * colours[idx, None, :]).reshape(-1, 3))
    return DensityGrid(density.reshape(r, r, r), colour.T.reshape(3, r, r, r), h)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _sample(grid: np.ndarray, points_xyz: np.ndarray, spacing: float) -> np.ndarray:
    """Trilinear samples of a (z, y, x) grid at world points (M, 3) (x, y, z)."""
    from scipy.ndimage import map_coordinates

    coords = ((points_xyz + 1.0) / spacing)[:, ::-1].T  # (3, M) as (z, y, x) indices
    return map_coordinates(grid, coords, order=1, mode="nearest")


def _density_mesh(asset: GaussianSplats, config: SplatMeshConfig) -> Mesh:
    from scipy import ndimage

    keep = asset.opacities[0] >= config.min_opacity
    if not bool(keep.any()):
        return _empty()
    means = asset.means[0][keep].float().cpu()
    rotations = quats_to_rotmats(asset.quats[0][keep].float().cpu())
    scales = asset.scales[0][keep].float().cpu().abs()
    opacities = asset.opacities[0][keep].float().cpu().clamp(0.0, 1.0)
    colours = asset.colors[0][keep].float().cpu().clamp(0.0, 1.0)
    h = 2.0 / (config.resolution - 1)
    filter_std = config.filter_voxels * h
    grid = density_grid(means, rotations, scales, opacities, colours, config.resolution, filter_std)
    density = grid.density.numpy().astype(np.float32)
    weights = opacities.numpy().astype(np.float64)
    surface = _weighted_median(_sample(density, means.numpy(), h), weights)
    if not surface > 0.0:
        return _empty()
    iso = config.level * surface
    shell = density >= iso
    solid = _fill_inside(shell, config.close_voxels)
    solid = _drop_small_pieces(solid, config.min_piece)
    if not solid.any():
        return _empty()
    # Inside the shell: at least the surface's density, so the shell's inner sheet disappears;
    # outside the kept pieces: nothing, so floaters make no sheets at all.
    field = np.where(solid & ~shell, max(surface, iso * 2.0), density)
    field = np.where(ndimage.binary_dilation(solid, iterations=2), field, 0.0).astype(np.float32)
    # Marching cubes interpolates linearly between grid points; a Gaussian's tail is far from linear
    # there (the level lies 1.2 sigma out, past the inflection), which put the surface ~0.15 voxels too
    # far out. sqrt(2 ln(surface / D)) is the distance from the layer's centre in sigmas for a Gaussian
    # profile: linear across the surface, so interpolation places the level where the profile does.
    sigmas = np.sqrt(2.0 * np.maximum(np.log(surface / np.maximum(field, surface * 1e-30)), 0.0))
    level_sigmas = math.sqrt(2.0 * math.log(1.0 / config.level))
    volume = np.concatenate([(sigmas - level_sigmas)[None].astype(np.float32), np.zeros((3,) + field.shape, np.float32)])
    mesh = extract_mesh(volume, level=0.0)
    if mesh.is_empty:
        return mesh
    vertices = mesh.vertices.astype(np.float64)
    if config.correct_offset:
        # The level sits sigma_n sqrt(2 ln(surface / iso)) outside a flat layer's centre, sigma_n the
        # widened thickness of the layer's Gaussians (their shortest axis).
        thickness = _weighted_median(scales.min(1).values.double().numpy(), weights)
        offset = math.sqrt(thickness**2 + filter_std**2) * level_sigmas
        vertices = vertices - offset * _vertex_normals(vertices, mesh.faces)
    wsum = _sample(grid.density.numpy(), vertices, h)
    colour = np.stack([_sample(grid.colour[c].numpy(), vertices, h) for c in range(3)], 1)
    colours_v = np.where(wsum[:, None] > 1e-8, colour / np.maximum(wsum[:, None], 1e-8), 0.5)
    return Mesh(vertices, mesh.faces, colours_v)


def _fill_inside(shell: np.ndarray, close_voxels: int) -> np.ndarray:
    """The shell with everything it encloses, after bridging gaps up to ``close_voxels`` wide."""
    from scipy import ndimage

    if close_voxels > 0:
        closed = ndimage.binary_dilation(shell, iterations=close_voxels)
        filled = ndimage.binary_fill_holes(closed)
        # Undo the dilation on the outside only: eroding the filled solid keeps what it enclosed.
        filled = ndimage.binary_erosion(filled, iterations=close_voxels, border_value=0)
        return filled | shell
    return ndimage.binary_fill_holes(shell)


def _drop_small_pieces(solid: np.ndarray, min_piece: float) -> np.ndarray:
    from scipy import ndimage

    labels, count = ndimage.label(solid)
    if count <= 1:
        return solid
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_piece * sizes.max()) + 1
    return np.isin(labels, keep)


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (outward for extract_mesh's orientation); zero where undefined."""
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 x area
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 1e-12, normals / np.maximum(length, 1e-12), 0.0)
