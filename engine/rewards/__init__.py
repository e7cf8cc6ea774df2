"""Rewards: score rendered views of assets, per asset, differentiably where the reward allows.

Every reward is called as ``reward(renders, prompts) -> (B,)`` on a ``RenderOutput`` whose images
are (B, V, C, R, R); per-view scores are averaged over the V views. ``WeightedSum`` combines
rewards. Images stay torch tensors end to end so gradients reach the renderer.
"""
from .base import Reward, WeightedSum
from .geometry import DepthNormalConsistency
from .appearance import PaletteReward

__all__ = ["Reward", "WeightedSum", "DepthNormalConsistency", "PaletteReward"]
