"""The names a user picks from, in one place: the CLI, the worker, batch mode and the Blender enums
read them here. Pure Python (no torch), so Blender's own interpreter can import it for its menus.

Each entry is ``(id, label, description)``, the shape of a Blender EnumProperty item.
"""
from __future__ import annotations

SCHEDULER_ITEMS = (
    ("ddim", "DDIM", "DDIM with eta 1 (stochastic), the paper's sampler"),
    ("ddpm", "DDPM", "Ancestral DDPM sampling"),
    ("dpmsolver-sde", "SDE-DPM-Solver++", "First-order SDE-DPM-Solver++"),
    ("heun", "Heun", "Shap-E only: its own second-order, deterministic sampler; generation only, not alignment"),
)
METHOD_ITEMS = (
    ("nabla", "Nabla-R2D3", "Reward gradients matched against the sampler's scores (the paper's method)"),
    ("refl", "ReFL", "Reward through a one-step prediction from a late step (baseline)"),
    ("draft", "DRaFT-1", "Reward backpropagated through the last sampling step (baseline)"),
    ("ddpo", "DDPO", "Policy gradient without reward gradients (baseline)"),
)
RENDERER_ITEMS = (
    ("volume", "Volume (differentiable)", "The engine's differentiable volume renderer; reward gradients flow"),
    ("cycles", "Cycles", "Blender's Cycles on extracted meshes; no gradients (DDPO only)"),
)

MODEL_ITEMS = (
    ("embedded", "Embedded", "The small model shipped inside the extension: offline, CPU friendly"),
    ("shap-e", "Shap-E", "OpenAI's open-vocabulary text-to-3D model (diffusers); its weights from a local folder, a GPU advised"),
    ("diffsplat", "DiffSplat", "DiffSplat-PixArt-Sigma, text to 3D Gaussians (the paper's model); its converted weights from a local folder, a GPU advised"),
)

MODELS = tuple(item[0] for item in MODEL_ITEMS)
SCHEDULERS = tuple(item[0] for item in SCHEDULER_ITEMS)
# The samplers each model generates with, for menus that cannot load the models (Blender's Sampler
# menu offers only these). The models' registry (engine/models/__init__.py, ModelSpec.schedulers,
# what make_scheduler accepts) is the authority: tests/engine/test_names.py holds the two equal.
MODEL_SCHEDULERS = {
    "embedded": ("ddim", "ddpm", "dpmsolver-sde"),
    "shap-e": ("heun", "ddim", "ddpm", "dpmsolver-sde"),
    "diffsplat": ("ddim", "ddpm", "dpmsolver-sde"),
}


def scheduler_items(model: str) -> tuple[tuple[str, str, str, int], ...]:
    """The entries of :data:`SCHEDULER_ITEMS` that ``model`` samples with, in that order, each with a
    fourth element, its index in :data:`SCHEDULER_ITEMS`: the number a Blender enum with these items
    stores, the same for a sampler whichever model's menu shows it. ValueError for an unknown model."""
    if model not in MODEL_SCHEDULERS:
        raise ValueError(f"unknown model {model!r}; available: {', '.join(MODELS)}")
    offered = MODEL_SCHEDULERS[model]
    return tuple((*item, number) for number, item in enumerate(SCHEDULER_ITEMS) if item[0] in offered)
METHODS = tuple(item[0] for item in METHOD_ITEMS)
RENDERERS = tuple(item[0] for item in RENDERER_ITEMS)
# Methods that need only reward values, never their gradient: the only ones Cycles renders can drive.
GRADIENT_FREE_METHODS = ("ddpo",)
