"""Differentiable 3D Gaussian-splat rasteriser with gsplat 1.5's interface (classic mode).

:func:`rasterize` takes and returns exactly what ``gsplat.rasterization`` does with ``packed=False``,
``rasterize_mode="classic"``, ``sh_degree=None`` (colours given directly), so callers can swap the two
backends: ``"torch"`` (this module, pure PyTorch, CPU or CUDA) and ``"gsplat"`` (imported lazily, CUDA
only). ``"auto"`` uses gsplat where it imports and runs on CUDA tensors, else torch (logged once).

Semantics (gsplat 1.5.3's projection and classic rasteriser, re-derived and followed exactly):

* Frames. ``viewmats`` map world to camera in the OpenCV frame (x right, y down, z forward);
  ``Ks`` are pinhole intrinsics in pixels (``fx = K[0,0]``, ``fy = K[1,1]``, ``cx = K[0,2]``,
  ``cy = K[1,2]``; skew ignored). Pixel (row i, column j) is sampled at its centre
  ``(j + 0.5, i + 0.5)``.
* Covariance. ``quats`` (w, x, y, z) are normalised; ``Sigma = R diag(s)^2 R^T`` with ``scales`` the
  standard deviations. In the camera, ``Sigma_c = W Sigma W^T``.
* Culling. A Gaussian is dropped for a camera when its camera depth ``z < near_plane`` or
  ``z > far_plane``, when the blurred 2D covariance has ``det <= 0``, when its opacity is below
  1/255, when both radii are 0, or when its box lies off the image.
* EWA projection. ``mean2d = (fx x/z + cx, fy y/z + cy)``; ``Sigma2d = J Sigma_c J^T`` with the
  Jacobian of the perspective map taken at ``x/z``, ``y/z`` clamped to
  ``[-cx/fx - 0.3 t_x, (W - cx)/fx + 0.3 t_x]`` (and likewise in y), ``t_x = W / (2 fx)`` the tangent
  of the half field of view: 1.3 times the image's extent, which keeps Gaussians far off-screen from
  smearing across it. ``eps2d`` is then added to both diagonal entries (a low-pass filter); its
  inverse is the conic.
* Radius. ``extend = min(3.33, sqrt(2 ln(255 opacity)))`` standard deviations, the distance at which
  alpha falls to 1/255; per-axis radii ``ceil(extend * sqrt(Sigma2d_xx))`` (and yy). Every pixel where
  a Gaussian can contribute lies inside this box, so gsplat's 16 x 16 tile binning drops nothing
  that the skip rule below would keep; this backend enumerates the box's pixels directly.
* Compositing, front to back by camera depth ``z`` (ties by Gaussian index), per pixel:
  ``sigma = 0.5 d^T Sigma2d^-1 d`` with ``d = mean2d - pixel centre``;
  ``alpha = min(0.999, opacity * exp(-sigma))``; a Gaussian with ``sigma < 0`` or
  ``alpha < 1/255`` is skipped; if ``T * (1 - alpha) <= 1e-4`` the pixel stops and that Gaussian
  is not drawn (nor anything behind it); otherwise ``colour += alpha T c`` and ``T *= 1 - alpha``.
  ``render_alphas = 1 - T``; with ``backgrounds``, ``colour += T * background``.
* Modes. ``"RGB"``: the colours; ``"D"``: accumulated camera-space depth ``sum w z``; ``"ED"``: that
  divided by ``max(alpha, 1e-10)``; ``"RGB+D"``/``"RGB+ED"``: colours with the depth last (its
  background is 0).

The torch backend never builds a Gaussians x pixels tensor. It projects every Gaussian, sorts the
survivors by (image, depth), and in depth order enumerates the pixels of each Gaussian's box in
chunks of at most ENTRIES_PER_CHUNK box pixels (front to back, so a chunk skips pixels already
stopped and Gaussians whose box holds only stopped pixels). That pass, without gradients, finds the
exact set of drawn (pixel, Gaussian) pairs by a segmented scan of ``log(1 - alpha)`` per pixel. The
differentiable pass then recomputes alpha for the drawn pairs only and composites them chunk by
chunk behind the transmittance the earlier chunks left, with autograd through plain torch ops; with
more than DRAWN_PER_CHUNK drawn pairs each chunk is recomputed in the backward pass
(checkpointing), so memory stays bounded. Transmittance is accumulated in float64 whatever the
input dtype; alphas are computed in the input's precision (at least float32), so a contribution
within rounding of the 1/255 or 1e-4 thresholds may be decided differently from gsplat's float32
fast-math kernels. Gradients are those of the function above (zero through the 0.999 clamp and the
Jacobian's clamp, as in gsplat).
"""
from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint

