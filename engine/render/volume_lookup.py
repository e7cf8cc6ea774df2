"""Trilinear lookups of a batch of voxel volumes at points shared by the whole batch.

When every field of a batch is rendered from the same cameras (the aligner's reward gradients: all
chosen transitions of a micro-batch share the round's views), the sample points of every ray are the
same for each field, so the trilinear weights and corner indices are the same too. Written as a
sparse matrix M (N points x D*H*W voxels, 8 weights a row), the lookup of B volumes of C channels is
one sparse-dense product M @ V (V: voxels x B*C), and its backward one product with M^T. That is
the same arithmetic as ``F.grid_sample(mode="bilinear", padding_mode="border", align_corners=True)``
on each field (the same weights, summed in the same order), done once for the batch instead of per
field; grid_sample's CPU backward (a scatter per point and field) was most of a render's backward
(docs/method.md, "Round cost").
"""
from __future__ import annotations

import warnings

import torch


def trilinear_matrix(points: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Sparse CSR (N, D*H*W) of trilinear weights at ``points`` (N, 3) = (x, y, z) in [-1, 1]^3
    (outside: clamped to the border, as grid_sample's "border" padding) on a (D, H, W) = (z, y, x)
    grid whose first and last voxels sit at -1 and 1 (align_corners=True). Rows sum to 1."""
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
    d, h, w = size
    if min(size) < 1:
        raise ValueError(f"grid size must be positive, got {size}")
    extent = torch.tensor([w - 1, h - 1, d - 1], dtype=points.dtype, device=points.device)
    u = (points.clamp(-1.0, 1.0) + 1.0) / 2.0 * extent  # voxel coordinates, in [0, size - 1]
    # The lower corner, at most size - 2, so the upper one stays inside (its weight is 0 at the last voxel).
    lower = u.floor().clamp(min=torch.zeros_like(extent), max=(extent - 1).clamp_min(0))
    frac = u - lower
    i0 = lower.long()
    columns, values = [], []
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                x = (i0[:, 0] + dx).clamp(max=w - 1)
                y = (i0[:, 1] + dy).clamp(max=h - 1)
                z = (i0[:, 2] + dz).clamp(max=d - 1)
                columns.append((z * h + y) * w + x)
                values.append((frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
                              * (frac[:, 2] if dz else 1 - frac[:, 2]))
    n = points.shape[0]
    crow = torch.arange(0, 8 * n + 1, 8, device=points.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is long-standing
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, torch.stack(columns, 1).reshape(-1), torch.stack(values, 1).reshape(-1),
                                       (n, d * h * w), check_invariants=False)


class _SharedLookup(torch.autograd.Function):
    """M @ V with its backward M^T @ grad (M constant)."""

    @staticmethod
    def forward(ctx, voxels: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        ctx.matrix = matrix
        return matrix @ voxels

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.matrix.t().to_sparse_csr() @ grad.contiguous(), None


def shared_trilinear(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear values (B, C, N) of ``volume`` (B, C, D, H, W) at ``points`` (N, 3) shared by the
    batch, equal to grid_sample's bilinear / border / align_corners=True lookup of each field at
    those points. Differentiable in ``volume`` (not in ``points``)."""
    b, c = volume.shape[:2]
    return shared_trilinear_rows(volume, points).view(-1, b * c).t().contiguous().view(b, c, -1)


def shared_trilinear_rows(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """:func:`shared_trilinear` laid out point-major: (N, B, C), contiguous (no transpose copy), for
    callers that go on with per-point matrix products (the embedded decoder's point MLP)."""
    b, c = volume.shape[:2]
    matrix = trilinear_matrix(points.detach().to(volume.dtype), tuple(volume.shape[2:]))
    voxels = volume.reshape(b * c, -1).t().contiguous()  # (D*H*W, B*C)
    return _SharedLookup.apply(voxels, matrix).view(-1, b, c)
