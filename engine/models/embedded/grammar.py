"""The prompt grammar of the embedded model.

    prompt  := [article] [size] [colour] shape
    article := "a" | "an" | "the"
    size    := "small" | "large" | "tall" | "flat"      ("tall"/"flat" only for axial shapes)
    colour  := one of COLOURS
    shape   := one of SHAPES

Examples: "a red cube", "a tall blue cylinder", "a torus", "small green cone".
A missing size or colour means "any": the model samples the whole distribution for that slot.

Parsing is the boundary where user text enters the engine, so every rejection raises
:class:`PromptError` with a message that lists the vocabulary. :class:`Grammar` is these rules as
the registry's ``PromptRules`` (``engine/models/prompts.py``). Pure Python: the registry imports it
before torch loads.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..prompts import PromptError as BasePromptError

# sRGB display values in [0, 1]; the procedural data jitters around them.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "purple": (0.55, 0.18, 0.75),
    "white": (0.92, 0.92, 0.90),
    "black": (0.10, 0.10, 0.11),
}
SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "torus", "pyramid")
SIZES: tuple[str, ...] = ("small", "large", "tall", "flat")
# Shapes with a distinguished axis, for which "tall" and "flat" mean something.
AXIAL_SHAPES: tuple[str, ...] = ("cylinder", "cone", "pyramid")
ARTICLES: tuple[str, ...] = ("a", "an", "the")


class PromptError(BasePromptError):
    """A prompt outside the embedded model's grammar."""


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt. ``None`` in a slot means "any"."""

    shape: str
    colour: str | None = None
    size: str | None = None

    @property
    def text(self) -> str:
        words = [w for w in (self.size, self.colour, self.shape) if w]
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article, *words])


def vocabulary_text() -> str:
    """Human-readable grammar with every word, as printed by ``python -m engine vocabulary``."""
    return "\n".join(
        [
            "prompt := [a|an|the] [size] [colour] shape",
            "sizes:   " + ", ".join(SIZES) + "   (tall/flat only for " + ", ".join(AXIAL_SHAPES) + ")",
            "colours: " + ", ".join(COLOURS),
            "shapes:  " + ", ".join(SHAPES),
            'examples: "a red cube", "a tall blue cylinder", "a torus"',
        ]
    )


def parse_prompt(text: str) -> Prompt:
    """Parse ``text`` into a :class:`Prompt`; raise :class:`PromptError` on anything else."""
    if not isinstance(text, str) or not text.strip():
        raise PromptError("empty prompt.\n" + vocabulary_text())
    words = text.lower().replace(",", " ").split()
    if words and words[0] in ARTICLES:
        words = words[1:]
    shape = colour = size = None
    for word in words:
        if word in SHAPES and shape is None:
            shape = word
        elif word in COLOURS and colour is None and shape is None:
            colour = word
        elif word in SIZES and size is None and colour is None and shape is None:
            size = word
        else:
            known = word in SHAPES or word in COLOURS or word in SIZES or word in ARTICLES
            why = "is out of place" if known else "is not in the vocabulary"
            raise PromptError(f"in prompt {text!r}, the word {word!r} {why}.\n" + vocabulary_text())
    if shape is None:
        raise PromptError(f"prompt {text!r} names no shape.\n" + vocabulary_text())
    if size in ("tall", "flat") and shape not in AXIAL_SHAPES:
        raise PromptError(
            f"in prompt {text!r}, {size!r} applies only to {', '.join(AXIAL_SHAPES)}.\n" + vocabulary_text()
        )
    return Prompt(shape=shape, colour=colour, size=size)


# One prompt per shape, no colour or size: what the demo generates and the preference study marks
# (the registry's ``ModelSpec.example_prompts``).
EXAMPLE_PROMPTS: tuple[str, ...] = tuple(Prompt(shape=s).text for s in SHAPES)


def all_colour_shape_prompts() -> list[Prompt]:
    """Every colour x shape prompt (no size word): the evaluation grid."""
    return [Prompt(shape=s, colour=c) for s in SHAPES for c in COLOURS]


class Grammar:
    """The embedded model's ``PromptRules``: its closed grammar above."""

    def validate(self, prompts: list[str]) -> None:
        for p in prompts:
            parse_prompt(p)

    def vocabulary(self) -> str:
        return vocabulary_text()