_LOG = logging.getLogger(__name__)

ALPHA_THRESHOLD = 1.0 / 255.0  # contributions below this are skipped
TRANSMITTANCE_STOP = 1e-4  # a pixel stops before its transmittance would reach this
ALPHA_MAX = 0.999
MAX_EXTEND = 3.33  # standard deviations covered by the bounding box at full opacity
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "torch", "gsplat")

# Bounds on the torch backend's working set (entries are (pixel, Gaussian) candidates).
ENTRIES_PER_CHUNK = 1_000_000  # candidates enumerated at once in the no-grad pass
DRAWN_PER_CHUNK = 4_000_000  # more drawn pairs than this: chunks are recomputed in backward
_BOX_SIZES = tuple(2**k for k in range(14))  # boxes are padded to these sizes (fewer, larger groups run faster)
_FAR = 1e6  # pixel offset given to padding in a box: never passes the alpha test


def rasterize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    backgrounds: torch.Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    backend: Literal["auto", "torch", "gsplat"] = "auto",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Render Gaussians from C cameras (gsplat 1.5 ``rasterization``, classic mode; module docstring).

    Args (``...`` are batch dims shared by all inputs):
        means (..., N, 3) world units; quats (..., N, 4) wxyz, any norm > 0; scales (..., N, 3)
        standard deviations; opacities (..., N) in [0, 1]; colors (..., N, D) or per camera
        (..., C, N, D), any D; viewmats (..., C, 4, 4) world-to-camera, OpenCV frame; Ks (..., C, 3, 3)
        pixels; backgrounds (..., C, D) or None.
    Returns:
        render_colors (..., C, height, width, X) with X = D ("RGB"), 1 ("D", "ED") or D + 1 (depth
        last); render_alphas (..., C, height, width, 1); meta, a dict with gsplat's per-Gaussian
        projection ("radii" (..., C, N, 2) int32, "means2d", "depths", "conics", "opacities"), image
        size, "n_cameras", "n_batches" and "backend" (which one ran).
    Raises:
        ValueError on wrong shapes, non-finite input, zero quaternions, or unknown mode/backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds,
              near_plane, far_plane, eps2d)
    if backend == "gsplat" or (backend == "auto" and _gsplat_usable(means)):
        if not means.is_cuda:
            raise ValueError("backend='gsplat' needs CUDA tensors (gsplat is CUDA-only); use backend='torch'")
        try:
            return _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                     backgrounds, near_plane, far_plane, eps2d, render_mode)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - a broken gsplat build falls back once, loudly
            if backend == "gsplat":
                raise
            _disable_gsplat(f"gsplat failed at run time ({type(error).__name__}: {error})")
    return _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds,
                            near_plane, far_plane, eps2d, render_mode)


# ----------------------------------------------------------------------------------------------------
# Validation


