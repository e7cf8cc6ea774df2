"""Splatter images -> 3D Gaussians: what DiffSplat's GSVAE decodes, made into ``GaussianSplats``.

Each view's splatter image (12, H, W), in [-1, 1] after the GSVAE's clamp, holds one Gaussian per
pixel (official: src/models/gsvae.py and src/models/gs_render/gs_renderer.py, read 2026-12):

====  ===========  ====================================================================
0:3   colour       ``(x + 1) / 2``, sRGB in [0, 1]
3:6   scale        ``u = (x + 1) / 2`` -> ``scale_min * u + scale_max * (1 - u)`` (x = -1 largest)
6:10  rotation     a quaternion (w, x, y, z), passed on as decoded
10    opacity      ``(x + 1) / 2``, zeroed at or below ``opacity_threshold``
11    depth        ``x + radius``: camera-space z, unprojected through the pixel (cameras.py)
====  ===========  ====================================================================

Rotation: the official renderer builds each covariance from the quaternion without normalising it
(its normalisation is commented out), so a quaternion of norm n != 1 gives the matrix
``(1 - n^2) I + n^2 R`` instead of the rotation R, a Gaussian stretched in the plane of rotation.
The engine's rasteriser, like gsplat, normalises: here quaternions are passed on unnormalised and are
normalised there, i.e. only the rotation of each Gaussian is kept. The GSVAE is trained to reproduce
its encoder's unit quaternions, so the two agree to O(|n^2 - 1|); reproducing the stretch exactly
would need an eigendecomposition per Gaussian whose gradient is undefined at equal scales.
"""
from __future__ import annotations

import torch

from ...render.types import GaussianSplats
from .cameras import unproject
from .frames import gaussians_to_engine
from .settings import DiffSplatSettings

SPLATTER_CHANNELS = 12


def splatter_to_gaussians(images: torch.Tensor, c2w: torch.Tensor, settings: DiffSplatSettings) -> GaussianSplats:
    """images (B, V, 12, H, W) in [-1, 1] seen by cameras ``c2w`` (V, 4, 4, DiffSplat frame) ->
    B assets of V*H*W Gaussians each, in the engine's frame and units (frames.py); differentiable."""
    if images.dim() != 5 or images.shape[2] != SPLATTER_CHANNELS:
        raise ValueError(f"splatter images must be (B, V, {SPLATTER_CHANNELS}, H, W), got {tuple(images.shape)}")
    b, v, _, h, w = images.shape
    pixels = images.permute(0, 1, 3, 4, 2)  # (B, V, H, W, 12)
    colour = (pixels[..., 0:3] + 1) / 2
    u = (pixels[..., 3:6] + 1) / 2
    scales = settings.scale_min * u + settings.scale_max * (1 - u)
    quats = pixels[..., 6:10]
    opacity = (pixels[..., 10] + 1) / 2
    opacity = opacity * (opacity > settings.opacity_threshold)
    depth = pixels[..., 11] + c2w[:, :3, 3].norm(dim=-1).to(images.dtype)[None, :, None, None]
    means = unproject(depth, c2w, settings.focal)
    means, quats, scales = gaussians_to_engine(means, quats, scales, settings.world_scale)
    n = v * h * w
    return GaussianSplats(means.reshape(b, n, 3), quats.reshape(b, n, 4), scales.reshape(b, n, 3),
                          opacity.reshape(b, n), colour.reshape(b, n, 3))
