"""Appearance rewards an artist can steer: match a colour palette."""
from __future__ import annotations

import torch

from ..render.volume import RenderOutput
from .base import Reward


class PaletteReward(Reward):
    """Negative mean distance from each foreground pixel's albedo to its nearest palette colour.

    ``palette`` is a list of sRGB colours in [0, 1]. The nearest colour is a soft minimum
    (temperature ``softness``) so every palette entry receives gradient. Range: [-sqrt(3), 0].
    """

    name = "palette"

    def __init__(self, palette: list[tuple[float, float, float]], softness: float = 0.05, alpha_threshold: float = 0.5):
        colours = torch.as_tensor(palette, dtype=torch.float32)
        if colours.dim() != 2 or colours.shape[1] != 3 or len(colours) == 0:
            raise ValueError("palette must be a non-empty list of (r, g, b) colours")
        if (colours < 0).any() or (colours > 1).any():
            raise ValueError("palette colours must lie in [0, 1]")
        self.palette = colours
        self.softness = softness
        self.alpha_threshold = alpha_threshold

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        albedo = renders.albedo.permute(0, 1, 3, 4, 2)  # (B, V, R, R, 3), premultiplied by alpha
        alpha = renders.alpha[:, :, 0]
        colour = albedo / alpha[..., None].clamp_min(1e-6)
        palette = self.palette.to(colour.device, colour.dtype)
        dist = (colour[..., None, :] - palette).pow(2).sum(-1).add(1e-12).sqrt()  # (B, V, R, R, K)
        nearest = -self.softness * torch.logsumexp(-dist / self.softness, dim=-1)
        m = (alpha > self.alpha_threshold).to(colour.dtype)
        return -(nearest * m).sum((-1, -2)) / m.sum((-1, -2)).clamp_min(1.0)
