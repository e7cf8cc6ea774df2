"""Numbers tuned per model: what an alignment job uses when the user leaves them unset.

They belong to the model (a reward scale that suits one latent space and denoiser means nothing for
another), so each registry entry carries its own (engine/models/__init__.py). Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AlignmentDefaults:
    """``beta``: reward scale per reward name (``fallback_beta`` for others); ``lr``: learning rate per
    method where it differs from AlignConfig's; ``nabla_lr``: Nabla-R2D3's per reward, where it differs;
    ``prompts``: what an alignment job trains on when the user names none."""

    beta: dict[str, float] = field(default_factory=dict)
    fallback_beta: float = 1e3
    lr: dict[str, float] = field(default_factory=dict)
    nabla_lr: dict[str, float] = field(default_factory=dict)
    prompts: tuple[str, ...] = ()  # empty: a job must name its prompts

    def beta_for(self, reward: str) -> float:
        return self.beta.get(reward, self.fallback_beta)

    def lr_for(self, method: str, reward: str) -> float | None:
        """The tuned rate of ``method`` on ``reward``; None: AlignConfig's default."""
        if method == "nabla" and reward in self.nabla_lr:
            return self.nabla_lr[reward]
        return self.lr.get(method)
