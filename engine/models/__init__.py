"""Models behind the protocol in ``protocol.py``; the registry below is the one list of them.

``load_model(name, path=None, device=...)`` loads one; ``prompt_rules(name)`` checks prompts
without loading anything (engine/models/prompts.py). The names are engine/names.py's ``MODELS``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..names import MODELS
from .diffsplat.tuning import ALIGNMENT as DIFFSPLAT_ALIGNMENT
from .embedded.tuning import ALIGNMENT as EMBEDDED_ALIGNMENT
from .embedded.grammar import EXAMPLE_PROMPTS as EMBEDDED_EXAMPLE_PROMPTS, Grammar
from .prompts import OpenText, PromptRules
from .shap_e.tuning import ALIGNMENT as SHAP_E_ALIGNMENT
from .tuning import AlignmentDefaults


@dataclass(frozen=True)
class ModelSpec:
    """``loader``: ".module:Class" (relative to this package) whose ``load(directory, device)``
    builds the model; ``prompts``: its prompt rules. Without a ``path`` a bundled model loads its own
    weights and one with a ``hub_id`` looks in the Hugging Face cache (offline)."""

    name: str
    loader: str
    prompts: PromptRules
    bundled: bool  # ships with the extension: ``path`` is optional
    hub_id: str | None = None  # found in the Hugging Face cache when no ``path`` is given
    schedulers: tuple[str, ...] = ("ddim", "ddpm", "dpmsolver-sde")  # it generates with (names.SCHEDULERS)
    alignment: AlignmentDefaults = AlignmentDefaults()  # its tuned beta and learning rates
    # What ``decode`` returns, known before loading: "field" (a signed-distance field, meshes only) or
    # "splats" (GaussianSplats, which ``generate --format 3dgs`` can also write as a 3DGS PLY).
    representation: str = "field"
    # How to get the weights folder, said when none is given (models with neither bundled weights
    # nor a hub id).
    weights_hint: str | None = None
    # A few prompts it reads, for demos and studies (the embedded model: one per shape); may be empty.
    example_prompts: tuple[str, ...] = ()


REGISTRY: dict[str, ModelSpec] = {
    "embedded": ModelSpec("embedded", ".embedded.model:EmbeddedModel", Grammar(), bundled=True,
                          alignment=EMBEDDED_ALIGNMENT, example_prompts=EMBEDDED_EXAMPLE_PROMPTS),
    "shap-e": ModelSpec("shap-e", ".shap_e.model:ShapEModel", OpenText(), bundled=False, hub_id="openai/shap-e",
                        schedulers=("heun", "ddim", "ddpm", "dpmsolver-sde"), alignment=SHAP_E_ALIGNMENT),
    # No hub id: the official release is not a diffusers folder; scripts/convert_diffsplat.py makes one.
    "diffsplat": ModelSpec("diffsplat", ".diffsplat.model:DiffSplatModel", OpenText(), bundled=False,
                           schedulers=("ddim", "ddpm", "dpmsolver-sde"), alignment=DIFFSPLAT_ALIGNMENT,
                           representation="splats",
                           weights_hint="assemble it from the official release with `python scripts/convert_diffsplat.py "
                                        "--out DIR` on a connected machine"),
}
assert tuple(REGISTRY) == MODELS, "engine/names.py MODELS and the registry must list the same models"

if TYPE_CHECKING:
    import torch


def resolve_device(device: "str | torch.device") -> "torch.device":
    """"auto": CUDA if available, else Apple's MPS, else CPU; anything else as torch reads it."""
    import torch  # here, not at the top: the CLI checks prompts through this package before torch loads

    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def model_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def prompt_rules(name: str) -> PromptRules:
    """The prompt rules of model ``name``, without loading it."""
    return model_spec(name).prompts


def check_scheduler(name: str, scheduler: str) -> None:
    """A ValueError unless model ``name`` generates with ``scheduler`` (checked before it loads)."""
    offered = model_spec(name).schedulers
    if scheduler not in offered:
        raise ValueError(f"model {name!r} samples with {', '.join(offered)}, not {scheduler!r}")


def load_model(name: str = "embedded", path: str | Path | None = None, device: "str | torch.device" = "cpu"):
    """Load model ``name`` (from ``path``, a folder of its weights, else its bundled ones or the
    Hugging Face cache) on ``device`` ("auto" allowed). Nothing is downloaded."""
    spec = model_spec(name)
    if path is None and not spec.bundled and spec.hub_id is None:
        hint = f"; {spec.weights_hint}" if spec.weights_hint else ""
        raise ValueError(f"model {name!r} needs the folder of its weights (--model-path){hint}")
    module, cls = spec.loader.split(":")
    loader = getattr(importlib.import_module(module, __package__), cls)
    device = resolve_device(device)
    return loader.load(device=device) if path is None else loader.load(Path(path).expanduser(), device=device)
