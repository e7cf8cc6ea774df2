"""The residual flow network of the full Nabla-GFlowNet (optional; R2D3 trains without it).

g_phi(x_t, t) has the latent's shape and stands for the gradient of the log residual flow at x_t:
grad log F(x_t) = beta w grad R(x0_hat(x_t)) + g_phi(x_t). Its last layer starts at zero, so training
starts from R2D3's forward-only objective. Its shape follows the latent, as the paper's code uses a
small copy of the denoiser's architecture: a vector latent (B, d) gets an MLP; a latent with channels
and 1-3 spatial axes (B, C, *S), images or volumes, gets a small convolutional network with the
timestep added to every block (FiLM), so its size does not grow with the latent's.
"""
from __future__ import annotations

import math

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class _Block(nn.Module):
    def __init__(self, conv, width: int, time_dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(8, width), nn.GroupNorm(8, width)
        self.conv1, self.conv2 = conv(width, width, 3, padding=1), conv(width, width, 3, padding=1)
        self.film = nn.Linear(time_dim, 2 * width)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(temb).view(*temb.shape[:1], -1, *[1] * (h.dim() - 2)).chunk(2, dim=1)
        y = self.conv1(nn.functional.silu(self.norm1(h)))
        y = self.norm2(y) * (1 + scale) + shift
        return h + self.conv2(nn.functional.silu(y))


class ResidualFlow(nn.Module):
    def __init__(self, latent_shape: tuple[int, ...], hidden: int | None = None, blocks: int = 2):
        super().__init__()
        self.latent_shape = tuple(latent_shape)
        self.time_proj = Timesteps(64, flip_sin_to_cos=True, downscale_freq_shift=0)
        spatial = len(self.latent_shape) - 1
        if spatial == 0:
            dim, hidden = self.latent_shape[0], hidden or 256
            self.net = nn.Sequential(nn.Linear(dim + 64, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))
            last = self.net[-1]
        elif spatial in CONV:
            conv, width, channels = CONV[spatial], hidden or 32, self.latent_shape[0]
            self.time_embed = TimestepEmbedding(64, 4 * width)
            self.conv_in = conv(channels, width, 3, padding=1)
            self.blocks = nn.ModuleList(_Block(conv, width, 4 * width) for _ in range(blocks))
            self.norm_out = nn.GroupNorm(8, width)
            self.conv_out = conv(width, channels, 3, padding=1)
            last = self.conv_out
        else:
            raise ValueError(f"no residual flow network for latents of shape {self.latent_shape}")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, *latent_shape), t (B,) timesteps (0 for clean latents) -> (B, *latent_shape)."""
        tp = self.time_proj(t.reshape(-1).expand(x.shape[0])).to(x.dtype)
        if len(self.latent_shape) == 1:
            return self.net(torch.cat([x, tp], dim=1))
        temb = self.time_embed(tp)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))

    @property
    def parameter_count(self) -> int:
        return sum(math.prod(p.shape) for p in self.parameters())
