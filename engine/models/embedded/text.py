"""The embedded model's prompt encoder: one learned embedding per grammar slot and word.

A prompt is three slots (size, colour, shape); a missing slot holds the slot's "any" token, and the
unconditional prompt is "any" in every slot. A real backbone would put CLIP or T5 here; the
grammar is small enough that a lookup table plus slot-position embeddings carries all it says.
"""
from __future__ import annotations

import torch
from torch import nn

from .grammar import COLOURS, SHAPES, SIZES, Prompt, parse_prompt

SLOTS: tuple[tuple[str, ...], ...] = (("any",) + SIZES, ("any",) + tuple(COLOURS), ("any",) + SHAPES)


def prompt_ids(prompt: Prompt | None) -> list[int]:
    """Slot-local word ids [size, colour, shape]; 0 is "any". ``None`` is the unconditional prompt."""
    if prompt is None:
        return [0, 0, 0]
    words = (prompt.size, prompt.colour, prompt.shape)
    return [SLOTS[i].index(w) if w else 0 for i, w in enumerate(words)]


class SlotTextEncoder(nn.Module):
    """ids (B, 3) -> hidden (B, 3, dim) and pooled (B, dim)."""

    def __init__(self, dim: int = 128):
        super().__init__()
        self.offsets = [0]
        for slot in SLOTS[:-1]:
            self.offsets.append(self.offsets[-1] + len(slot))
        self.embed = nn.Embedding(sum(len(s) for s in SLOTS), dim)
        self.position = nn.Parameter(torch.zeros(len(SLOTS), dim))
        nn.init.normal_(self.embed.weight, std=0.5)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = torch.tensor(self.offsets, device=ids.device)
        hidden = self.embed(ids + offsets) + self.position
        return hidden, hidden.mean(dim=1)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Parse prompts (raises ``PromptError``) into ids (B, 3)."""
        return torch.tensor([prompt_ids(parse_prompt(p)) for p in prompts], dtype=torch.long)
