"""The residual flow network of the full Nabla-GFlowNet (optional; R2D3 trains without it).

g_phi(x_t, t) has the latent's shape and stands for the gradient of the log residual flow at x_t. Its
last layer starts at zero, so training starts from R2D3's forward-only objective. A plain MLP over
the flattened latent keeps it model-agnostic (any latent layout); it is small beside the denoiser
for the latents of the embedded model (2048 numbers) but would need a convolutional variant for
image-sized latents.
"""
from __future__ import annotations

import math

import torch
from diffusers.models.embeddings import Timesteps
from torch import nn


class ResidualFlow(nn.Module):
    def __init__(self, latent_shape: tuple[int, ...], hidden: int = 256):
        super().__init__()
        self.latent_shape = tuple(latent_shape)
        dim = math.prod(self.latent_shape)
        self.time_proj = Timesteps(64, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.net = nn.Sequential(nn.Linear(dim + 64, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, *latent_shape), t (B,) timesteps -> (B, *latent_shape)."""
        h = torch.cat([x.flatten(1), self.time_proj(t).to(x.dtype)], dim=1)
        return self.net(h).view(x.shape)
