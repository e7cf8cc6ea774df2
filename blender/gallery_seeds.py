# SPDX-License-Identifier: GPL-3.0-or-later
"""Seed modes of the Generate panel (no bpy: tested alone).

* ``FIXED``: every press uses the Seed field as it is (the same assets again).
* ``INCREMENT`` (default): a press uses the Seed field and moves it past the seeds it used, so the
  next press continues where this one ended (Seed 0, Count 4: seeds 0-3, then 4-7, ...).
* ``RANDOM``: a press draws a fresh first seed and shows it in the Seed field (so it can be typed
  back in to repeat the batch).

The seed an asset was made with is stored on its object (``nabla_r2d3_seed``) either way.
"""
from __future__ import annotations

import random

SEED_MODES = (
    ("INCREMENT", "Increment", "Each press continues where the last ended: the Seed field moves past the seeds used"),
    ("FIXED", "Fixed", "Every press uses the Seed field as it is (the same assets again)"),
    ("RANDOM", "Random", "Each press draws a random first seed and shows it in the Seed field"),
)
MAX_UI_SEED = 2**31 - 1  # Blender's IntProperty is 32-bit


def press_seeds(mode: str, field: int, count: int, rng: random.Random | None = None) -> tuple[int, int]:
    """``(first seed of this press, Seed field afterwards)`` for ``count`` assets (seeds first ..
    first + count - 1). INCREMENT wraps to 0 where the next batch would pass :data:`MAX_UI_SEED`."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 0 <= field <= MAX_UI_SEED:
        raise ValueError(f"seed must be in 0..{MAX_UI_SEED}, got {field}")
    if mode == "FIXED":
        return field, field
    if mode == "INCREMENT":
        first = field if field + count - 1 <= MAX_UI_SEED else 0
        after = first + count
        return first, after if after + count - 1 <= MAX_UI_SEED else 0
    if mode == "RANDOM":
        first = (rng or random.SystemRandom()).randint(0, MAX_UI_SEED - count + 1)
        return first, first
    raise ValueError(f"unknown seed mode {mode!r}; choose one of {', '.join(m[0] for m in SEED_MODES)}")