def _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds,
              near_plane, far_plane, eps2d) -> None:
    tensors = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                   viewmats=viewmats, Ks=Ks)
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if means.dim() < 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be (..., N, 3), got {tuple(means.shape)}")
    batch, n = tuple(means.shape[:-2]), means.shape[-2]
    if viewmats.dim() < 3 or tuple(viewmats.shape[-2:]) != (4, 4) or tuple(viewmats.shape[:-3]) != batch:
        raise ValueError(f"viewmats must be {batch + ('C', 4, 4)}, got {tuple(viewmats.shape)}")
    c = viewmats.shape[-3]
    expected = {"quats": batch + (n, 4), "scales": batch + (n, 3), "opacities": batch + (n,), "Ks": batch + (c, 3, 3)}
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} must be {shape} (means are {tuple(means.shape)}, viewmats "
                             f"{tuple(viewmats.shape)}), got {tuple(tensors[name].shape)}")
    cs = tuple(colors.shape)
    if not ((colors.dim() == len(batch) + 2 and cs[:-1] == batch + (n,))
            or (colors.dim() == len(batch) + 3 and cs[:-1] == batch + (c, n))):
        raise ValueError(f"colors must be {batch + (n, 'D')} or per camera {batch + (c, n, 'D')}, got {cs}")
    if cs[-1] < 1:
        raise ValueError("colors need at least one channel")
    if backgrounds is not None:
        if not isinstance(backgrounds, torch.Tensor) or tuple(backgrounds.shape) != batch + (c, cs[-1]):
            shape = tuple(backgrounds.shape) if isinstance(backgrounds, torch.Tensor) else type(backgrounds).__name__
            raise ValueError(f"backgrounds must be {batch + (c, cs[-1])}, got {shape}")
        tensors["backgrounds"] = backgrounds
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("near_plane", near_plane), ("far_plane", far_plane), ("eps2d", eps2d)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if not 0 <= near_plane < far_plane:
        raise ValueError(f"need 0 <= near_plane < far_plane, got {near_plane}, {far_plane}")
    if eps2d < 0:
        raise ValueError(f"eps2d must be >= 0, got {eps2d}")
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} has non-finite values (NaN or inf)")
    if n and bool((quats.detach().abs().sum(-1) == 0).any()):
        raise ValueError("quats has an all-zero quaternion (it cannot be normalised)")


# ----------------------------------------------------------------------------------------------------
# Backend choice


_GSPLAT_STATE: dict[str, bool] = {}  # "ok": whether gsplat imports and runs, once decided
_LOGGED: set[str] = set()  # reasons already logged (each once per process)


def _log_once(why: str) -> None:
    if why not in _LOGGED:
        _LOGGED.add(why)
        _LOG.info("splat rasteriser: using the torch backend: %s", why)


def _disable_gsplat(why: str) -> None:
    _GSPLAT_STATE["ok"] = False
    _log_once(why)


def _gsplat_usable(means: torch.Tensor) -> bool:
    """Whether ``auto`` should try gsplat for these tensors (decided once per process)."""
    if not means.is_cuda:
        _log_once("tensors are not on CUDA (gsplat is CUDA-only)")
        return False
    if "ok" not in _GSPLAT_STATE:
        try:
            import gsplat  # noqa: F401  (lazy: CUDA-only dependency)
            _GSPLAT_STATE["ok"] = True
        except Exception as error:  # noqa: BLE001 - ImportError, or a failed extension build
            _disable_gsplat(f"gsplat does not import ({type(error).__name__}: {error})")
    return bool(_GSPLAT_STATE["ok"])


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds,
                      near_plane, far_plane, eps2d, render_mode):
    try:
        import gsplat
    except ImportError as error:
        raise ImportError("backend='gsplat' needs the gsplat package (pip install gsplat; CUDA only); "
                          "backend='torch' needs nothing") from error

    dtype = means.dtype
    f32 = [None if t is None else t.float() for t in (means, quats, scales, opacities, colors, viewmats, Ks, backgrounds)]
    m, q, s, o, col, vm, k, bg = f32
    render_colors, render_alphas, meta = gsplat.rasterization(
        m, q, s, o, col, vm, k, width, height, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
        backgrounds=bg, render_mode=render_mode, packed=False, rasterize_mode="classic", sh_degree=None)
    meta = dict(meta)
    meta["backend"] = "gsplat"
    return render_colors.to(dtype), render_alphas.to(dtype), meta


