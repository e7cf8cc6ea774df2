"""Differentiable volume renderer for signed-distance fields, pure PyTorch (same code on CPU and CUDA).

Each ray is clipped to the scene cube [-1, 1]^3 and sampled at ``samples`` evenly spaced points.
Opacity between consecutive samples follows NeuS' unbiased discrete form,
``alpha_i = clamp((Phi(s_i) - Phi(s_{i+1})) / Phi(s_i), 0, 1)`` with ``Phi(s) = sigmoid(s / sharpness)``,
so a surface crossing inside an interval is opaque wherever it falls. Colour, normal and depth of an
interval are taken at the linearly interpolated zero crossing (the midpoint if there is none):
depth then moves smoothly with the field instead of snapping to samples, which keeps depth and
normal rewards differentiable.

Outputs are (B, V, C, R, R): ``rgb`` shaded with a fixed camera-relative key light and composited
over ``background``; ``albedo`` unshaded; ``alpha``; ``depth`` the alpha-normalised distance along
the unit ray (0 where alpha is 0); ``normal`` world-space unit normals composited (0 on background).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cameras import Cameras, camera_rays
from .types import RenderConfig, RenderOutput


@dataclass(frozen=True)
class VolumeRenderConfig(RenderConfig):
    samples: int = 64
    sharpness: float = 0.01  # world units; width of the sigmoid that makes the surface opaque
    ambient: float = 0.35
    chunk_rays: int = 32768  # rays per batch item processed at once (bounds peak memory)


def _ray_box(origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit distances of rays (N, 3) through [-1, 1]^3; exit <= entry means a miss."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (-1.0 - origins) * inv, (1.0 - origins) * inv
    near = torch.minimum(t0, t1).max(dim=-1).values.clamp_min(0.0)
    far = torch.maximum(t0, t1).min(dim=-1).values
    return near, far


def _render_rays(field, origins: torch.Tensor, dirs: torch.Tensor, cfg: VolumeRenderConfig):
    """origins/dirs (B, N, 3) -> rgb, albedo (B, 3, N), alpha (B, N), depth (B, N), normal (B, 3, N).

    With origins/dirs (1, N, 3) the rays are shared by every field of the batch, which the field then
    samples with its ``sample_shared`` (one lookup for the batch); the outputs are still (B, ...).
    Colours and normals are kept channels first: per-point products over a trailing axis of 3 were
    most of the renderer's CPU time (docs/method.md, "Round cost")."""
    b, n, _ = origins.shape
    near, far = _ray_box(origins.reshape(-1, 3), dirs.reshape(-1, 3))
    near, far = near.view(b, n), far.view(b, n)
    hit = far > near
    far = torch.where(hit, far, near + 1e-3)
    steps = torch.linspace(0.0, 1.0, cfg.samples, device=origins.device, dtype=origins.dtype)
    t = near[..., None] + (far - near)[..., None] * steps  # (B, N, S)
    pts = origins[:, :, None] + dirs[:, :, None] * t[..., None]  # (B, N, S, 3)
    flat = pts.reshape(b, -1, 3)
    sdf, colour, normal = field.sample_shared(flat[0]) if b == 1 and len(field) > 1 else field.sample(flat)
    b = len(field)
    sdf = sdf.reshape(b, n, cfg.samples)
    colour = colour.transpose(1, 2).reshape(b, 3, n, cfg.samples)  # a view when the field gives channels-first storage
    normal = normal.transpose(1, 2).reshape(b, 3, n, cfg.samples)

    s0, s1 = sdf[..., :-1], sdf[..., 1:]
    phi0, phi1 = torch.sigmoid(s0 / cfg.sharpness), torch.sigmoid(s1 / cfg.sharpness)
    alpha = ((phi0 - phi1) / phi0.clamp_min(1e-6)).clamp(0.0, 1.0) * hit[..., None]
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-7], -1), -1)[..., :-1]
    weights = alpha * trans  # (B, N, S-1)

    crossing = (s0 > 0) & (s1 <= 0)
    frac = torch.where(crossing, s0 / (s0 - s1).clamp_min(1e-8), torch.full_like(s0, 0.5)).clamp(0.0, 1.0)
    t_mid = t[..., :-1] + (t[..., 1:] - t[..., :-1]) * frac
    f = frac[:, None]  # (B, 1, N, S-1)
    col_mid = colour[..., :-1] * (1 - f) + colour[..., 1:] * f  # (B, 3, N, S-1)
    nrm_mid = normal[..., :-1] * (1 - f) + normal[..., 1:] * f
    # x / max(|x|, 1e-8) as a sum of squares: torch's norm over a 3-wide axis is several times slower on CPU.
    nrm_mid = nrm_mid * (nrm_mid * nrm_mid).sum(1, keepdim=True).clamp_min(1e-16).rsqrt()

    acc = weights.sum(-1)
    w = weights[:, None]
    albedo = (w * col_mid).sum(-1)  # (B, 3, N)
    nrm = (w * nrm_mid).sum(-1)
    depth = (weights * t_mid).sum(-1) / acc.clamp_min(1e-6) * (acc > 1e-6)

    # Key light above and to the left of the camera, moving with it.
    up = torch.tensor([0.0, 0.0, 1.0], device=dirs.device, dtype=dirs.dtype)
    light = -dirs + 0.6 * up
    light = light / light.norm(dim=-1, keepdim=True)
    lambert = (nrm_mid * light.transpose(1, 2)[..., None]).sum(1).clamp_min(0.0)  # (B, N, S-1)
    shade = cfg.ambient + (1 - cfg.ambient) * lambert
    lit = ((weights * shade)[:, None] * col_mid).sum(-1)
    bg = torch.tensor(cfg.background, device=dirs.device, dtype=dirs.dtype)
    rgb = lit + (1 - acc[:, None]) * bg[:, None]
    return rgb, albedo, acc, depth, nrm


