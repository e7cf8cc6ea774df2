"""Errors a model raises while loading (every model's, so callers catch one type)."""
from __future__ import annotations


class ModelLoadError(RuntimeError):
    """Weights missing, unreadable or not matching the configuration; the message says what to do."""
