"""Reward registry: build any built-in reward, or a weighted sum of them, from a name and options.

Every reward has a :class:`RewardSpec`: a name, a one-line description, typed options
(:class:`RewardOption`: name, type, default, help) and a factory. Options may be given as Python
values or as the strings a command line produces; each option's type parses both:

========== ======================================================================================
type       accepted values
========== ======================================================================================
float      a number or a numeric string (``"0.5"``, ``"1e-3"``); must be finite
int        an integer or an integral string (``"8"``)
bool       ``True``/``False`` or ``"true"``, ``"false"``, ``"yes"``, ``"no"``, ``"1"``, ``"0"``
str        any non-empty string
path       a filesystem path (str or ``os.PathLike``)
model      a local model directory, or a Hugging Face repo id found in the local cache
palette    sRGB colours: ``"#ff0000,#00ff00"``, ``"1,0,0;0,1,0"`` (components in [0, 1], colours
           separated by ``;``), colour names of the embedded model (``"red,blue"``), or a list of
           (r, g, b) tuples in [0, 1]
image      a path to an image file, or a (3|4, H, W) / (H, W, 3|4) array or tensor in [0, 1]
========== ======================================================================================

Expressions combine rewards linearly (:func:`build_reward_expression`)::

    "dnc"                      one reward, weight 1
    "0.5*dnc + 2*palette"      weighted sum
    "aesthetic - 0.1 * dnc"    a minus between terms (with spaces: names may contain '-')
    "-1e-2*clip-score + dnc"   scientific notation, a leading sign

Options are given per reward name, e.g. ``{"palette": {"palette": "#ff0000"}}``; on a command line
as ``<reward>.<option>=<value>`` strings, parsed by :func:`parse_option_assignments`.

Heavy rewards (CLIP models, the prompt critic, user plugins) import their code only when built.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..params import MAX_REWARD_WEIGHT
from .base import Reward, WeightedSum
from .errors import RewardConfigError, RewardModelMissing

__all__ = [
    "REQUIRED",
    "RewardOption",
    "RewardSpec",
    "register_reward",
    "get_reward_spec",
    "list_rewards",
    "build_reward",
    "parse_reward_expression",
    "build_reward_expression",
    "parse_option_assignments",
    "format_reward_list",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # default of an option the user must give


# --- option value parsers: Python value or CLI string -> the value the factory takes ----------------

def _parse_float(value) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    out = float(value.strip()) if isinstance(value, str) else float(value)
    if not math.isfinite(out):
        raise ValueError("must be finite")
    return out


def _parse_int(value) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("expected an integer")
    return int(value)


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def _parse_str(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def _parse_path(value) -> Path:
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip()):
        return Path(os.fspath(value)).expanduser()
    raise ValueError("expected a file path")


def _parse_model(value) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return _parse_str(value)


def _hex_colour(text: str) -> tuple[float, float, float]:
    digits = text[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    if len(digits) != 6 or not re.fullmatch(r"[0-9a-fA-F]{6}", digits):
        raise ValueError(f"bad hex colour {text!r} (use #rrggbb or #rgb)")
    return tuple(int(digits[i : i + 2], 16) / 255.0 for i in (0, 2, 4))


def _parse_palette(value) -> list[tuple[float, float, float]]:
    from ..models.embedded.grammar import COLOURS  # colour words: the embedded model's palette

    if isinstance(value, str):
        colours: list[tuple[float, float, float]] = []
        for group in (g.strip() for g in value.split(";")):
            if not group:
                continue
            parts = [p.strip() for p in group.split(",") if p.strip()]
            if parts and all(re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", p) for p in parts):
                if len(parts) != 3:
                    raise ValueError(f"numeric colour {group!r} needs exactly 3 components (r,g,b in [0, 1])")
                colours.append(tuple(float(p) for p in parts))
                continue
            for part in parts:
                if part.startswith("#"):
                    colours.append(_hex_colour(part))
                elif part.lower() in COLOURS:
                    colours.append(COLOURS[part.lower()])
                else:
                    raise ValueError(f"unknown colour {part!r} (use #rrggbb, 'r,g,b' or one of {', '.join(COLOURS)})")
    else:
        try:
            colours = [tuple(float(c) for c in colour) for colour in value]
        except (TypeError, ValueError):
            raise ValueError("expected a list of (r, g, b) colours") from None
    if not colours:
        raise ValueError("the palette is empty")
    for colour in colours:
        if len(colour) != 3 or not all(0.0 <= c <= 1.0 for c in colour):
            raise ValueError(f"colour {colour} must be 3 components in [0, 1]")
    return colours


def _parse_image(value):
    if isinstance(value, (str, os.PathLike)):
        return _parse_path(value)
    if hasattr(value, "shape"):  # numpy array or torch tensor; checked by the reward
        return value
    raise ValueError("expected an image file path or an array")


PARSERS: dict[str, Callable[[Any], Any]] = {
    "float": _parse_float,
    "int": _parse_int,
    "bool": _parse_bool,
    "str": _parse_str,
    "path": _parse_path,
    "model": _parse_model,
    "palette": _parse_palette,
    "image": _parse_image,
}


@dataclass(frozen=True)
class RewardOption:
    """One option of a reward: ``type`` is a key of :data:`PARSERS`; ``default`` may be ``REQUIRED`` or None."""

    name: str
    type: str
    default: Any
    help: str

    def __post_init__(self):
        if self.type not in PARSERS:
            raise ValueError(f"option {self.name!r}: unknown type {self.type!r} (known: {', '.join(PARSERS)})")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def parse(self, value) -> Any:
        """The factory's value for a user's ``value`` (None keeps None where the default is None)."""
        if value is None and self.default is None:
            return None
        if isinstance(value, str) and value.strip().lower() in ("none", "") and self.default is None:
            return None
        return PARSERS[self.type](value)


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward: ``build(**options)`` parses and checks the options, then calls ``factory``."""

    name: str
    description: str
    options: tuple[RewardOption, ...]
    factory: Callable[..., Reward]
    # the models whose samples (and prompts) it can score; None: any model's
    models: tuple[str, ...] | None = None

    def option(self, name: str) -> RewardOption:
        for opt in self.options:
            if opt.name == name:
                return opt
        known = ", ".join(o.name for o in self.options) or "none"
        raise RewardConfigError(f"reward {self.name!r} has no option {name!r} (its options: {known})")

    def parse_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Parsed values of every option, defaults filled in; RewardConfigError on anything wrong."""
        options = dict(options or {})
        for key in options:
            self.option(key)  # unknown option -> error naming the known ones
        parsed = {}
        for opt in self.options:
            if opt.name not in options:
                if opt.required:
                    raise RewardConfigError(f"reward {self.name!r} needs option {opt.name!r}: {opt.help}")
                parsed[opt.name] = opt.default
                continue
            try:
                parsed[opt.name] = opt.parse(options[opt.name])
            except (TypeError, ValueError) as exc:
                raise RewardConfigError(
                    f"reward {self.name!r}: bad value {options[opt.name]!r} for option {opt.name!r} ({opt.type}): {exc}"
                ) from None
        return parsed

    def build(self, **options) -> Reward:
        parsed = self.parse_options(options)
        try:
            return self.factory(**parsed)
        except RewardConfigError:
            raise
        except (TypeError, ValueError) as exc:  # the reward's own validation of the values
            raise RewardConfigError(f"reward {self.name!r}: {exc}") from exc


_REGISTRY: dict[str, RewardSpec] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")


def register_reward(spec: RewardSpec, replace: bool = False) -> RewardSpec:
    """Add ``spec`` to the registry (names: lower case, digits, '_' and inner '-')."""
    if not _NAME.match(spec.name):
        raise ValueError(f"invalid reward name {spec.name!r}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"reward {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_reward_spec(name: str) -> RewardSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RewardConfigError(f"unknown reward {name!r}; known rewards: {', '.join(_REGISTRY)}") from None


def list_rewards() -> list[RewardSpec]:
    """Every registered reward, in registration order."""
    return list(_REGISTRY.values())


def build_reward(name: str, options: Mapping[str, Any] | None = None) -> Reward:
    """The reward registered as ``name``, built with ``options`` (values or CLI strings)."""
    return get_reward_spec(name).build(**dict(options or {}))


def check_reward_for_model(expression: str, model: str) -> None:
    """A RewardConfigError (a ValueError: exit 2, ``bad_input``) when a term of ``expression`` cannot
    score model ``model``'s samples, e.g. the prompt critic, which reads one model's grammar and was
    trained on that model's renders. Checked before a model loads or a file is written."""
    for _, name in parse_reward_expression(expression):
        spec = get_reward_spec(name)
        if spec.models is not None and model not in spec.models:
            raise RewardConfigError(f"reward {name!r} scores samples of model {' / '.join(spec.models)} only, not {model!r}; "
                                    f"choose another reward for {model!r}")


