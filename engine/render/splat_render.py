"""Render :class:`GaussianSplats` from orbit :class:`Cameras` into the project's :class:`RenderOutput`.

One :func:`engine.render.splats.rasterize` call per batch draws colour, normal and depth together
(7 channels, ``"RGB+ED"``), with per-camera normals:

* ``albedo``: the splats' colours composited front to back (premultiplied by ``alpha``).
* ``alpha``: ``1 - T``, the coverage.
* ``depth``: the expected camera z (``ED``) turned into distance along the unit ray
  (``z * |(x_n, y_n, 1)|`` for the pixel's normalised image coordinates), as the volume renderer
  measures it; alpha-normalised; 0 where alpha <= 1e-6.
* ``normal``: each Gaussian's shortest axis (the rotation column with the smallest scale), flipped
  to face the camera, composited like a colour (so premultiplied by alpha, as the volume renderer's
  normals are), in world space. Flat splats hug the surface with their thin axis along the surface
  normal, so this is the normal of the surface the splats form; depth-normal consistency (DNC)
  compares it with the normals of the rendered depth, which is only meaningful if it is the
  geometric normal and not a view-dependent shading trick. The flip depends on the camera, so the
  normals are built per camera (``colors`` of shape (B, V, N, 6)).
* ``rgb``: ``albedo`` shaded with the volume renderer's camera-relative key light
  (``ambient + (1 - ambient) * max(0, n . l)``, ``l`` the unit vector along ``-ray + 0.6 z_up``),
  using the normalised rendered normal per pixel, then composited over ``background``: an asset
  looks alike through either renderer.

Cameras convert exactly: the orbit camera's Blender frame (looks down -Z, +Y up) becomes OpenCV's
(looks down +Z, +Y down) by negating its y and z axes; ``fx = fy = (R / 2) / tan(fov / 2)`` and
``cx = cy = R / 2``, so pixel (i, j) of the rasteriser looks along ``engine.render.cameras.camera_rays``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cameras import Cameras, camera_rays, camera_to_world
from .splats import quats_to_rotmats, rasterize
from .types import GaussianSplats, RenderConfig, RenderOutput


@dataclass(frozen=True)
class SplatRenderConfig(RenderConfig):
    """Options of the splat rasteriser (``rasterize``'s keywords) on top of resolution and background."""

    backend: str = "auto"  # "auto" | "torch" | "gsplat"
    eps2d: float = 0.3
    near_plane: float = 0.01
    far_plane: float = 1e10
    ambient: float = 0.35  # as VolumeRenderConfig, so rgb matches across renderers


def camera_matrices(cameras: Cameras, resolution: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV world-to-camera matrices (V, 4, 4) and intrinsics in pixels (V, 3, 3) of orbit cameras."""
    c2w = camera_to_world(cameras.to(device)).to(dtype)
    c2w = c2w * torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=dtype, device=c2w.device)  # flip camera y, z
    rot, pos = c2w[:, :3, :3], c2w[:, :3, 3]
    viewmats = torch.zeros_like(c2w)
    viewmats[:, :3, :3] = rot.transpose(1, 2)
    viewmats[:, :3, 3] = -(rot.transpose(1, 2) @ pos[..., None])[..., 0]
    viewmats[:, 3, 3] = 1.0
    focal = (resolution / 2) / torch.tan(torch.deg2rad(cameras.fov.to(device=c2w.device, dtype=dtype)) / 2)
    ks = torch.zeros(len(cameras), 3, 3, dtype=dtype, device=c2w.device)
    ks[:, 0, 0], ks[:, 1, 1] = focal, focal
    ks[:, 0, 2], ks[:, 1, 2], ks[:, 2, 2] = resolution / 2, resolution / 2, 1.0
    return viewmats, ks


def shortest_axes(splats: GaussianSplats) -> torch.Tensor:
    """Unit world-space direction (B, N, 3) of each Gaussian's smallest-scale axis (sign arbitrary)."""
    rot = quats_to_rotmats(splats.quats)  # columns are the Gaussian's axes in world
    axis = splats.scales.abs().argmin(-1)  # (B, N)
    return torch.gather(rot, -1, axis[..., None, None].expand(*axis.shape, 3, 1))[..., 0]


def render_splats(splats: GaussianSplats, cameras: Cameras, config: RenderConfig = SplatRenderConfig()) -> RenderOutput:
    """Render B assets of splats from V orbit cameras: RenderOutput images (B, V, C, R, R).

    Any :class:`RenderConfig` works (resolution and background are read; ambient too if it has one);
    a :class:`SplatRenderConfig` also chooses the rasteriser's backend, eps2d and clipping planes.
    """
    options = config if isinstance(config, SplatRenderConfig) else SplatRenderConfig()
    ambient = float(getattr(config, "ambient", options.ambient))
    res = int(config.resolution)
    device, dtype = splats.device, splats.dtype
    if dtype not in (torch.float32, torch.float64):
        splats = splats.to(dtype=torch.float32)
        dtype = torch.float32
    bsz, v = len(splats), len(cameras)
    viewmats, ks = camera_matrices(cameras, res, device, dtype)
    cam_pos = camera_to_world(cameras.to(device)).to(dtype)[:, :3, 3]  # (V, 3)

    axes = shortest_axes(splats)  # (B, N, 3)
    toward_camera = cam_pos[None, :, None, :] - splats.means[:, None]  # (B, V, N, 3)
    facing = torch.where((toward_camera * axes[:, None]).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(dtype)
    normals = axes[:, None] * facing  # (B, V, N, 3), world space, towards each camera
    colors = torch.cat([splats.colors[:, None].expand(-1, v, -1, -1), normals], -1)

    images, alphas, _ = rasterize(
        splats.means, splats.quats, splats.scales, splats.opacities, colors,
        viewmats.expand(bsz, v, 4, 4), ks.expand(bsz, v, 3, 3), res, res,
        near_plane=options.near_plane, far_plane=options.far_plane, eps2d=options.eps2d,
        render_mode="RGB+ED", backend=options.backend)
    albedo, normal, z = images[..., :3], images[..., 3:6], images[..., 6:7]  # (B, V, R, R, .)

    # camera z -> distance along the unit ray through each pixel centre
    centres = (torch.arange(res, device=device, dtype=dtype) + 0.5 - res / 2) / ks[:, 0, 0, None]  # (V, R)
    ray_scale = torch.sqrt(1 + centres[:, :, None] ** 2 + centres[:, None, :] ** 2)[..., None]  # (V, R, R, 1)
    covered = alphas > 1e-6
    depth = torch.where(covered, z * ray_scale, torch.zeros_like(z))

    _, dirs = camera_rays(cameras.to(device), res)
    dirs = dirs.to(dtype)  # (V, R, R, 3)
    up = torch.tensor([0.0, 0.0, 1.0], device=device, dtype=dtype)
    light = F.normalize(-dirs + 0.6 * up, dim=-1)
    lambert = (F.normalize(normal, dim=-1, eps=1e-8) * light).sum(-1, keepdim=True).clamp_min(0.0)
    shade = ambient + (1 - ambient) * lambert
    bg = torch.tensor(config.background, device=device, dtype=dtype)
    rgb = albedo * shade + (1 - alphas) * bg

    def image(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 1, 4, 2, 3)

    return RenderOutput(image(rgb), image(albedo), image(alphas), image(depth), image(normal), cameras)
