"""Example reward plugin: warm colours on an object that fills a chosen share of the frame.

Build it with ``engine.rewards.build_reward("plugin", {"path": "docs/examples/reward_plugin.py"})``;
on a command line the reward is ``plugin`` with the option ``plugin.path=docs/examples/reward_plugin.py``.
The contract (arguments, shapes, units, return value) is documented in ``engine/rewards/plugin.py``.
Everything below is plain differentiable torch, so gradient-based training can use it.
"""
import torch

NAME = "warm-and-framed"
DIFFERENTIABLE = True

TARGET_COVERAGE = 0.3  # share of the image the object should cover


def reward(images: torch.Tensor, alpha: torch.Tensor, depth: torch.Tensor, normal: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """images (B, V, 3, R, R) in [0, 1], alpha (B, V, 1, R, R) -> scores (B, V), higher is better."""
    a = alpha[:, :, 0]  # (B, V, R, R)
    red, blue = images[:, :, 0], images[:, :, 2]
    # Mean red-minus-blue over the object's pixels, in [-1, 1]: warm colours score high.
    warmth = ((red - blue) * a).sum((-1, -2)) / a.sum((-1, -2)).clamp_min(1.0)
    # Penalise an object that is much smaller or larger than the target share of the frame.
    coverage = a.mean((-1, -2))
    framing = -((coverage - TARGET_COVERAGE) / TARGET_COVERAGE) ** 2
    return warmth + 0.25 * framing
