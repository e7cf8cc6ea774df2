"""Models behind the protocol in ``protocol.py``; ``load_model`` picks one by name."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto": CUDA if available, else Apple's MPS, else CPU; anything else as torch reads it."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def load_model(name: str = "embedded", device: str | torch.device = "cpu"):
    """Load a model of the protocol (device may be "auto"). Only the embedded model ships for now."""
    device = resolve_device(device)
    if name == "embedded":
        from .embedded.model import EmbeddedModel

        return EmbeddedModel.load(device=device)
    raise ValueError(f"unknown model {name!r}; available: embedded")