def render_field(field, cameras: Cameras, config: VolumeRenderConfig = VolumeRenderConfig(), shared: bool = True) -> RenderOutput:
    """Render a batch of fields (``sample`` as in ``engine.models.fields``) from V cameras.

    Every field sees the same rays, so a field that offers ``sample_shared`` (``SDFGrid``) is looked
    up once for the whole batch (the same values as per-field ``sample``; docs/method.md, "Round
    cost"; on CPU). ``shared=False`` forces the per-field lookup."""
    res = config.resolution
    device, dtype = field.device, field.dtype  # rays go where the field is (engine/render/types.py)
    origins, dirs = camera_rays(cameras.to(device), res)
    v = len(cameras)
    bsz = len(field)
    # The shared lookup was measured on CPU, where grid_sample's backward is slow; elsewhere as before.
    rays = 1 if shared and bsz > 1 and device.type == "cpu" and callable(getattr(field, "sample_shared", None)) else bsz
    origins = origins.to(dtype).reshape(1, -1, 3).expand(rays, -1, -1)
    dirs = dirs.to(dtype).reshape(1, -1, 3).expand(rays, -1, -1)
    parts = [
        _render_rays(field, origins[:, i : i + config.chunk_rays], dirs[:, i : i + config.chunk_rays], config)
        for i in range(0, origins.shape[1], config.chunk_rays)
    ]
    rgb, albedo, alpha, depth, normal = (torch.cat(p, -1) for p in zip(*parts))

    def image(x: torch.Tensor) -> torch.Tensor:  # (B, N) or (B, C, N), N = V * R * R -> (B, V, C, R, R)
        x = x if x.dim() == 3 else x[:, None]
        return x.view(bsz, x.shape[1], v, res, res).transpose(1, 2)

    return RenderOutput(image(rgb), image(albedo), image(alpha), image(depth), image(normal), cameras)
