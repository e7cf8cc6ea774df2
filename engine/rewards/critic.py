"""Prompt-alignment critic: a small image network that says how well renders match a prompt.

It stands in for CLIP/HPS-style image-text scorers for the embedded model, whose grammar is
closed (its shapes and colours: ``engine/models/embedded/grammar.py``, the critic's vocabulary): a
CNN reads one rendered view and predicts the shape family and the colour name. It is trained by ``scripts/train_critic.py`` on volume renders of procedural
ground truth (clean and degraded) and of the embedded model's own samples, and its weights ship
in ``weights/critic.safetensors`` (config and training figures in ``weights/critic.json``;
accuracies in ``docs/critic.md``).

Input: ``RenderOutput.rgb`` (B, V, 3, R, R) in [0, 1] on a white background, or that tensor
itself. Any R works; the network resizes to its training resolution (64) with bilinear
interpolation, so the aligner may render at 32 x 32.

Score of a prompt on one view (:class:`PromptCritic`, ``mode="log_prob"``)::

    log p(shape_prompt | view) + log p(colour_prompt | view)      in (-inf, 0]

0 means the critic is certain the view shows the prompted shape in the prompted colour; a prompt
without a colour word scores the shape term only, "an object" the colour term only (0 without one).
Size words are not scored. ``mode="prob"`` returns ``p(shape) * p(colour)`` in [0, 1] instead. Both
are differentiable in the pixels.

Features (:func:`critic_features`): the network's pooled last-layer activations (D = 128 with the
shipped weights), averaged over views, for a Fréchet distance between sets of samples.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models.embedded.grammar import COLOURS, SHAPES, PromptError, parse_prompt
from ..render.types import RenderOutput
from .base import Reward

WEIGHTS_PATH = Path(__file__).with_name("weights") / "critic.safetensors"


class CriticLoadError(RuntimeError):
    """Critic weights missing, unreadable or not matching their configuration."""


@dataclass(frozen=True)
class CriticConfig:
    """Architecture of :class:`CriticNet`; stored beside the weights as JSON."""

    input_resolution: int = 64  # images are resized to this before the first layer
    channels: tuple[int, ...] = (32, 64, 96, 128)  # one stage per entry, each halving the size
    dropout: float = 0.1  # before the heads, training only
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)

    def __post_init__(self) -> None:
        if self.input_resolution < 2 ** len(self.channels):
            raise ValueError("input_resolution too small for the number of stages")
        if not self.channels or min(self.channels) < 1:
            raise ValueError("channels must be a non-empty list of positive widths")

    @property
    def feature_dim(self) -> int:
        return self.channels[-1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "CriticConfig":
        raw = dict(raw)
        for key in ("channels", "shapes", "colours"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: a view's score must not depend on what else is in the batch.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(_groups(cout), cout), nn.SiLU())


class CriticNet(nn.Module):
    """Images (N, 3, H, W) in [0, 1] -> shape logits (N, S), colour logits (N, C), features (N, D).

    Each stage is a stride-2 convolution, the first two stages add a stride-1 one; features are
    the global average of the last stage.
    """

    def __init__(self, config: CriticConfig = CriticConfig()):
        super().__init__()
        self.config = config
        layers, cin = [], 3
        for i, cout in enumerate(config.channels):
            layers.append(_conv(cin, cout, 2))
            if i < 2:
                layers.append(_conv(cout, cout, 1))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.dropout)
        self.shape_head = nn.Linear(cin, len(config.shapes))
        self.colour_head = nn.Linear(cin, len(config.colours))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, D) of images (N, 3, H, W) in [0, 1]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
        r = self.config.input_resolution
        if images.shape[-2:] != (r, r):
            images = F.interpolate(images, size=(r, r), mode="bilinear", align_corners=False)
        return self.body(images * 2 - 1).mean((-1, -2))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.features(images)
        h = self.dropout(feats)
        return self.shape_head(h), self.colour_head(h), feats


def _views(renders: RenderOutput | torch.Tensor) -> torch.Tensor:
    """The (B, V, 3, R, R) rgb tensor of ``renders``, validated."""
    rgb = renders.rgb if isinstance(renders, RenderOutput) else renders
    if not isinstance(rgb, torch.Tensor) or rgb.dim() != 5 or rgb.shape[2] != 3:
        shape = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
        raise ValueError(f"expected rgb renders (B, V, 3, R, R), got {shape}")
    return rgb


def _run(critic: CriticNet, renders: RenderOutput | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Shape log-probs (B, V, S), colour log-probs (B, V, C) and features (B, V, D)."""
    rgb = _views(renders)
    b, v = rgb.shape[:2]
    param = next(critic.parameters())
    shape_logits, colour_logits, feats = critic(rgb.flatten(0, 1).to(param.device, param.dtype))
    return (
        shape_logits.log_softmax(-1).view(b, v, -1),
        colour_logits.log_softmax(-1).view(b, v, -1),
        feats.view(b, v, -1),
    )


def save_critic(critic: CriticNet, path: str | os.PathLike = WEIGHTS_PATH, extra: dict | None = None) -> Path:
    """Write ``critic`` as safetensors at ``path`` and its config (plus ``extra``) as JSON beside it."""
    from ..fileio import write_json, write_safetensors

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()}
    write_safetensors(path, state)
    write_json(path.with_suffix(".json"), {"config": critic.config.to_dict(), **(extra or {})})
    return path