_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*)|(?P<op>[-+*]))"
)


def parse_reward_expression(expression: str) -> list[tuple[float, str]]:
    """``"0.5*dnc + palette - 2*aesthetic"`` -> ``[(0.5, "dnc"), (1.0, "palette"), (-2.0, "aesthetic")]``.

    Grammar: ``term (('+' | '-') term)*`` with ``term := ['+' | '-'] [number '*'] name``. Names are
    not checked against the registry here; a weight above ``engine.params.MAX_REWARD_WEIGHT`` (or
    one that overflows to inf) is refused, since it would make every reward non-finite.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise RewardConfigError("empty reward expression")
    tokens: list[tuple[str, str]] = []
    pos, text = 0, expression.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise RewardConfigError(f"cannot parse reward expression {expression!r} at {text[pos:].strip()!r}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()

    terms: list[tuple[float, str]] = []
    i = 0

    def fail(why: str):
        raise RewardConfigError(f"bad reward expression {expression!r}: {why} (e.g. '0.5*dnc + palette')")

    while i < len(tokens):
        sign = 1.0
        if terms:  # a binary operator between terms
            if tokens[i] not in (("op", "+"), ("op", "-")):
                fail(f"expected '+' or '-' before {tokens[i][1]!r}")
            sign = -1.0 if tokens[i][1] == "-" else 1.0
            i += 1
        while i < len(tokens) and tokens[i] in (("op", "+"), ("op", "-")):  # unary signs
            sign = -sign if tokens[i][1] == "-" else sign
            i += 1
        weight = 1.0
        if i < len(tokens) and tokens[i][0] == "number":
            weight = float(tokens[i][1])
            if not weight <= MAX_REWARD_WEIGHT:  # 1e999 parses as inf
                fail(f"the weight {tokens[i][1]} is too large (at most {MAX_REWARD_WEIGHT:g}: weights mix rewards, beta scales them)")
            i += 1
            if i >= len(tokens) or tokens[i] != ("op", "*"):
                fail(f"expected '*' after the weight {weight:g}")
            i += 1
        if i >= len(tokens) or tokens[i][0] != "name":
            fail("expected a reward name")
        terms.append((sign * weight, tokens[i][1]))
        i += 1
    return terms


def build_reward_expression(expression: str, options: Mapping[str, Mapping[str, Any]] | None = None) -> Reward:
    """A reward, or a :class:`WeightedSum` of rewards, from an expression (see :func:`parse_reward_expression`).

    ``options`` maps reward names to their options. A name used twice is built once and its
    weights add up; a lone term of weight 1 returns the reward itself.
    """
    terms = parse_reward_expression(expression)
    options = dict(options or {})
    names = list(dict.fromkeys(name for _, name in terms))
    for name in names:
        get_reward_spec(name)  # unknown names fail before anything heavy is built
    stray = sorted(set(options) - set(names))
    if stray:
        raise RewardConfigError(f"options given for {', '.join(map(repr, stray))}, which the expression {expression!r} does not use")
    weights = {name: 0.0 for name in names}
    for weight, name in terms:
        weights[name] += weight
    built = {name: build_reward(name, options.get(name)) for name in names}
    if len(names) == 1 and weights[names[0]] == 1.0:
        return built[names[0]]
    return WeightedSum([(weights[name], built[name]) for name in names])


def parse_option_assignments(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["palette.palette=#ff0000,#00ff00", "aesthetic.model_path=/m"]`` -> ``{"palette": {"palette": ...}, ...}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        reward, dot, option = key.strip().partition(".")
        if not sep or not dot or not reward or not option:
            raise RewardConfigError(f"bad reward option {item!r}: expected <reward>.<option>=<value>, e.g. palette.palette=#ff0000")
        out.setdefault(reward, {})[option.strip()] = value.strip()
    return out


def _default_text(opt: RewardOption) -> str:
    if opt.required:
        return "required"
    if opt.default is None:
        return "default: none"
    if isinstance(opt.default, (list, tuple)):
        return "default: " + ";".join(",".join(f"{c:g}" for c in colour) for colour in opt.default)
    return f"default: {opt.default}"


def format_reward_list() -> str:
    """Human-readable list of every reward, its options and the expression syntax (for ``python -m engine rewards``)."""
    lines = ["Rewards (higher is better; combine them as e.g. \"0.5*dnc + palette\"):", ""]
    for spec in list_rewards():
        lines.append(f"  {spec.name:<12} {spec.description}")
        if spec.models is not None:  # refused with any other --model, before it loads
            lines.append(f"      only with --model {' or '.join(spec.models)}")
        for opt in spec.options:
            lines.append(f"      {opt.name:<16} {opt.type:<8} {_default_text(opt)}")
            lines.append(f"          {opt.help}")
        lines.append("")
    lines += [
        "Options are given as <reward>.<option>=<value>, e.g. palette.palette=#ff0000,#2040d0.",
        "Expressions: terms joined by '+' or ' - ', each [weight*]name, e.g. \"aesthetic - 0.1 * dnc\".",
        "Model options take a local directory or a Hugging Face repo id already in the local cache;",
        "nothing is downloaded at run time.",
    ]
    return "\n".join(lines)


# --- built-in rewards ------------------------------------------------------------------------------

def _build_dnc(alpha_threshold: float, detach_depth: bool) -> Reward:
    from .geometry import DepthNormalConsistency

    return DepthNormalConsistency(alpha_threshold=alpha_threshold, detach_depth=detach_depth)


def _build_palette(palette, softness: float, alpha_threshold: float) -> Reward:
    from .appearance import PaletteReward

    return PaletteReward(palette, softness=softness, alpha_threshold=alpha_threshold)


def _build_reference(image, bins: int, softness: float) -> Reward:
    from .appearance import ReferenceImageReward

    return ReferenceImageReward(image, bins=bins, softness=softness)


def _build_plugin(path) -> Reward:
    from .plugin import PluginReward

    return PluginReward(path)


def _build_aesthetic(model_path: str, head_path: str) -> Reward:
    from .clip_rewards import load_aesthetic

    return load_aesthetic(model_path, head_path)


def _build_hpsv2(model_path: str, tokenizer_path: str | None) -> Reward:
    from .clip_rewards import load_hpsv2

    return load_hpsv2(model_path, tokenizer_path)


def _build_pickscore(model_path: str, tokenizer_path: str | None) -> Reward:
    from .clip_rewards import load_pickscore

    return load_pickscore(model_path, tokenizer_path)


def _build_clip_score(model_path: str, tokenizer_path: str | None) -> Reward:
    from .clip_rewards import load_clip_score

    return load_clip_score(model_path, tokenizer_path)


def _build_critic(weights, mode: str) -> Reward:
    # The critic lives in its own module (engine/rewards/critic.py) and is imported only here.
    try:
        from .critic import CriticLoadError, PromptCritic, default_critic, load_critic
    except ImportError as exc:
        raise RewardConfigError(f"the prompt critic is not available in this build ({exc})") from exc
    if mode not in ("log_prob", "prob"):  # checked here so a bad mode never loads weights
        raise RewardConfigError(f"reward 'critic': mode must be 'log_prob' or 'prob', not {mode!r}")
    try:
        net = load_critic(weights) if weights is not None else default_critic()
    except CriticLoadError as exc:
        raise RewardModelMissing(f"reward 'critic': {exc}") from exc
    return PromptCritic(net, mode=mode)


def _build_preference(path, clip_model: str | None, mode: str) -> Reward:
    from .preference import load_preference

    return load_preference(path, clip_model, mode)


_ALPHA = RewardOption("alpha_threshold", "float", 0.5, "pixels with alpha above this count as the object")
_TOKENIZER = RewardOption("tokenizer_path", "model", None, "CLIP tokenizer directory or repo id (default: the model's own)")

for _spec in (
    RewardSpec("dnc", "Depth-normal consistency: rendered normals agree with the rendered depth (no network; 1 = perfect).",
               (_ALPHA, RewardOption("detach_depth", "bool", False, "no gradient through the depth, only the normals (the official code)")),
               _build_dnc),
    RewardSpec(
        "palette",
        "Foreground albedo close to a colour palette (minus the mean distance to the nearest colour; 0 = on palette).",
        (
            RewardOption("palette", "palette", REQUIRED, "colours: \"#ff0000,#2040d0\", \"1,0,0;0,0,1\" or names (red, blue, ...)"),
            RewardOption("softness", "float", 0.05, "temperature of the soft nearest-colour minimum (sRGB distance units)"),
            _ALPHA,
        ),
        _build_palette,
    ),
    RewardSpec(
        "reference",
        "Colour distribution of the albedo matches a reference image (Oklab histogram overlap; 1 = same).",
        (
            RewardOption("image", "image", REQUIRED, "reference image file (PNG, JPEG...; its alpha masks it) or array in [0, 1]"),
            RewardOption("bins", "int", 8, "histogram bins per Oklab axis"),
            RewardOption("softness", "float", 1.0, "histogram kernel width, in bins"),
        ),
        _build_reference,
    ),
    RewardSpec(
        "plugin",
        "A user's Python file defining reward(images, alpha, depth, normal, prompts) (see engine/rewards/plugin.py).",
        (RewardOption("path", "path", REQUIRED, "the plugin .py file (runs with your rights: trusted files only)"),),
        _build_plugin,
    ),
    RewardSpec(
        "aesthetic",
        "LAION aesthetic predictor v2 on the rendered views (CLIP ViT-L/14 + MLP head; about 1-10).",
        (
            RewardOption("model_path", "model", "openai/clip-vit-large-patch14", "CLIP ViT-L/14 (transformers format)"),
            RewardOption(
                "head_path",
                "str",
                "camenduru/improved-aesthetic-predictor:sac+logos+ava1-l14-linearMSE.pth",
                "MLP head: a .pth/.safetensors file or '<repo id>:<file>' in the HF cache",
            ),
        ),
        _build_aesthetic,
    ),
    RewardSpec(
        "hpsv2",
        "HPSv2.1 human preference score: cosine of render and prompt embeddings (about 0.2-0.35).",
        (
            RewardOption(
                "model_path",
                "model",
                REQUIRED,
                "HPSv2.1 converted to transformers format: python -m engine.rewards.convert_open_clip "
                "HPS_v2.1_compressed.pt --base <laion/CLIP-ViT-H-14-laion2B-s32B-b79K dir> --out <dir>",
            ),
            _TOKENIZER,
        ),
        _build_hpsv2,
    ),
    RewardSpec(
        "pickscore",
        "PickScore v1: logit_scale * cosine of render and prompt embeddings (about 18-23).",
        (
            RewardOption("model_path", "model", "yuvalkirstain/PickScore_v1", "PickScore model (transformers format)"),
            RewardOption(
                "tokenizer_path", "model", None, "tokenizer (default: the model's own, else laion/CLIP-ViT-H-14-laion2B-s32B-b79K)"
            ),
        ),
        _build_pickscore,
    ),
    RewardSpec(
        "clip-score",
        "CLIP score: cosine of render and prompt embeddings of a CLIP model, in [-1, 1].",
        (RewardOption("model_path", "model", "openai/clip-vit-large-patch14", "any transformers CLIPModel"), _TOKENIZER),
        _build_clip_score,
    ),
    RewardSpec(
        "critic",
        "Prompt critic (engine/rewards/critic.py): how well the rendered views match the prompt.",
        (
            RewardOption("weights", "path", None, "critic weights .safetensors, its .json config beside it (default: the shipped ones)"),
            RewardOption("mode", "str", "log_prob", "log_prob: log p(shape) + log p(colour) in (-inf, 0]; prob: p(shape) * p(colour)"),
        ),
        _build_critic,
        # it reads the embedded model's prompt grammar (engine/rewards/critic.py) and saw its renders
        models=("embedded",),
    ),
    RewardSpec(
        "preference",
        "Learned from an artist's liked/disliked picks (engine/rewards/preference.py; logit units, 0 = average pick).",
        (
            RewardOption("path", "path", REQUIRED, "folder written by `python -m engine preferences fit` (preference.safetensors + .json)"),
            RewardOption("clip_model", "model", None, "CLIP folder for a head fitted on CLIP features (default: the one it was fitted with)"),
            RewardOption("mode", "str", "logit", "logit: the head's score; log_prob: log sigmoid(score) <= 0, saturating above the average pick"),
        ),
        _build_preference,
    ),
):
    register_reward(_spec)
del _spec
