"""The embedded model's denoiser: a small PixArt-style diffusion transformer over 3D latent patches.

The latent (B, 4, 8, 8, 8) is cut into 2^3 patches (64 tokens). Blocks are diffusers'
``BasicTransformerBlock`` with ``ada_norm_single`` conditioning, exactly as in PixArt-Sigma (the
DiffSplat denoiser we expect to host later), so LoRA target names (``to_q``, ``to_k``, ``to_v``,
``to_out.0``, ``ff.net.0.proj``, ``ff.net.2``, ``proj_out``) carry over. diffusers has no 3D patch
transformer, hence the thin patchify/unpatchify written here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn


@dataclass(frozen=True)
class DenoiserConfig:
    latent_channels: int = 4
    latent_resolution: int = 8
    patch_size: int = 2
    width: int = 128
    depth: int = 4
    heads: int = 4
    text_dim: int = 128


class LatentTransformer3D(nn.Module):
    def __init__(self, config: DenoiserConfig = DenoiserConfig()):
        super().__init__()
        self.config = config
        w, p, c = config.width, config.patch_size, config.latent_channels
        self.grid = config.latent_resolution // p
        patch_dim = c * p**3
        self.patch_embed = nn.Linear(patch_dim, w)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid**3, w) * 0.02)
        self.time_proj = Timesteps(w, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(w, w)
        self.pooled_embed = nn.Linear(config.text_dim, w)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(w, 6 * w))
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                w, config.heads, w // config.heads, cross_attention_dim=config.text_dim,
                norm_type="ada_norm_single", attention_bias=True,
            )
            for _ in range(config.depth)
        )
        self.norm_out = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, w) / w**0.5)
        self.proj_out = nn.Linear(w, patch_dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _, _ = x.shape
        p, g = self.config.patch_size, self.grid
        x = x.view(b, c, g, p, g, p, g, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, g**3, c * p**3)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        p, g, c = self.config.patch_size, self.grid, self.config.latent_channels
        x = x.view(b, g, g, g, c, p, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, c, g * p, g * p, g * p)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """latents (B, 4, 8, 8, 8), timesteps (B,) in [0, 1000), hidden (B, L, text_dim), pooled (B, text_dim)."""
        b = latents.shape[0]
        x = self.patch_embed(self._patchify(latents)) + self.pos_embed
        t = timesteps.expand(b) if timesteps.dim() == 0 or timesteps.shape[0] == 1 else timesteps
        emb = self.time_embed(self.time_proj(t).to(x.dtype)) + self.pooled_embed(pooled)
        t6 = self.t_block(emb)
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states=hidden, timestep=t6)
        shift, scale = (self.scale_shift_table[None] + emb[:, None]).chunk(2, dim=1)
        x = self.norm_out(x) * (1 + scale) + shift
        return self._unpatchify(self.proj_out(x))