# ----------------------------------------------------------------------------------------------------
# Torch backend: projection


def quats_to_rotmats(quats: torch.Tensor) -> torch.Tensor:
    """(..., 4) wxyz quaternions of any non-zero norm -> (..., 3, 3) rotation matrices."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, -1).unflatten(-1, (3, 3))


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of (..., 4) wxyz quaternions, broadcasting: the rotation ``b`` then
    ``a``, so ``quats_to_rotmats(a * b) = quats_to_rotmats(a) @ quats_to_rotmats(b)``. Norms multiply."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


def _project(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane):
    """EWA projection of (B, N) Gaussians into (B, C) cameras.

    Returns means2d (B, C, N, 2), conics (B, C, N, 3) as (a, b, c) of the inverse blurred covariance,
    depths (B, C, N) camera z, radii (B, C, N, 2) int32 (0 = culled), all differentiable but radii.
    Culled entries keep finite placeholder values so that masked gradients stay finite.
    """
    rot = quats_to_rotmats(quats)  # (B, N, 3, 3)
    m = rot * scales[..., None, :]
    cov = m @ m.transpose(-1, -2)  # (B, N, 3, 3)
    w_rot, w_t = viewmats[..., :3, :3], viewmats[..., :3, 3]  # (B, C, 3, 3), (B, C, 3)
    mean_c = torch.einsum("bcij,bnj->bcni", w_rot, means) + w_t[:, :, None]
    x, y, z = mean_c.unbind(-1)
    depth_ok = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(depth_ok, z, torch.ones_like(z))
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]  # (B, C, 1)
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    # Jacobian at a clamped x/z, y/z: the linearisation is only trusted to 1.3x the view frustum.
    u = torch.minimum(torch.maximum(x / z_safe, -(cx / fx + 0.3 * tan_x)), (width - cx) / fx + 0.3 * tan_x)
    v = torch.minimum(torch.maximum(y / z_safe, -(cy / fy + 0.3 * tan_y)), (height - cy) / fy + 0.3 * tan_y)
    zeros = torch.zeros_like(z)
    jac = torch.stack([fx / z_safe, zeros, -fx * u / z_safe, zeros, fy / z_safe, -fy * v / z_safe], -1).unflatten(-1, (2, 3))
    t = jac @ w_rot[:, :, None]  # (B, C, N, 2, 3): world -> image, linearised
    cov2d = t @ cov[:, None] @ t.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], -1)

    with torch.no_grad():
        opac = opacities[:, None, :].expand_as(z)
        opac_ok = opac >= ALPHA_THRESHOLD
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=MAX_EXTEND)
        valid = depth_ok & det_ok & opac_ok
        rx = torch.ceil(extend * torch.sqrt(torch.where(valid, a, zeros).clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(torch.where(valid, c, zeros).clamp_min(0)))
        valid &= (rx > 0) | (ry > 0)
        mx, my = means2d[..., 0], means2d[..., 1]
        valid &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], -1).clamp(max=2**30).to(torch.int32) * valid[..., None]
    return means2d, conics, z, radii


# ----------------------------------------------------------------------------------------------------
# Torch backend: which (pixel, Gaussian) pairs are drawn (no gradients)


def _bucket(sizes: torch.Tensor) -> torch.Tensor:
    """The padded box size for each size (sizes beyond the table are their own bucket)."""
    table = torch.tensor(_BOX_SIZES, device=sizes.device)
    padded = table[torch.searchsorted(table, sizes.clamp(max=_BOX_SIZES[-1]))]
    return torch.where(sizes > _BOX_SIZES[-1], sizes, padded)


def _candidates(boxes: torch.Tensor, shape: torch.Tensor, width: int):
    """Pixels of each box where the alpha test passes, for a chunk of depth-sorted pairs.

    ``boxes`` (P, 6) floats: mean x, mean y, conic a, b, c, log(255 opacity); ``shape`` (P, >= 4)
    ints: first column, first row, box width, box height, unused, unused, id of the top-left pixel
    (any numbering with rows ``width`` apart). Boxes are grouped by
    padded size so each group is one dense (pairs, rows, cols) evaluation; padding sits _FAR away
    and fails the test. Returns (row of ``boxes``, pixel-in-image id, sigma) per hit.
    """
    bx, by = _bucket(shape[:, 2]), _bucket(shape[:, 3])
    stride = int(bx.max()) + 1
    key = by * stride + bx
    order = torch.argsort(key, stable=True)
    keys, counts = torch.unique_consecutive(key.index_select(0, order), return_counts=True)
    out_rows, out_pix, out_sigma = [], [], []
    start = 0
    for group_key, count in zip(keys.tolist(), counts.tolist()):
        sel = order[start:start + count]
        start += count
        h, w = divmod(group_key, stride)
        fb = boxes.index_select(0, sel)
        ib = shape.index_select(0, sel)
        mx, my, ca, cb, cc, log_thresh = fb[:, :6].unbind(1)
        x0, y0, wx, wy = ib[:, :4].unbind(1)
        base = ib[:, 6]
        cols = torch.arange(w, device=boxes.device, dtype=boxes.dtype)
        rows = torch.arange(h, device=boxes.device, dtype=boxes.dtype)
        # d = mean - pixel centre; padding beyond the true box is pushed _FAR away
        dx = (mx - x0.to(mx.dtype) - 0.5)[:, None] - cols
        dy = (my - y0.to(my.dtype) - 0.5)[:, None] - rows
        if w > 1:
            dx = dx.masked_fill(cols >= wx[:, None], _FAR)
        if h > 1:
            dy = dy.masked_fill(rows >= wy[:, None], _FAR)
        qx = (0.5 * ca)[:, None] * dx * dx  # (P, w)
        qy = (0.5 * cc)[:, None] * dy * dy  # (P, h)
        bdx = cb[:, None] * dx
        sigma = torch.addcmul(qy[:, :, None] + qx[:, None, :], dy[:, :, None], bdx[:, None, :])  # (P, h, w)
        hit = (sigma <= log_thresh[:, None, None]) & (sigma >= 0)
        flat = hit.view(-1).nonzero().squeeze(1)
        out_sigma.append(sigma.view(-1).index_select(0, flat))
        k = torch.div(flat, h * w, rounding_mode="floor")
        rem = flat - k * (h * w)
        out_rows.append(sel.index_select(0, k))
        if w == width:
            out_pix.append(base.index_select(0, k) + rem)
        else:
            r = torch.div(rem, w, rounding_mode="floor")
            out_pix.append(base.index_select(0, k) + rem + r * (width - w))
    return torch.cat(out_rows), torch.cat(out_pix), torch.cat(out_sigma)


def _segment_starts(sorted_keys: torch.Tensor) -> torch.Tensor:
    """Index of the first element of each element's run of equal keys (keys sorted)."""
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    idx = torch.arange(len(sorted_keys), device=sorted_keys.device)
    return torch.cummax(idx * new, 0).values


