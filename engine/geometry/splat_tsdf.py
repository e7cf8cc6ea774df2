"""TSDF fusion of rendered splat depth: the second route of :mod:`engine.geometry.splat_mesh`.

Cameras: ``views`` directions spread evenly over the sphere (a Fibonacci spiral, so the top and
bottom are seen too, unlike an orbit), looking at the origin from a distance at which the splats'
bounding sphere just fills the 40 degree field of view (:func:`tsdf_cameras`: the renderer's own
camera convention, engine/render/cameras.py). Each view renders expected camera depth,
colour and coverage with the splat rasteriser (:func:`engine.render.splats.rasterize`, mode
"RGB+ED", no background). Each grid point then takes, per view that sees it, the projective signed
distance ``depth(pixel) - z`` truncated to ``+-mu`` (``mu`` = ``truncation_voxels`` grid spacings):

* a pixel with coverage below 0.02 looks at nothing, so every point on its ray is free space
  (``+mu``): this carves the outside, as space carving does; a pixel covered more than that but
  less than ``alpha_threshold`` (an edge, a gap between splats) is not used;
* a point more than ``mu`` behind the depth is hidden from that view and is not updated.

Points no view updates are hidden from all of them: inside. The mesh is the zero level set of the
averaged distances (marching cubes through :func:`engine.geometry.mesh.extract_mesh`), with colours
fused the same way from the near-surface points and divided at the vertices.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..render.cameras import Cameras, cameras_from_positions
from ..render.splat_render import camera_matrices
from ..render.types import GaussianSplats
from .mesh import Mesh, extract_mesh

_FOV_DEG = 40.0
_MARGIN = 1.05  # the bounding sphere fills this fraction less than the image
_VIEWS_PER_RENDER = 4
_DEPTH_OPACITY_POWER = 8.0
_BACKGROUND_ALPHA = 0.02  # a pixel covered less than this sees the background: free space along it
_FRAMED_QUANTILE = 0.995  # of the Gaussians' distances from the origin (plus 3 std devs)


def fibonacci_directions(n: int) -> torch.Tensor:
    """``n`` unit vectors (n, 3) spread evenly over the sphere."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = (1 - z * z).clamp_min(0).sqrt()
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * phi.cos(), r * phi.sin(), z], 1)


def tsdf_cameras(views: int, distance: float) -> Cameras:
    """The fusion's ``views`` cameras: on the Fibonacci directions at ``distance`` from the origin,
    looking at it with the orbit cameras' convention (image-up as close to +Z as possible), field of
    view 40 degrees. Float64."""
    return cameras_from_positions(fibonacci_directions(views) * distance, _FOV_DEG)


def tsdf_meshes(splats: GaussianSplats, config) -> list[Mesh]:
    """One mesh per asset (``config`` a :class:`engine.geometry.splat_mesh.SplatMeshConfig`)."""
    return [_tsdf_mesh(splats[i], config) for i in range(len(splats))]


