"""Models behind the protocol in ``protocol.py``; ``load_model`` picks one by name."""
from __future__ import annotations

import torch


def load_model(name: str = "embedded", device: str | torch.device = "cpu"):
    """Load a model of the protocol. Only the embedded model ships with the engine for now."""
    if name == "embedded":
        from .embedded.model import EmbeddedModel

        return EmbeddedModel.load(device=device)
    raise ValueError(f"unknown model {name!r}; available: embedded")
