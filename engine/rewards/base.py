"""The reward interface shared by every reward and by the aligner."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..render.types import RenderOutput


class Reward(ABC):
    """A per-asset score of rendered views. Subclasses implement :meth:`score_views`."""

    name: str = "reward"
    differentiable: bool = True
    # The RenderOutput channels score_views reads: a renderer that cannot make one (Cycles gives no
    # depth or normals here) refuses the reward up front instead of feeding it placeholders.
    channels: frozenset[str] = frozenset({"rgb", "alpha"})

    @abstractmethod
    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        """Scores (B, V): one per asset and view."""

    def __call__(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        """Per-asset reward (B,), the mean over views."""
        b = renders.rgb.shape[0]
        if len(prompts) != b:
            raise ValueError(f"{b} rendered assets but {len(prompts)} prompts")
        return self.score_views(renders, prompts).mean(dim=1)


class WeightedSum(Reward):
    """sum_i w_i * reward_i; differentiable only if every part is."""

    def __init__(self, parts: list[tuple[float, Reward]]):
        if not parts:
            raise ValueError("WeightedSum needs at least one reward")
        self.parts = parts
        self.name = " + ".join(f"{w:g}*{r.name}" for w, r in parts)
        self.differentiable = all(r.differentiable for _, r in parts)
        self.channels = frozenset().union(*(r.channels for _, r in parts))

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        return sum(w * r.score_views(renders, prompts) for w, r in self.parts)