def load_critic(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> CriticNet:
    """Load the critic from ``path`` (default: the shipped weights) and its JSON config beside it.

    Returns the network in eval mode with gradients disabled for its parameters (gradients still
    flow to the input images). Raises :class:`CriticLoadError` when either file is missing,
    unreadable or does not match the other.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS_PATH
    cfg_path = path.with_suffix(".json")
    hint = "; run `python scripts/train_critic.py` to train it"
    if not path.is_file():
        raise CriticLoadError(f"critic weights not found at {path}{hint}")
    if not cfg_path.is_file():
        raise CriticLoadError(f"critic config not found at {cfg_path}{hint}")
    try:
        config = CriticConfig.from_dict(json.loads(cfg_path.read_text())["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CriticLoadError(f"critic config {cfg_path} is unreadable: {exc}") from exc
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CriticLoadError(f"critic weights {path} are unreadable (corrupt or not safetensors): {exc}") from exc
    critic = CriticNet(config)
    try:
        critic.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CriticLoadError(f"critic weights {path} do not match the config in {cfg_path}: {exc}") from exc
    critic.requires_grad_(False)
    return critic.to(device).eval()


_DEFAULT: CriticNet | None = None


def default_critic() -> CriticNet:
    """The shipped critic, loaded once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_critic()
    return _DEFAULT


@torch.no_grad()
def critic_features(renders: RenderOutput | torch.Tensor, critic: CriticNet | None = None) -> torch.Tensor:
    """Per-asset features (B, D): the critic's pooled features averaged over the V views.

    The fixed feature network of the Fréchet distance between sets of samples. No gradient.
    """
    critic = critic or default_critic()
    return _run(critic, renders)[2].mean(1)


class PromptCritic(Reward):
    """Does each view look like its prompt? Per-view scores (B, V); see the module docstring.

    ``mode``: ``"log_prob"`` (default), ``log p(shape) + log p(colour)`` in (-inf, 0]; or
    ``"prob"``, ``p(shape) * p(colour)`` in [0, 1].
    """

    name = "prompt_critic"
    differentiable = True

    def __init__(self, critic: CriticNet | None = None, mode: str = "log_prob"):
        if mode not in ("log_prob", "prob"):
            raise ValueError(f"mode must be 'log_prob' or 'prob', not {mode!r}")
        self.critic = critic or default_critic()
        self.mode = mode

    def _targets(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape index (B,) and colour index (B,), -1 where the prompt leaves it open ("an object")."""
        cfg = self.critic.config
        try:
            parsed = [parse_prompt(p) for p in prompts]
        except PromptError as exc:  # an open-vocabulary model's prompt (Shap-E): say what the critic reads
            raise PromptError(f"the critic reward scores prompts of the embedded model's grammar only; {exc}") from exc
        shapes = [cfg.shapes.index(p.shape) if p.shape else -1 for p in parsed]
        colours = [cfg.colours.index(p.colour) if p.colour else -1 for p in parsed]
        return torch.tensor(shapes), torch.tensor(colours)

    def score_views(self, renders: RenderOutput | torch.Tensor, prompts: list[str]) -> torch.Tensor:
        rgb = _views(renders)
        if len(prompts) != rgb.shape[0]:
            raise ValueError(f"{rgb.shape[0]} rendered assets but {len(prompts)} prompts")
        shape_idx, colour_idx = self._targets(prompts)
        shape_lp, colour_lp, _ = _run(self.critic, rgb)
        v = rgb.shape[1]
        sidx = shape_idx.to(shape_lp.device)
        score = shape_lp.gather(-1, sidx.clamp_min(0).view(-1, 1, 1).expand(-1, v, 1))[..., 0]
        score = torch.where((sidx >= 0).view(-1, 1), score, torch.zeros_like(score))  # "an object": any shape
        cidx = colour_idx.to(colour_lp.device)
        colour = colour_lp.gather(-1, cidx.clamp_min(0).view(-1, 1, 1).expand(-1, v, 1))[..., 0]
        score = score + torch.where((cidx >= 0).view(-1, 1), colour, torch.zeros_like(colour))
        return score.exp() if self.mode == "prob" else score

    @staticmethod
    def matches(prompt: str, shape: str, colour: str) -> bool:
        """Whether a predicted ``shape`` and ``colour`` are what ``prompt`` asks (a prompt without a
        colour word asks the shape only; "an object" asks the colour only). Raises PromptError for a
        prompt outside the grammar."""
        want = parse_prompt(prompt)
        return (want.shape is None or shape == want.shape) and (want.colour is None or colour == want.colour)

    @torch.no_grad()
    def predict(self, renders: RenderOutput | torch.Tensor) -> tuple[list[str], list[str]]:
        """Most likely shape and colour name per asset, from log-probabilities averaged over views."""
        shape_lp, colour_lp, _ = _run(self.critic, renders)
        cfg = self.critic.config
        return (
            [cfg.shapes[i] for i in shape_lp.mean(1).argmax(-1).tolist()],
            [cfg.colours[i] for i in colour_lp.mean(1).argmax(-1).tolist()],
        )
