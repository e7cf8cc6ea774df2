"""DiffSplat's alignment numbers (pure Python: the registry imports it).

UNTUNED HERE: no DiffSplat weights can be loaded on the project's machines. The numbers are the
paper's for DiffSplat-PixArt-Sigma (ALGORITHM.md, "Hyperparameters reported"), carried over where the
engine has the same reward and the same meaning of the scale: beta multiplies the reward in
Nabla-R2D3's loss as the paper's reward scale does. The paper's trust-region weights (3e3 to 1e4) and
its normal-estimator reward have no counterpart in AlignmentDefaults / the engine's rewards, and
rewards without a paper number (palette, critic, clip-score, ...) keep the registry's fallback beta.
Tune on real weights (scripts/check_real_backbone.py prints rewards per round) and record the sweep
here and in docs/backbones.md.
"""
from __future__ import annotations

from ..tuning import AlignmentDefaults

ALIGNMENT = AlignmentDefaults(
    beta={"aesthetic": 2e6, "hpsv2": 5e7, "dnc": 5e5},  # HPSv2: the code's 5e7 (the text says 1e7)
    nabla_lr={"aesthetic": 3e-4, "hpsv2": 1e-4, "dnc": 5e-4},  # aesthetic: the code's 3e-4 (the text says 1e-4)
    # Open text: four simple coloured objects, the alignment job's prompts when the user names none.
    prompts=("a red cube", "a green cone", "a blue torus", "a yellow pyramid"),
)
