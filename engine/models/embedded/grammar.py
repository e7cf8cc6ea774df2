"""The prompt grammar of the embedded model.

    prompt  := [article] [size] [colour] shape | [article] [colour] "object"
    article := "a" | "an" | "the"
    size    := "small" | "large" | "tall" | "flat"      ("tall"/"flat" only for axial shapes)
    colour  := one of COLOURS
    shape   := one of SHAPES

Examples: "a red cube", "a tall blue cylinder", "a torus", "small green cone", "an object".
A missing size or colour means "any": the model samples the whole distribution for that slot.
"object" leaves the shape open the same way: "an object" is the unconditional prompt, which the model
was trained on (classifier-free dropout of the whole prompt), so it samples every shape. "a red
object" was never a training prompt (the shape slot was only dropped with the others): measured, its
colour is right but its shapes lean to cylinders (docs/embedded_open_shape.md). A size word with
"object" is refused: the sizes depend on the shape (tall/flat exist only for axial shapes).

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
OPEN_SHAPE = "object"  # the shape word that leaves the shape open
SIZES: tuple[str, ...] = ("small", "large", "tall", "flat")
# Shapes with a distinguished axis, for which "tall" and "flat" mean something.
AXIAL_SHAPES: tuple[str, ...] = ("cylinder", "cone", "pyramid")
ARTICLES: tuple[str, ...] = ("a", "an", "the")


class PromptError(BasePromptError):
    """A prompt outside the embedded model's grammar."""


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt. ``None`` in a slot means "any" (a ``None`` shape is written "object")."""

    shape: str | None
    colour: str | None = None
    size: str | None = None

    @property
    def text(self) -> str:
        words = [w for w in (self.size, self.colour, self.shape or OPEN_SHAPE) if w]
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article, *words])


def vocabulary_text() -> str:
    """Human-readable grammar with every word, as printed by ``python -m engine vocabulary``."""
    return "\n".join(
        [
            "prompt := [a|an|the] [size] [colour] shape",
            "      or [a|an|the] [colour] object   (any shape)",
            "sizes:   " + ", ".join(SIZES) + "   (tall/flat only for " + ", ".join(AXIAL_SHAPES) + ")",
            "colours: " + ", ".join(COLOURS),
            "shapes:  " + ", ".join(SHAPES),
            'examples: "a red cube", "a tall blue cylinder", "a torus", "an object"',
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
    open_shape = False
    for word in words:
        if word in SHAPES and shape is None and not open_shape:
            shape = word
        elif word == OPEN_SHAPE and shape is None and not open_shape:
            open_shape = True
        elif word in COLOURS and colour is None and shape is None and not open_shape:
            colour = word
        elif word in SIZES and size is None and colour is None and shape is None and not open_shape:
            size = word
        else:
            known = word in SHAPES or word in COLOURS or word in SIZES or word in ARTICLES or word == OPEN_SHAPE
            why = "is out of place" if known else "is not in the vocabulary"
            raise PromptError(f"in prompt {text!r}, the word {word!r} {why}.\n" + vocabulary_text())
    if open_shape:
        if size is not None:
            raise PromptError(f"in prompt {text!r}, a size word needs a shape: {size!r} cannot go with "
                              f"{OPEN_SHAPE!r}.\n" + vocabulary_text())
        return Prompt(shape=None, colour=colour)
    if shape is None:
        raise PromptError(f"prompt {text!r} names no shape (say {OPEN_SHAPE!r} for any shape).\n" + vocabulary_text())
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
