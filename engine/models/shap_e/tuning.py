"""Shap-E's alignment numbers (pure Python: the registry imports it).

None is tuned: no Shap-E weights can be loaded on the project's machines, so a job on Shap-E starts
from AlignConfig's defaults and the registry's fallback beta. Tune them on tuning seeds with real
weights (scripts/check_real_backbone.py prints rewards per round) and record the sweep here and in
docs/backbones.md.
"""
from __future__ import annotations

from ..tuning import AlignmentDefaults

# Open text: four simple coloured objects, the alignment job's prompts when the user names none.
ALIGNMENT = AlignmentDefaults(prompts=("a red cube", "a green cone", "a blue torus", "a yellow pyramid"))
