"""Rewards: score rendered views of assets, per asset, differentiably where the reward allows.

Every reward is called as ``reward(renders, prompts) -> (B,)`` on a ``RenderOutput`` whose images
are (B, V, C, R, R); per-view scores are averaged over the V views. ``WeightedSum`` combines
rewards. Images stay torch tensors end to end so gradients reach the renderer.

Build rewards by name with the registry (``build_reward("palette", {"palette": "#ff0000"})``,
``build_reward_expression("0.5*dnc + palette", options)``, ``format_reward_list()``); the CLIP
reward models (``engine.rewards.clip_rewards``), the prompt critic and user plugins
(``engine.rewards.plugin``) are imported only when built.
"""
from .base import Reward, WeightedSum
from .errors import RewardConfigError, RewardModelMissing
from .geometry import DepthNormalConsistency
from .appearance import PaletteReward, ReferenceImageReward
from .registry import (
    build_reward,
    build_reward_expression,
    format_reward_list,
    list_rewards,
    parse_option_assignments,
)

__all__ = [
    "Reward",
    "WeightedSum",
    "DepthNormalConsistency",
    "PaletteReward",
    "ReferenceImageReward",
    "RewardConfigError",
    "RewardModelMissing",
    "build_reward",
    "build_reward_expression",
    "format_reward_list",
    "list_rewards",
    "parse_option_assignments",
]
