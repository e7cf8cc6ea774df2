"""What prompts a model takes: checked before any weights load or any file is written.

Each model names its :class:`PromptRules` in the registry (``engine/models/__init__.py``), so the
CLI, the worker and the aligner refuse a prompt the model cannot read in one place, and the
Vocabulary command and panel show the model's words, or say it takes open text. This module holds
the generic parts; a model with its own words keeps its rules in its package (the embedded model's
closed grammar: ``engine/models/embedded/grammar.py``).
"""
from __future__ import annotations

from typing import Protocol


class PromptError(ValueError):
    """A prompt the model cannot take; the message says what it can take."""


class PromptRules(Protocol):
    def validate(self, prompts: list[str]) -> None:
        """Raise :class:`PromptError` for the first prompt the model cannot take."""

    def vocabulary(self) -> str | None:
        """The words the model knows, for people; None for open text."""


class ChecksPrompts:
    """The protocol's ``validate_prompts`` and ``vocabulary`` for a model class that sets
    ``prompt_rules``: a model answers them with its rules, nothing of its own."""

    prompt_rules: PromptRules

    def validate_prompts(self, prompts: list[str]) -> None:
        self.prompt_rules.validate(prompts)

    def vocabulary(self) -> str | None:
        return self.prompt_rules.vocabulary()


class OpenText:
    """Any non-blank text (CLIP- or T5-conditioned models)."""

    def __init__(self, max_chars: int = 1000):
        self.max_chars = max_chars

    def validate(self, prompts: list[str]) -> None:
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise PromptError(f"a prompt must be non-blank text, got {p!r}")
            if len(p) > self.max_chars:
                raise PromptError(f"a prompt may have at most {self.max_chars} characters, got {len(p)}")

    def vocabulary(self) -> None:
        return None