def _tsdf_mesh(asset: GaussianSplats, config) -> Mesh:
    from scipy import ndimage

    from .splat_mesh import _drop_small_pieces, _empty, _sample

    keep = asset.opacities[0] >= config.min_opacity
    if not bool(keep.any()):
        return _empty()
    asset = GaussianSplats(*(t[:, keep] for t in (asset.means, asset.quats, asset.scales, asset.opacities, asset.colors)))
    res, size = config.resolution, config.image_resolution
    h = 2.0 / (res - 1)
    mu = config.truncation_voxels * h
    # Frame the asset, not its strays: a few floaters far out would shrink the asset in every image.
    # What lies outside the framed ball is outside the mesh (below).
    reach = asset.means[0].norm(dim=1) + 3 * asset.scales[0].abs().amax(1)
    extent = torch.quantile(reach.float().cpu(), _FRAMED_QUANTILE).clamp(max=math.sqrt(3.0))
    distance = float(extent) * _MARGIN / math.sin(math.radians(_FOV_DEG) / 2)
    distance = max(distance, float(extent) + 0.05)
    # The renderer's own orbit-camera matrices: OpenCV world-to-camera, as the rasteriser takes them.
    viewmats, Ks = camera_matrices(tsdf_cameras(config.views, distance), size, "cpu", torch.float64)
    focal = float(Ks[0, 0, 0])  # the pinhole the rasteriser is given, for projecting the grid below
    viewmats, Ks = viewmats.to(asset.device, torch.float32), Ks.to(asset.device, torch.float32)
    images, alphas = _render(asset, viewmats, Ks, size)  # (V, H, W, 4) colour + depth, (V, H, W)

    axis = torch.linspace(-1.0, 1.0, res, dtype=torch.float32)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    points = torch.stack([x, y, z], -1).reshape(-1, 3)  # (z, y, x) order, as extract_mesh reads it
    sdf_sum = torch.zeros(len(points))
    weight = torch.zeros(len(points))
    colour_sum = torch.zeros(len(points), 3)
    colour_weight = torch.zeros(len(points))
    for v in range(config.views):
        cam = points @ viewmats[v, :3, :3].T.cpu() + viewmats[v, :3, 3].cpu()
        zc = cam[:, 2]
        u = focal * cam[:, 0] / zc + size / 2
        w = focal * cam[:, 1] / zc + size / 2
        col, row = torch.floor(u).long(), torch.floor(w).long()  # pixel centres sit at +0.5
        seen = (zc > 0) & (col >= 0) & (col < size) & (row >= 0) & (row < size)
        flat = (row.clamp(0, size - 1) * size + col.clamp(0, size - 1))
        alpha = alphas[v].reshape(-1)[flat]
        depth = images[v, ..., 3].reshape(-1)[flat]
        hit = alpha >= config.alpha_threshold
        empty = alpha < _BACKGROUND_ALPHA
        signed = torch.where(hit, depth - zc, torch.full_like(zc, mu)).clamp(max=mu)
        # A half-covered pixel (a gap between splats, an edge) says nothing: carving along it would
        # bore a tunnel through the solid, which no occluded view could fill back.
        update = seen & (hit | empty) & (signed > -mu)
        sdf_sum += torch.where(update, signed / mu, 0.0)
        weight += update.float()
        near = update & hit & (signed.abs() < mu)
        rgb = images[v, ..., :3].reshape(-1, 3)[flat] / alpha.clamp_min(1e-6)[:, None]
        colour_sum += torch.where(near[:, None], rgb, 0.0)
        colour_weight += near.float()
    # Every view sees the whole framed ball. Inside it, a point no view updated is hidden behind the
    # surface from everywhere: inside. Outside it lies only what was left out of the frame: outside.
    framed = points.norm(dim=1) <= float(extent)
    tsdf = torch.where(weight > 0, sdf_sum / weight.clamp_min(1.0), torch.full_like(weight, -1.0))
    tsdf = torch.where(framed, tsdf, torch.ones_like(tsdf))
    tsdf = tsdf.reshape(res, res, res).numpy()
    # A view that carves wrongly (a gap in both walls) leaves a free bubble inside, which no other
    # view can correct (they are all occluded there): enclosed free space is solid.
    solid = _drop_small_pieces(ndimage.binary_fill_holes(tsdf < 0), config.min_piece)
    if not solid.any():
        return _empty()
    # Pieces dropped as floaters become free space.
    tsdf = np.where((tsdf < 0) & ~solid, 1.0, np.where(solid & (tsdf >= 0), -1.0, tsdf)).astype(np.float32)
    volume = np.concatenate([tsdf[None], np.zeros((3,) + tsdf.shape, np.float32)])
    mesh = extract_mesh(volume, level=0.0)
    if mesh.is_empty:
        return mesh
    grid = lambda t: t.reshape(res, res, res).numpy()  # noqa: E731
    wsum = _sample(grid(colour_weight), mesh.vertices.astype(np.float64), h)
    csum = np.stack([_sample(grid(colour_sum[:, c].contiguous()), mesh.vertices.astype(np.float64), h)
                     for c in range(3)], 1)
    colours = np.where(wsum[:, None] > 1e-6, csum / np.maximum(wsum[:, None], 1e-6), 0.5)
    return Mesh(mesh.vertices, mesh.faces, colours)


def _render(asset: GaussianSplats, viewmats: torch.Tensor, Ks: torch.Tensor, size: int):
    """Colour (premultiplied) and expected depth (V, H, W, 4) and coverage (V, H, W), on the CPU."""
    from ..render.splats import rasterize

    # Expected depth averages every layer a ray crosses; where the front layer lets 10 % through,
    # the back of the object pulls the depth 10 % of the way there. Opacities raised to
    # 1 - (1 - a)^k make each layer nearly opaque, so the depth is the first surface's (a stand-in for
    # the median depth RaDe-GS and 2DGS fuse, which the rasteriser does not give).
    opacities = 1.0 - (1.0 - asset.opacities[0].clamp(0, 1)) ** _DEPTH_OPACITY_POWER
    images, coverage = [], []
    for start in range(0, len(viewmats), _VIEWS_PER_RENDER):  # bounds the per-view projection buffers
        renders, alphas, _ = rasterize(asset.means[0], asset.quats[0], asset.scales[0].abs(),
                                       opacities, asset.colors[0].clamp(0, 1),
                                       viewmats[start:start + _VIEWS_PER_RENDER], Ks[start:start + _VIEWS_PER_RENDER],
                                       size, size, render_mode="RGB+ED")
        images.append(renders.float().cpu())
        coverage.append(alphas[..., 0].float().cpu())
    return torch.cat(images), torch.cat(coverage)
