"""The embedded model's 3D autoencoder: field grid <-> latent grid (4 x 8^3).

Encoder: a strided 3D CNN from a 32^3 field (truncated SDF + sRGB) to a diagonal Gaussian
posterior over a 4 x 8 x 8 x 8 latent. Decoder: a 3D CNN lifts the latent to a 32-channel feature
grid at 16^3; a point MLP reads trilinearly interpolated features plus a Fourier encoding of the
point and returns the field there. Decoding is therefore resolution-free: the same latent yields a
32^3 grid for rendering or a 64^3 grid for meshing, and it is differentiable end to end.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .procedural import grid_points


@dataclass(frozen=True)
class AutoencoderConfig:
    latent_channels: int = 4
    latent_resolution: int = 8
    input_resolution: int = 32
    feature_channels: int = 32
    hidden: int = 64
    fourier_bands: int = 4


class FieldAutoencoder(nn.Module):
    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.config = config
        c, h, f = config.latent_channels, config.hidden, config.feature_channels
        self.encoder = nn.Sequential(
            nn.Conv3d(4, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv3d(32, h, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv3d(h, h, 3, padding=1), nn.SiLU(),
            nn.Conv3d(h, 2 * c, 1),
        )
        self.trunk = nn.Sequential(
            nn.Conv3d(c, h, 3, padding=1), nn.SiLU(),
            nn.Conv3d(h, h, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose3d(h, f, 2, stride=2), nn.SiLU(),
            nn.Conv3d(f, f, 3, padding=1),
        )
        in_dim = f + 3 + 6 * config.fourier_bands
        self.point_mlp = nn.Sequential(nn.Linear(in_dim, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 4))

    def encode(self, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fields (B, 4, 32, 32, 32) -> posterior mean and log-variance, each (B, 4, 8, 8, 8)."""
        mean, logvar = self.encoder(fields).chunk(2, dim=1)
        return mean, logvar.clamp(-12.0, 6.0)

    def features(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, 4, 8, 8, 8) -> feature grid (B, F, 16, 16, 16)."""
        return self.trunk(latents)

    def query(self, features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Field values (B, N, 4) = (tsdf in [-1, 1], sRGB in [0, 1]) at points (B, N, 3) in [-1, 1]^3."""
        b, n, _ = points.shape
        grid = points.view(b, n, 1, 1, 3).to(features.dtype)
        feat = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return self._head(feat.view(b, features.shape[1], n).transpose(1, 2), points)

    def _head(self, feat: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The point MLP on interpolated features (B, N, F) and their points (B, N, 3) -> (B, N, 4)."""
        out = self.point_mlp(torch.cat([feat, self._encoding(points).expand(feat.shape[0], -1, -1)], -1))
        return torch.cat([torch.tanh(out[..., :1]), torch.sigmoid(out[..., 1:])], -1)

    def decode_grid(self, latents: torch.Tensor, resolution: int = 32, chunk: int = 65536) -> torch.Tensor:
        """latents (B, 4, 8, 8, 8) -> field grid (B, 4, R, R, R) in (z, y, x) layout over [-1, 1]^3.

        The same field as :meth:`query` at the grid's points, computed the way the aligner can afford
        it (it decodes and backpropagates a grid per reward-gradient state; docs/method.md, "Round
        cost"): the points are the same for every latent, so the trilinear lookup of the feature grid
        is one sparse product for the whole batch (``engine.render.volume_lookup``), and the part of
        the point MLP's first layer that reads the point's own encoding is computed once per grid
        point, not once per latent. ``chunk`` bounds the grid points per MLP call (peak memory).
        Off the CPU it interpolates with F.interpolate and runs :meth:`_head` per latent, as before
        (the sparse path was measured on CPU only)."""
        from ...render.volume_lookup import shared_trilinear_rows

        features = self.features(latents)  # (B, F, 16, 16, 16)
        if latents.device.type != "cpu":
            feats = F.interpolate(features, size=(resolution,) * 3, mode="trilinear", align_corners=True)
            feats = feats.flatten(2).transpose(1, 2)  # (B, R^3, F), z-major like grid_points
            pts = grid_points(resolution).to(latents.device, latents.dtype).reshape(1, -1, 3)
            out = torch.cat([self._head(feats[:, i : i + chunk], pts[:, i : i + chunk]) for i in range(0, pts.shape[1], chunk)], 1)
            return out.transpose(1, 2).reshape(latents.shape[0], 4, resolution, resolution, resolution)
        b, f = features.shape[:2]
        pts = grid_points(resolution).to(latents.device, latents.dtype).reshape(-1, 3)  # z-major like the grid
        first, hidden, last = self.point_mlp[0], self.point_mlp[2], self.point_mlp[4]
        w_feat, w_point = first.weight[:, :f], first.weight[:, f:]
        out = []
        for i in range(0, pts.shape[0], chunk):
            p = pts[i : i + chunk]
            feats = shared_trilinear_rows(features, p)  # (n, B, F)
            point_part = F.linear(self._encoding(p), w_point, first.bias)  # (n, H): the same for every latent
            h = F.silu(F.linear(feats, w_feat) + point_part[:, None])
            h = F.silu(hidden(h))
            out.append(last(h))  # (n, B, 4)
        raw = torch.cat(out, 0)
        field = torch.cat([torch.tanh(raw[..., :1]), torch.sigmoid(raw[..., 1:])], -1)
        return field.permute(1, 2, 0).reshape(b, 4, resolution, resolution, resolution)

    def _encoding(self, points: torch.Tensor) -> torch.Tensor:
        """The point MLP's input besides the features: the point and its Fourier features, (..., 3 + 6 bands)."""
        freqs = (2.0 ** torch.arange(self.config.fourier_bands, device=points.device, dtype=points.dtype)) * torch.pi
        angles = (points[..., None] * freqs).flatten(-2)
        return torch.cat([points, angles.sin(), angles.cos()], -1)
