"""DiffSplat's multi-view self-attention, as an attention processor on a stock diffusers transformer.

DiffSplat's denoiser is PixArt-Sigma's transformer with one change: in every block's self-attention
the V views of a sample attend to each other, their tokens joined into one sequence
(``(B*V, N, D) -> (B, V*N, D)`` for queries, keys and values, split back after the output
projection). Cross-attention to the prompt stays per view. Weights and checkpoint keys are untouched,
so a processor is all it takes (official: extensions/diffusers_diffsplat/models/mv_attention*.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class MultiViewSelfAttention:
    """Self-attention over all ``views`` views of each sample; for ``attn1`` of PixArt's blocks.

    The batch axis of the hidden states (B*V, N, D) must hold each sample's views consecutively
    (sample-major), as ``DiffSplatModel.denoise`` lays them out.
    """

    def __init__(self, views: int):
        if views < 1:
            raise ValueError("views must be >= 1")
        self.views = int(views)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("MultiViewSelfAttention is for self-attention without a mask (PixArt's attn1)")
        if hidden_states.dim() != 3 or hidden_states.shape[0] % self.views:
            raise ValueError(f"hidden states must be (B*{self.views}, N, D), got {tuple(hidden_states.shape)}")
        residual = hidden_states
        bv, n, _ = hidden_states.shape
        b = bv // self.views

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B*V, N, H*d) -> (B, H, V*N, d): views joined
            return x.reshape(b, self.views * n, attn.heads, -1).transpose(1, 2)

        query, key, value = (heads(proj(hidden_states)) for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, self.views * n, -1).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        out = out.reshape(bv, n, -1)  # back to one row per view
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def use_multiview_attention(transformer, views: int) -> None:
    """Give every ``attn1`` of ``transformer``'s blocks the multi-view processor; ``attn2`` keeps its own."""
    processor = MultiViewSelfAttention(views)
    for block in transformer.transformer_blocks:
        block.attn1.set_processor(processor)