def _drawn_pairs(means2d, conics, opacities, depths, radii, width, height) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (pixel, pair) contributions that classic compositing draws, as chunks front to back.

    Inputs are flat over images: means2d (I, N, 2), conics (I, N, 3), opacities (I, N), depths (I, N),
    radii (I, N, 2). Returns a list of (pixel ids into I*H*W, flat pair ids into I*N), each sorted by
    pixel then depth; every pair of a chunk lies behind (or in another image than) every pair of the
    chunks before it.
    """
    device = means2d.device
    n_img, n = depths.shape
    flat_valid = ((radii[..., 0] > 0) & (radii[..., 1] > 0)).reshape(-1)
    pair_ids = flat_valid.nonzero().squeeze(1)
    if len(pair_ids) == 0:
        return []
    # front to back per image (stable: ties keep Gaussian order)
    pair_ids = pair_ids.index_select(0, torch.argsort(depths.reshape(-1).index_select(0, pair_ids), stable=True))
    pair_ids = pair_ids.index_select(0, torch.argsort(torch.div(pair_ids, n, rounding_mode="floor"), stable=True))
    img = torch.div(pair_ids, n, rounding_mode="floor")
    mx, my = means2d.reshape(-1, 2).index_select(0, pair_ids).unbind(-1)
    conic = conics.reshape(-1, 3).index_select(0, pair_ids)
    rx, ry = radii.reshape(-1, 2).index_select(0, pair_ids).to(mx.dtype).unbind(-1)
    log_thresh = torch.log(opacities.reshape(-1).index_select(0, pair_ids) / ALPHA_THRESHOLD)  # alpha >= 1/255 <=> sigma <= this
    # box of pixel centres within the radii (every pixel that can pass the alpha test)
    px0 = torch.ceil(mx - rx - 0.5).clamp(0, width).long()
    px1 = torch.floor(mx + rx - 0.5).clamp(-1, width - 1).long()
    py0 = torch.ceil(my - ry - 0.5).clamp(0, height).long()
    py1 = torch.floor(my + ry - 0.5).clamp(-1, height - 1).long()
    wx, wy = (px1 - px0 + 1).clamp_min(0), (py1 - py0 + 1).clamp_min(0)
    keep = ((wx > 0) & (wy > 0)).nonzero().squeeze(1)
    boxes = torch.stack([mx, my, conic[:, 0], conic[:, 1], conic[:, 2], log_thresh], 1).index_select(0, keep)
    hw = height * width
    corner = img * hw + py0 * width + px0  # global id of each box's top-left pixel
    shape = torch.stack([px0, py0, wx, wy, img, pair_ids, corner], 1).index_select(0, keep)
    total = len(keep)
    if total == 0:
        return []

    log_t = torch.zeros(n_img * hw, dtype=torch.float64, device=device)  # log transmittance so far
    done = torch.zeros(n_img * hw, dtype=torch.bool, device=device)
    stop = math.log(TRANSMITTANCE_STOP)
    chunks = []
    any_done = False
    bounds = torch.cumsum(_bucket(shape[:, 2]) * _bucket(shape[:, 3]), 0)
    start = 0
    while start < total:
        # the next chunk of pairs, in depth order, holding at most ENTRIES_PER_CHUNK padded pixels
        limit = (int(bounds[start - 1]) if start else 0) + ENTRIES_PER_CHUNK
        end = max(start + 1, int(torch.searchsorted(bounds, torch.tensor(limit, device=device), right=True)))
        fb, ib = boxes[start:end], shape[start:end]
        start = end
        if any_done:  # drop boxes whose pixels have all stopped
            alive = ~_box_all_done(done, ib[:, 4], ib[:, 0], ib[:, 1], ib[:, 2], ib[:, 3], width, height)
            idx = alive.nonzero().squeeze(1)
            if len(idx) == 0:
                continue
            if len(idx) < len(alive):
                fb, ib = fb.index_select(0, idx), ib.index_select(0, idx)
        rows, pix, sigma = _candidates(fb, ib, width)
        if any_done:  # drop pixels that have stopped
            live = (~done.index_select(0, pix)).nonzero().squeeze(1)
            if len(live) == 0:
                continue
            if len(live) < len(pix):
                rows, pix, sigma = rows.index_select(0, live), pix.index_select(0, live), sigma.index_select(0, live)
        # alpha test passed: sigma <= log(255 opacity), so exp(that - sigma) / 255 is opacity * exp(-sigma)
        alpha = (torch.exp(fb[:, 5].index_select(0, rows) - sigma) * ALPHA_THRESHOLD).clamp_(max=ALPHA_MAX)
        n_rows = len(ib)
        key, order = torch.sort(pix * n_rows + rows)  # by pixel, then depth (rows are in depth order)
        log_keep = torch.log1p(-alpha.index_select(0, order).double())
        pix = torch.div(key, n_rows, rounding_mode="floor")
        csum = torch.cumsum(log_keep, 0)
        first = _segment_starts(pix)
        after = log_t.index_select(0, pix) + csum - (csum - log_keep).index_select(0, first)  # log T after it
        drawn = after > stop
        stopped = (~drawn).nonzero().squeeze(1)
        drawn = drawn.nonzero().squeeze(1)
        pix_drawn = pix.index_select(0, drawn)
        log_t.index_add_(0, pix_drawn, log_keep.index_select(0, drawn))
        if len(stopped):
            done.index_fill_(0, pix.index_select(0, stopped), True)
            any_done = True
        if len(drawn):
            rows_drawn = key.index_select(0, drawn) - pix_drawn * n_rows
            chunks.append((pix_drawn, ib[:, 5].index_select(0, rows_drawn)))
    return chunks


def _box_all_done(done, img, px0, py0, wx, wy, width, height) -> torch.Tensor:
    """Whether every pixel in each box (I-flat pixel grid) has already stopped (summed-area table)."""
    images, local = torch.unique(img, return_inverse=True)  # a chunk is mostly one image: table for those only
    live = (~done).view(-1, height, width).index_select(0, images).to(torch.int32)
    table = torch.nn.functional.pad(live.cumsum(1).cumsum(2), (1, 0, 1, 0)).reshape(-1)  # (I', H + 1, W + 1)
    stride_i, stride_y = (height + 1) * (width + 1), width + 1
    base = local * stride_i
    y0, y1, x0, x1 = py0 * stride_y, (py0 + wy) * stride_y, px0, px0 + wx
    count = (table.index_select(0, base + y1 + x1) - table.index_select(0, base + y0 + x1)
             - table.index_select(0, base + y1 + x0) + table.index_select(0, base + y0 + x0))
    return count == 0


# ----------------------------------------------------------------------------------------------------
# Torch backend: differentiable compositing of the drawn pairs


def _composite(means2d, conics, opacities, features, log_t_before, pix, pair, width, height):
    """Weighted features of one chunk of drawn pairs (sorted by pixel then depth).

    means2d (P, 2), conics (P, 3), opacities (P,), features (P, F) flat over (image, Gaussian);
    log_t_before (M,) float64, each pair's pixel's log transmittance before this chunk; pix, pair (M,).
    Returns alpha_k T_k [features_k, 1] (M, F + 1) and log(1 - alpha_k) (M,) float64.
    """
    xy = means2d.index_select(0, pair)
    con = conics.index_select(0, pair)
    col = pix % width
    row = torch.div(pix, width, rounding_mode="floor") % height
    dx = xy[:, 0] - (col.to(xy.dtype) + 0.5)
    dy = xy[:, 1] - (row.to(xy.dtype) + 0.5)
    sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
    alpha = (opacities.index_select(0, pair) * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
    log_keep = torch.log1p(-alpha.double())
    exclusive = torch.cumsum(log_keep, 0) - log_keep
    first = _segment_starts(pix)
    before = log_t_before + exclusive - exclusive.index_select(0, first)
    weight = alpha * torch.exp(before).to(alpha.dtype)
    values = torch.cat([features.index_select(0, pair), torch.ones_like(weight)[:, None]], -1) * weight[:, None]
    return values, log_keep


def _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds,
                     near_plane, far_plane, eps2d, render_mode):
    dtype = torch.promote_types(torch.promote_types(means.dtype, colors.dtype), torch.float32)
    batch = tuple(means.shape[:-2])
    n, c = means.shape[-2], viewmats.shape[-3]
    nb = math.prod(batch)
    d = colors.shape[-1]
    cast = lambda t, shape: t.to(dtype).reshape(shape)  # noqa: E731
    means_, quats_, scales_ = cast(means, (nb, n, 3)), cast(quats, (nb, n, 4)), cast(scales, (nb, n, 3))
    opac_ = cast(opacities, (nb, n))
    viewmats_, ks_ = cast(viewmats, (nb, c, 4, 4)), cast(Ks, (nb, c, 3, 3))
    means2d, conics, depths, radii = _project(means_, quats_, scales_, opac_, viewmats_, ks_, width, height,
                                              eps2d, near_plane, far_plane)
    n_img = nb * c
    if colors.dim() == len(batch) + 2:
        colors_ = cast(colors, (nb, 1, n, d)).expand(nb, c, n, d)
    else:
        colors_ = cast(colors, (nb, c, n, d))
    if render_mode in ("RGB+D", "RGB+ED"):
        features = torch.cat([colors_, depths[..., None]], -1)
    elif render_mode in ("D", "ED"):
        features = depths[..., None]
    else:
        features = colors_
    f = features.shape[-1]
    opac_img = opac_[:, None, :].expand(nb, c, n)

    with torch.no_grad():
        chunks = _drawn_pairs(means2d.detach().reshape(n_img, n, 2), conics.detach().reshape(n_img, n, 3),
                              opac_img.detach().reshape(n_img, n), depths.detach().reshape(n_img, n),
                              radii.reshape(n_img, n, 2), width, height)
    n_pixels = n_img * height * width
    flat = (means2d.reshape(-1, 2), conics.reshape(-1, 3), opac_img.reshape(-1), features.reshape(-1, f))
    n_drawn = sum(len(pix) for pix, _ in chunks)
    # recompute chunks in backward (checkpointing) when keeping every chunk's graph would be large
    recompute = torch.is_grad_enabled() and n_drawn > DRAWN_PER_CHUNK
    acc = torch.zeros(n_pixels, f + 1, dtype=dtype, device=means.device)
    log_t = torch.zeros(n_pixels, dtype=torch.float64, device=means.device)
    for pix, pair in chunks:
        # only chunk-sized tensors cross the checkpoint, so what autograd keeps grows with the drawn
        # pairs, never with chunks x pixels
        log_t_before = log_t.index_select(0, pix)
        if recompute:
            values, log_keep = checkpoint(_composite, *flat, log_t_before, pix, pair, width, height,
                                          use_reentrant=False)
        else:
            values, log_keep = _composite(*flat, log_t_before, pix, pair, width, height)
        # in place: index_add_ and index_select keep only indices for backward, so no copies per chunk
        acc.index_add_(0, pix, values)
        log_t.index_add_(0, pix, log_keep)
    if not chunks and torch.is_grad_enabled():
        # nothing drawn: keep the outputs attached to the inputs so backward() still works (zero grads)
        acc = acc + 0.0 * sum(t.sum() for t in flat)
    acc = acc.view(*batch, c, height, width, f + 1)
    render_colors, render_alphas = acc[..., :f], acc[..., f:]
    if backgrounds is not None:
        bg = backgrounds.to(dtype)
        if render_mode in ("RGB+D", "RGB+ED"):
            bg = torch.cat([bg, torch.zeros_like(bg[..., :1])], -1)
        elif render_mode in ("D", "ED"):
            bg = torch.zeros_like(bg[..., :1])
        render_colors = render_colors + (1 - render_alphas) * bg[..., None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat([render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], -1)
    meta = {
        "radii": radii.view(*batch, c, n, 2),
        "means2d": means2d.view(*batch, c, n, 2),
        "depths": depths.view(*batch, c, n),
        "conics": conics.view(*batch, c, n, 3),
        "opacities": opac_img.reshape(*batch, c, n),
        "width": width,
        "height": height,
        "n_batches": nb,
        "n_cameras": c,
        "n_drawn": n_drawn,
        "backend": "torch",
    }
    return render_colors, render_alphas, meta
