"""A reward learned from an artist's picks: "more like these, fewer like those".

The artist marks generated assets liked, disliked or neutral (a ``picks.json``, format below). Each
picked asset is rendered from fixed orbit views, a frozen image network turns every view into a
feature vector, and a linear Bradley-Terry head is fitted so that liked assets score above
disliked ones. The fitted head is the reward ``preference``: frozen features of each rendered
view -> standardise -> dot with the head's weights -> one score per view, differentiable in the
pixels (and so, through the renderer, in the latent), like every other reward.

Feature kinds (frozen, never trained here):

- ``critic``: the prompt critic's pooled features (engine/rewards/critic.py, D = 128
  with the shipped weights), made for the embedded model's renders.
- ``clip``: the projected image embedding of a local CLIP model folder (transformers format,
  loaded with the loaders of engine/rewards/clip_rewards.py), L2-normalised.
- ``layout``: each view's RGB averaged over an 8 x 8 grid of cells (192-d), linear in the pixels;
  ``critic+layout`` and ``clip+layout`` append it to the pooled features, which say what is shown
  but hardly where (docs/preferences.md, "Why aligning on it failed").
- ``profile``: the silhouette's proportions (16-d), from the renders' alpha (:class:`ProfileFeatures`).

Fitting with ``feature="auto"`` (the default) computes ``profile`` and the rich kind, and keeps
``profile`` unless the rich kind's cross-validated AUC is higher by more than ``AUTO_TOLERANCE``
(:func:`select_feature_kind`); the chosen kind is what the saved head records.

Score units: a difference of 1 between two assets means the head gives the better one a
``sigmoid(1) = 73 %`` chance of being preferred; 0 is the average training asset.

Picks: a ``picks.json`` (``"format": "nabla-picks"``), read with engine/picks.py, the one reader of
the format (fields there and in docs/preferences.md); :func:`load_picks` turns its entries into
:class:`Pick` records and adds the checks that need the engine (the model's prompt vocabulary,
sampler settings, the ``manifest``'s fields).

Where the asset comes from: ``latent`` when given (a safetensors file holding the clean latent
under the key ``latent``); otherwise it is sampled again from (prompt, seed) with the model,
adapter and sampler settings, which reproduces it exactly, since the sampler draws every noise
from a generator seeded with the asset's seed (``generate`` writes meshes, not latents). Settings
left out of an entry come from its ``manifest`` (the ``manifest.json`` of ``python -m engine
generate``: model, adapter and sampler), else from the defaults. Relative paths are relative to
the picks file.

Files of a fitted preference folder (``PREF_DIR``): ``preference.safetensors`` (the head's
tensors ``weight``, ``mean``, ``std``: (D,) each, float32) and ``preference.json`` (strict JSON:
feature kind, dimension, CLIP folder, fitting settings and statistics, cross-validated agreement,
and with ``auto`` the ``feature_selection``).
The head is read with safetensors only.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .. import picks as picks_file
from ..fileio import strict_loads
from ..picks import MARKS, MIN_DISLIKED, MIN_LIKED, PicksError, count_problem
from ..render.types import RenderOutput
from .base import Reward
from .errors import RewardConfigError, RewardModelMissing

HEAD_FILE = "preference.safetensors"
META_FILE = "preference.json"
FEATURE_KINDS = ("critic+layout", "critic", "clip+layout", "clip", "layout", "profile")
DEFAULT_FEATURE = "critic+layout"  # the richest features of the embedded model's renders (docs/preferences.md)
# Fitting may also choose the kind itself: "auto" fits the simplest candidate first (the silhouette's
# proportions, 16-d a view) and keeps it unless the rich features explain the picks clearly better
# (cross-validated AUC higher by more than AUTO_TOLERANCE). A head on the rich features also
# learns what they say about the shape: fitted to "taller" picks it moved the shape mix, and drifted
# further from the base than the proportions-only head for the same gain in height (docs/preferences.md).
AUTO = "auto"
FIT_FEATURES = (AUTO,) + FEATURE_KINDS
DEFAULT_FIT_FEATURE = AUTO
AUTO_TOLERANCE = 0.02  # of cross-validated AUC: about one liked/disliked pair in 50 ranked differently
LAYOUT_GRID = 8  # the layout features: each view's RGB averaged over an 8 x 8 grid of cells
# Standardisation floor, as a fraction of the median feature std: a feature that barely varies over the
# picks (a background pixel, a dead channel) would otherwise be divided by ~0 and let the reward climb
# along it without bound, far from anything the artist marked (docs/preferences.md, "Why aligning on it failed").
STD_FLOOR = 0.25
REWARD_MODES = ("logit", "log_prob")
DEFAULT_L2 = 1.0  # on standardised features; chosen on the simulated artists (docs/preferences.md)


class PreferenceError(RewardConfigError):
    """Picks that cannot be read or fitted, or a preference folder that cannot be loaded."""


# --- picks -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pick:
    """One marked asset of a ``picks.json`` (format: engine/picks.py); paths are absolute."""

    prompt: str
    seed: int
    mark: str
    model: str = "embedded"
    model_path: str | None = None
    adapter: str | None = None
    adapter_weight: float = 1.0
    sampler: dict = field(default_factory=dict)
    latent: str | None = None

    def source_key(self) -> tuple:
        """Assets sharing this key are re-sampled by one loaded model."""
        return (self.model, self.model_path, self.adapter, self.adapter_weight, json.dumps(self.sampler, sort_keys=True))


def read_strict_json(path: Path, what: str):
    """The JSON in ``path``; PreferenceError naming the file when it is missing or not strict JSON."""
    try:
        return strict_loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PreferenceError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PreferenceError(f"{what} {path} is not readable strict JSON: {exc}") from None


_SAMPLER_KEYS = {"steps", "guidance", "scheduler", "eta", "final_sigmas"}


def _sampler_fields(raw, where: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PreferenceError(f"{where}: sampler must be an object, got {raw!r}")
    out = {k: v for k, v in raw.items() if k in _SAMPLER_KEYS}
    from ..sampling.sampler import SamplerConfig

    try:
        SamplerConfig(**out)
    except (TypeError, ValueError) as exc:
        raise PreferenceError(f"{where}: bad sampler settings {out}: {exc}") from None
    return out


def _adapter_fields(raw, base: Path, where: str) -> tuple[str | None, float]:
    if raw is None:
        return None, 1.0
    if isinstance(raw, str) and raw.strip():
        return str((base / raw).resolve()), 1.0
    if isinstance(raw, dict) and isinstance(raw.get("path"), str):
        weight = raw.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise PreferenceError(f"{where}: adapter weight must be a finite number >= 0, got {weight!r}")
        return str((base / raw["path"]).resolve()), float(weight)
    raise PreferenceError(f"{where}: adapter must be null, a folder path or {{\"path\": ..., \"weight\": w}}, got {raw!r}")


def _manifest_defaults(path: Path, where: str) -> dict:
    """model, adapter and sampler of a generate job's manifest.json."""
    manifest = read_strict_json(path, f"{where}: manifest")
    if not isinstance(manifest, dict):
        raise PreferenceError(f"{where}: manifest {path} is not a JSON object")
    out = {}
    if isinstance(manifest.get("model"), str):
        out["model"] = manifest["model"]
    if manifest.get("adapter") is not None:
        out["adapter"] = manifest["adapter"]  # paths in a manifest are as the generate job was given them
    if isinstance(manifest.get("sampler"), dict):
        out["sampler"] = manifest["sampler"]
    return out


def _pick(entry: dict, base: Path, where: str) -> Pick:
    """The :class:`Pick` of a picks entry already checked by :func:`engine.picks.check_entry`: the
    manifest's model, adapter and sampler filled in, the engine's own checks, paths made absolute."""
    from ..models import prompt_rules
    from ..names import MODELS

    entry = picks_file.relative_to(entry, base)  # manifest, latent, model_path and adapter made absolute
    if entry.get("manifest") is not None:
        entry = {**_manifest_defaults(Path(entry["manifest"]), where), **entry}
    model = entry.get("model", "embedded")
    if model not in MODELS:
        raise PreferenceError(f"{where}: unknown model {model!r}; known: {', '.join(MODELS)}")
    try:
        prompt_rules(model).validate([entry["prompt"]])
    except ValueError as exc:
        raise PreferenceError(f"{where}: {exc}") from None
    adapter, weight = _adapter_fields(entry.get("adapter"), base, where)  # a manifest's adapter: relative to base too
    return Pick(prompt=entry["prompt"], seed=entry["seed"], mark=entry["mark"], model=model,
                model_path=entry.get("model_path"), adapter=adapter, adapter_weight=weight,
                sampler=_sampler_fields(entry.get("sampler"), where), latent=entry.get("latent"))


def parse_picks(raw, base_dir: str | os.PathLike = ".", where: str = "picks") -> list[Pick]:
    """The picks of a parsed ``picks.json`` object (format: engine/picks.py), one per asset (a later
    entry of an asset replaces an earlier one, as :func:`engine.picks.merge` does).

    ``base_dir``: the folder relative paths are resolved against (the picks file's). Raises
    :class:`PreferenceError` naming the entry and field on anything malformed.
    """
    try:
        entries = picks_file.parse_document(raw, where)
    except PicksError as exc:
        raise PreferenceError(str(exc)) from None
    # indices name entries after merging: the same as in the file unless an asset is marked twice
    return [_pick(e, Path(base_dir), f"{where} assets[{i}]") for i, e in enumerate(entries)]


def load_picks(path: str | os.PathLike) -> list[Pick]:
    """Read and validate a ``picks.json`` file (relative paths in it are relative to its folder);
    :class:`PreferenceError` naming the file and entry when it is missing or malformed."""
    path = Path(path).expanduser()
    try:
        entries = picks_file.load(path, missing_ok=False)
    except PicksError as exc:
        raise PreferenceError(str(exc)) from None
    return [_pick(e, path.parent, f"picks file {path} assets[{i}]") for i, e in enumerate(entries)]


def picks_document(picks: list[Pick]) -> dict:
    """The strict-JSON object of ``picks`` (absolute paths), as :func:`load_picks` reads it."""
    entries = []
    for p in picks:
        entry = {"prompt": p.prompt, "seed": p.seed, "mark": p.mark, "model": p.model}
        if p.model_path is not None:
            entry["model_path"] = p.model_path
        if p.adapter is not None:
            entry["adapter"] = {"path": p.adapter, "weight": p.adapter_weight}
        if p.sampler:
            entry["sampler"] = dict(p.sampler)
        if p.latent is not None:
            entry["latent"] = p.latent
        entries.append(entry)
    return picks_file.document(entries)


def check_pick_counts(marks: list[str], min_liked: int = MIN_LIKED, min_disliked: int = MIN_DISLIKED) -> None:
    """PreferenceError saying how many more picks are needed (:func:`engine.picks.count_problem`'s
    words), unless there are enough of both classes."""
    problem = count_problem(marks, min_liked, min_disliked)
    if problem is not None:
        raise PreferenceError(problem)


# --- features ----------------------------------------------------------------------------------------

class FeatureNet:
    """Frozen per-view image features: rgb (B, V, 3, R, R) in [0, 1], and the coverage alpha
    (B, V, 1, R, R) for the networks with ``needs_alpha`` -> (B, V, D), differentiable in the pixels."""

    kind: str = "critic"
    dim: int = 0
    source: str | None = None  # the CLIP folder, for kind "clip"
    needs_alpha: bool = False

    def __call__(self, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class CriticFeatures(FeatureNet):
    """The prompt critic's pooled features (its shipped weights, or a weights file)."""

    kind = "critic"

    def __init__(self, weights: str | os.PathLike | None = None):
        from .critic import CriticLoadError, default_critic, load_critic

        try:
            self.net = load_critic(weights) if weights is not None else default_critic()
        except CriticLoadError as exc:
            raise RewardModelMissing(f"preference features: {exc}") from exc
        self.dim = self.net.config.feature_dim
        self.source = None if weights is None else str(Path(weights).resolve())

    def __call__(self, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        b, v = rgb.shape[:2]
        param = next(self.net.parameters())
        self.net.to(rgb.device)
        return self.net.features(rgb.flatten(0, 1).to(param.dtype)).view(b, v, -1)


class ClipFeatures(FeatureNet):
    """L2-normalised projected image embeddings of a local CLIP model (transformers format)."""

    kind = "clip"

    def __init__(self, model_path: str | os.PathLike):
        from .clip_rewards import _load_vision_tower, _mean_std, resolve_model_dir

        directory = resolve_model_dir(model_path, "preference CLIP features")
        self.model = _load_vision_tower(directory, "preference CLIP features")
        self.size = int(self.model.config.image_size)
        self.mean, self.std = _mean_std(directory)
        self.dim = int(self.model.visual_projection.out_features)
        self.source = str(model_path)

    def __call__(self, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        from .clip_rewards import clip_pixel_values, image_embeddings

        b, v = rgb.shape[:2]
        self.model.to(rgb.device)
        pixels = clip_pixel_values(rgb.flatten(0, 1).float(), self.size, self.mean, self.std)
        return torch.nn.functional.normalize(image_embeddings(self.model, pixels), dim=-1).view(b, v, -1)


class LayoutFeatures(FeatureNet):
    """Where the colours are: each view's RGB averaged over a ``grid`` x ``grid`` grid of cells,
    (B, V, 3 * grid^2), linear in the pixels.

    The critic's and CLIP's features are pooled over the whole image, so they say *what* is shown
    (shape, colour) but hardly *where*: an object's height or width is only weakly readable from
    them, and a head fitted on them climbs toward "looks more like the liked shapes" rather than
    "is taller". These cells carry silhouette extent and colour layout, and, being linear in the
    pixels, give a gradient with no adversarial directions of its own."""

    kind = "layout"

    def __init__(self, grid: int = LAYOUT_GRID):
        self.grid = grid
        self.dim = 3 * grid * grid

    def __call__(self, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        b, v = rgb.shape[:2]
        return torch.nn.functional.adaptive_avg_pool2d(rgb.flatten(0, 1), self.grid).flatten(1).view(b, v, -1)


class ProfileFeatures(FeatureNet):
    """Proportions: how far the silhouette reaches, (B, V, 2 * grid). Per view, each image row's
    coverage (a smooth max of alpha along the row) averaged within ``grid`` horizontal bands, and
    each column's within ``grid`` vertical bands.

    A head on these scores an asset's extent (taller, wider, squatter) and nothing else; its gradient
    only grows or shrinks the silhouette, like the differentiable height of the simulated artist's
    study. The layout cells average coverage over a cell, so they rise as much by widening an object
    as by making it reach further up, and the critic's features say what the shape is: a head on
    those, fitted to "taller", drifted further from the base for the same gain in height
    (docs/preferences.md, the study's "Reading")."""

    kind = "profile"
    needs_alpha = True
    SHARPNESS = 20.0  # of the smooth max: rows a tenth covered read as ~0.1 + log(R)/20, fully covered as ~1

    def __init__(self, grid: int = LAYOUT_GRID):
        self.grid = grid
        self.dim = 2 * grid

    def __call__(self, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        if alpha is None:
            raise PreferenceError("profile features need the renders' alpha (coverage), not only rgb")
        a = alpha[:, :, 0]  # (B, V, R, R)
        b, v, r, _ = a.shape
        rows = torch.logsumexp(a * self.SHARPNESS, dim=-1) / self.SHARPNESS  # (B, V, R): one per image row
        cols = torch.logsumexp(a * self.SHARPNESS, dim=-2) / self.SHARPNESS
        pool = torch.nn.functional.adaptive_avg_pool1d
        bands = [pool(x.reshape(b * v, 1, r), self.grid).view(b, v, self.grid) for x in (rows, cols)]
        return torch.cat(bands, -1)


class ConcatFeatures(FeatureNet):
    """Features of several networks side by side, (B, V, sum of D)."""

    def __init__(self, kind: str, nets: list[FeatureNet]):
        self.kind, self.nets = kind, nets
        self.dim = sum(n.dim for n in nets)
        self.source = nets[0].source
        self.needs_alpha = any(n.needs_alpha for n in nets)

    def __call__(self, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([n(rgb, alpha) for n in self.nets], -1)


def feature_net(kind: str = DEFAULT_FEATURE, clip_model: str | os.PathLike | None = None,
                critic_weights: str | os.PathLike | None = None) -> FeatureNet:
    """The frozen feature network of ``kind``: ``"critic"``, ``"clip"`` (which needs ``clip_model``),
    either with ``"+layout"`` (:class:`LayoutFeatures` appended), or ``"layout"`` alone."""
    if kind not in FEATURE_KINDS:
        raise PreferenceError(f"unknown preference feature kind {kind!r}; choose one of {', '.join(FEATURE_KINDS)}")
    base = kind.split("+")[0]
    if base == "layout":
        return LayoutFeatures()
    if base == "profile":
        return ProfileFeatures()
    if base == "critic":
        net = CriticFeatures(critic_weights)
    else:
        if clip_model is None:
            raise PreferenceError(f"preference features {kind!r} need a CLIP model folder (clip_model)")
        net = ClipFeatures(clip_model)
    return ConcatFeatures(kind, [net, LayoutFeatures()]) if kind.endswith("+layout") else net


# --- the head ----------------------------------------------------------------------------------------

@dataclass
class PreferenceHead:
    """score(f) = ((f - mean) / std) . weight for features f (..., D); ``meta``: strict-JSON facts."""

    weight: torch.Tensor  # (D,)
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,), > 0
    meta: dict

    def __post_init__(self) -> None:
        shapes = {tuple(t.shape) for t in (self.weight, self.mean, self.std)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise PreferenceError(f"preference head tensors must be (D,) of one size, got {sorted(shapes)}")
        for name in ("weight", "mean", "std"):
            if not torch.isfinite(getattr(self, name)).all():
                raise PreferenceError(f"preference head {name} is not finite")
        if not (self.std > 0).all():
            raise PreferenceError("preference head std must be positive")

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Scores (...) of features (..., D)."""
        w, m, s = (t.to(features.device, features.dtype) for t in (self.weight, self.mean, self.std))
        return ((features - m) / s) @ w


def save_head(head: PreferenceHead, folder: str | os.PathLike) -> Path:
    """Write ``preference.safetensors`` and ``preference.json`` into ``folder`` (atomically each)."""
    from ..fileio import write_json, write_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / HEAD_FILE, {k: getattr(head, k).detach().cpu().float().contiguous() for k in ("weight", "mean", "std")})
    write_json(folder / META_FILE, head.meta)
    return folder


def load_head(folder: str | os.PathLike) -> PreferenceHead:
    """The head saved in ``folder`` by :func:`save_head`; PreferenceError naming what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    hint = "; fit one with `python -m engine preferences fit --picks PICKS.json --out DIR`"
    if not (folder / HEAD_FILE).is_file() or not (folder / META_FILE).is_file():
        raise RewardModelMissing(f"no fitted preference in {folder} (needs {HEAD_FILE} and {META_FILE}){hint}")
    meta = read_strict_json(folder / META_FILE, "preference metadata")
    if not isinstance(meta, dict) or meta.get("feature") not in FEATURE_KINDS or not isinstance(meta.get("dim"), int):
        raise PreferenceError(f"{folder / META_FILE} is not preference metadata (needs feature and dim){hint}")
    try:
        tensors = load_file(str(folder / HEAD_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PreferenceError(f"{folder / HEAD_FILE} is unreadable (corrupt or not safetensors): {exc}") from None
    missing = sorted({"weight", "mean", "std"} - set(tensors))
    if missing:
        raise PreferenceError(f"{folder / HEAD_FILE} lacks tensor(s) {', '.join(missing)}")
    head = PreferenceHead(tensors["weight"].float(), tensors["mean"].float(), tensors["std"].float(), meta)
    if head.dim != meta["dim"]:
        raise PreferenceError(f"{folder / HEAD_FILE} holds {head.dim}-d tensors but its metadata says {meta['dim']}")
    return head


# --- fitting -----------------------------------------------------------------------------------------

def preference_pairs(marks: list[str], prompts: list[str], cross_prompt_weight: float = 1.0,
                     neutral_weight: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordered pairs (P, 2) of asset indices (better, worse) and their weights (P,).

    liked > disliked with weight 1 within a prompt and ``cross_prompt_weight`` across prompts;
    liked > neutral and neutral > disliked with ``neutral_weight`` times that.
    """
    rank = torch.tensor([{"liked": 2, "neutral": 1, "disliked": 0}[m] for m in marks])
    prompt_ids = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    pid = torch.tensor([prompt_ids[p] for p in prompts])
    gap = rank[:, None] - rank[None, :]  # (N, N): > 0 where row is preferred to column
    weight = torch.where(pid[:, None] == pid[None, :], 1.0, float(cross_prompt_weight)).double()
    weight = weight * torch.where(gap == 2, 1.0, float(neutral_weight)).double()
    keep = (gap > 0) & (weight > 0)
    pairs = keep.nonzero()
    return pairs, weight[keep]


def fit_bradley_terry(features: torch.Tensor, pairs: torch.Tensor, weights: torch.Tensor, l2: float = DEFAULT_L2
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Weights w (D,) minimising sum_p weight_p * softplus(-(s_better - s_worse)) / sum_p weight_p
    + l2 / (2 N) * |w|^2 with s = standardised(features) . w; features (N, D), N assets (the penalty
    shrinks as picks accumulate). Standardised: minus the mean, over the std floored at ``STD_FLOOR``
    times the median std. Returns (w, mean, std, stats), float32 tensors.

    A convex problem, solved with L-BFGS in float64 (a fraction of a second for hundreds of pairs).
    """
    if not math.isfinite(l2) or l2 <= 0:
        raise PreferenceError(f"l2 must be a finite number > 0, got {l2}")
    x = features.detach().to(torch.float64).cpu()
    if not torch.isfinite(x).all():
        raise PreferenceError("the image features of some picked asset are not finite")
    mean = x.mean(0)
    std = x.std(0, unbiased=False) if len(x) > 1 else torch.ones_like(mean)
    std = std.clamp_min(max(STD_FLOOR * float(std.median()), 1e-6))
    z = (x - mean) / std
    diff = z[pairs[:, 0]] - z[pairs[:, 1]]
    wts = weights / weights.sum()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (wts * torch.nn.functional.softplus(-(diff @ w))).sum() + 0.5 * l2 * w.pow(2).sum() / len(x)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        margin = diff @ w
        stats = {"pairs": int(len(pairs)), "train_pairwise_accuracy": float((margin > 0).double().mul(wts).sum()),
                 "train_loss": float((wts * torch.nn.functional.softplus(-margin)).sum())}
    return w.detach().float(), mean.float(), std.float(), stats


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (N,) for boolean labels ``positive`` (N,) (ties count 1/2)."""
    pos, neg = scores[positive.bool()], scores[~positive.bool()]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUC needs both positive and negative examples")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def cross_validate(features: torch.Tensor, marks: list[str], prompts: list[str], folds: int = 5, l2: float = DEFAULT_L2,
                   cross_prompt_weight: float = 1.0, seed: int = 0) -> dict:
    """Held-out agreement: assets split into ``folds`` folds (liked and disliked spread evenly), the head
    fitted on the others scores each fold. Returns ``auc`` (liked vs disliked, over all out-of-fold
    scores), ``pairwise_accuracy`` (liked > disliked pairs inside each held-out fold) and ``folds``."""
    n = len(marks)
    folds = max(2, min(folds, marks.count("liked"), marks.count("disliked")))
    gen = torch.Generator().manual_seed(seed)
    fold_of = torch.zeros(n, dtype=torch.long)
    for mark in MARKS:  # stratified: each class dealt round-robin after a shuffle
        idx = [i for i in range(n) if marks[i] == mark]
        order = torch.randperm(len(idx), generator=gen).tolist()
        for k, o in enumerate(order):
            fold_of[idx[o]] = k % folds
    scores = torch.zeros(n, dtype=torch.float64)
    correct = total = 0
    for f in range(folds):
        train = [i for i in range(n) if fold_of[i] != f]
        test = [i for i in range(n) if fold_of[i] == f]
        pairs, weights = preference_pairs([marks[i] for i in train], [prompts[i] for i in train], cross_prompt_weight)
        if len(pairs) == 0:
            continue
        w, mean, std, _ = fit_bradley_terry(features[train], pairs, weights, l2)
        s = ((features[test].double() - mean.double()) / std.double()) @ w.double()
        scores[test] = s
        for a, i in enumerate(test):
            for b, j in enumerate(test):
                if marks[i] == "liked" and marks[j] == "disliked":
                    total += 1
                    correct += float(s[a] > s[b]) + 0.5 * float(s[a] == s[b])
    keep = torch.tensor([m != "neutral" for m in marks])
    liked = torch.tensor([m == "liked" for m in marks])
    return {"folds": folds, "auc": auc(scores[keep], liked[keep]),
            "pairwise_accuracy": (correct / total) if total else None, "held_out_pairs": total}


# --- rendering picked assets -------------------------------------------------------------------------

def fit_orbit():
    """The fixed views picked assets are rendered from: the aligner's 4 orthogonal azimuths, no jitter."""
    from ..render.cameras import OrbitConfig

    return OrbitConfig(views=4, random_azimuth=False, elevation_jitter=0.0, azimuth_offset=0.0)


def fit_render_config(resolution: int = 32):
    """The renderer settings of fitting; 32 px, as ``align`` renders the reward by default."""
    from ..render.volume import VolumeRenderConfig

    return VolumeRenderConfig(resolution=resolution, samples=resolution)


@torch.no_grad()
def latent_features(model, latents: torch.Tensor, features: FeatureNet, resolution: int = 32, batch: int = 8) -> torch.Tensor:
    """Per-asset features (N, D): the mean over the fit views of each latent's rendered views."""
    from ..render import render
    from ..render.cameras import orbit_cameras

    cams = orbit_cameras(fit_orbit())
    config = fit_render_config(resolution)
    out = []
    for start in range(0, len(latents), batch):
        z = latents[start:start + batch].float()
        views = render(model.decode(z), cams, config)
        out.append(features(views.rgb, views.alpha).mean(1).cpu())
    return torch.cat(out)


def _load_latent(path: str, shape: tuple) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise PreferenceError(f"latent file {path} is unreadable (missing, corrupt or not safetensors): {exc}") from None
    latent = tensors.get("latent")
    if latent is None:
        raise PreferenceError(f"latent file {path} has no tensor 'latent'")
    latent = latent.float().reshape(-1, *latent.shape[-len(shape):])[0] if latent.dim() > len(shape) else latent.float()
    if tuple(latent.shape) != tuple(shape) or not torch.isfinite(latent).all():
        raise PreferenceError(f"latent file {path}: expected a finite latent of shape {tuple(shape)}, got {tuple(latent.shape)}")
    return latent


def pick_features(picks: list[Pick], features: FeatureNet, device: str | torch.device = "cpu", resolution: int = 32,
                  progress: Callable[[float, str], None] | None = None) -> torch.Tensor:
    """Features (N, D) of the picked assets: each one's latent (from its file, else sampled again from
    its prompt and seed with its model, adapter and sampler), rendered from the fit views. ``device``:
    a torch device or ``"auto"`` (:func:`engine.models.resolve_device`)."""
    from ..models import load_model, resolve_device
    from ..sampling.sampler import SamplerConfig, sample

    device = resolve_device(device)  # "auto" is no torch device: latents read from files move to it
    say = progress or (lambda f, m: None)
    out: list[torch.Tensor | None] = [None] * len(picks)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(picks):
        groups.setdefault(p.source_key(), []).append(i)
    done = 0
    for key, idx in groups.items():
        first = picks[idx[0]]
        model = load_model(first.model, first.model_path, device=device)
        if first.adapter is not None:
            from ..align.lora import load_adapter

            load_adapter(model, first.adapter, first.adapter_weight)
        config = SamplerConfig(**first.sampler).for_model(model)
        latents = [None] * len(idx)
        todo = [k for k, i in enumerate(idx) if picks[i].latent is None]
        for k, i in enumerate(idx):
            if picks[i].latent is not None:
                latents[k] = _load_latent(picks[i].latent, model.latent_shape).to(device)
        for start in range(0, len(todo), 8):
            chunk = todo[start:start + 8]
            z = sample(model, [picks[idx[k]].prompt for k in chunk], [picks[idx[k]].seed for k in chunk], config).latents
            for k, zz in zip(chunk, z):
                latents[k] = zz
            say(0.9 * (done + start + len(chunk)) / len(picks), f"sampled {done + start + len(chunk)} of {len(picks)} picked assets")
        feats = latent_features(model, torch.stack(latents), features, resolution)
        for k, i in enumerate(idx):
            out[i] = feats[k]
        done += len(idx)
    return torch.stack(out)


@dataclass(frozen=True)
class FitSettings:
    """How a preference is fitted; stored in the metadata. ``feature``: a kind of FEATURE_KINDS, or
    ``"auto"`` (:func:`select_feature_kind` chooses among :func:`auto_candidates`)."""

    feature: str = DEFAULT_FIT_FEATURE
    clip_model: str | None = None
    l2: float = DEFAULT_L2
    cross_prompt_weight: float = 1.0
    folds: int = 5
    resolution: int = 32
    min_liked: int = MIN_LIKED
    min_disliked: int = MIN_DISLIKED

    def __post_init__(self) -> None:
        if self.feature not in FIT_FEATURES:
            raise PreferenceError(f"unknown preference feature kind {self.feature!r}; choose one of {', '.join(FIT_FEATURES)}")
        if not (isinstance(self.l2, (int, float)) and math.isfinite(self.l2) and self.l2 > 0):
            raise PreferenceError(f"l2 must be a finite number > 0, got {self.l2!r}")
        if not (math.isfinite(self.cross_prompt_weight) and self.cross_prompt_weight >= 0):
            raise PreferenceError("cross_prompt_weight must be a finite number >= 0")
        if not 2 <= self.folds <= 100:
            raise PreferenceError("folds must be in 2..100")
        if not 8 <= self.resolution <= 512:
            raise PreferenceError("resolution must be in 8..512")


def auto_candidates(clip_model: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The kinds ``"auto"`` chooses among, simplest first: the proportions, then the rich features
    (a CLIP model's where one is configured, else the critic's), each with the layout cells."""
    return ("profile", "clip+layout" if clip_model is not None else "critic+layout")


def auto_feature_net(clip_model: str | os.PathLike | None = None, critic_weights: str | os.PathLike | None = None
                     ) -> ConcatFeatures:
    """Every candidate of ``"auto"`` side by side, so the picks are rendered once: (B, V, sum of D);
    :func:`split_features` takes the columns of each kind back out."""
    nets = [feature_net(k, clip_model, critic_weights if k.startswith("critic") else None) for k in auto_candidates(clip_model)]
    net = ConcatFeatures(AUTO, nets)
    net.source = nets[-1].source
    return net


def split_features(net: ConcatFeatures, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """The columns (..., D_kind) of each candidate kind in features (..., D) of :func:`auto_feature_net`."""
    out, start = {}, 0
    for n in net.nets:
        out[n.kind] = features[..., start:start + n.dim]
        start += n.dim
    return out


def select_feature_kind(features: dict[str, torch.Tensor], marks: list[str], prompts: list[str],
                        settings: FitSettings = FitSettings()) -> tuple[str, dict[str, float]]:
    """The kind ``"auto"`` fits: the first of ``features`` (kind -> (N, D), simplest first) whose
    cross-validated AUC is within AUTO_TOLERANCE of the best; and every kind's AUC."""
    check_pick_counts(marks, settings.min_liked, settings.min_disliked)
    aucs = {k: cross_validate(f, marks, prompts, settings.folds, settings.l2, settings.cross_prompt_weight)["auc"]
            for k, f in features.items()}
    best = max(aucs.values())
    return next(k for k, a in aucs.items() if a >= best - AUTO_TOLERANCE), aucs


def fit_head_auto(features: dict[str, torch.Tensor], marks: list[str], prompts: list[str],
                  settings: FitSettings = FitSettings(), feature_dim_source: str | None = None) -> PreferenceHead:
    """:func:`fit_head` on the kind :func:`select_feature_kind` chooses; the choice and every
    candidate's cross-validated AUC are kept in ``meta["feature_selection"]``."""
    kind, aucs = select_feature_kind(features, marks, prompts, settings)
    head = fit_head(features[kind], marks, prompts, dataclasses.replace(settings, feature=kind),
                    feature_dim_source if kind.startswith("critic") else None)
    head.meta["feature_selection"] = {"chosen": kind, "cross_validated_auc": aucs, "tolerance": AUTO_TOLERANCE}
    return head


def fit_head(features: torch.Tensor, marks: list[str], prompts: list[str],
             settings: FitSettings = FitSettings(feature=DEFAULT_FEATURE), feature_dim_source: str | None = None) -> PreferenceHead:
    """The head fitted on all picks, with its cross-validated agreement in ``meta["cross_validation"]``.
    ``settings.feature`` names the kind of ``features``; for ``"auto"`` use :func:`fit_head_auto`."""
    if settings.feature == AUTO:
        raise PreferenceError("fit_head needs the kind of its features; 'auto' chooses one with fit_head_auto")
    check_pick_counts(marks, settings.min_liked, settings.min_disliked)
    pairs, weights = preference_pairs(marks, prompts, settings.cross_prompt_weight)
    w, mean, std, stats = fit_bradley_terry(features, pairs, weights, settings.l2)
    cv = cross_validate(features, marks, prompts, settings.folds, settings.l2, settings.cross_prompt_weight)
    meta = {
        "format": "nabla-preference", "version": 1, "feature": settings.feature, "dim": int(features.shape[1]),
        "clip_model": settings.clip_model, "critic_weights": feature_dim_source,
        "views": dataclasses.asdict(fit_orbit()), "resolution": settings.resolution,
        "fit": {"l2": settings.l2, "cross_prompt_weight": settings.cross_prompt_weight, **stats},
        "picks": {m: marks.count(m) for m in MARKS}, "prompts": sorted(set(prompts)),
        "cross_validation": cv,
    }
    return PreferenceHead(w, mean, std, meta)


def fit_preferences(picks_path: str | os.PathLike, out_dir: str | os.PathLike, settings: FitSettings = FitSettings(),
                    device: str = "cpu", progress: Callable[[float, str], None] | None = None) -> PreferenceHead:
    """Read ``picks_path``, render and featurise the picked assets on ``device`` (a torch device or
    ``"auto"``), fit the head, save it in ``out_dir``.

    The pick counts are checked before any model is loaded. Returns the saved head.
    """
    picks = load_picks(picks_path)
    marks = [p.mark for p in picks]
    check_pick_counts(marks, settings.min_liked, settings.min_disliked)
    prompts = [p.prompt for p in picks]
    auto = settings.feature == AUTO
    net = auto_feature_net(settings.clip_model) if auto else feature_net(settings.feature, settings.clip_model)
    feats = pick_features(picks, net, device, settings.resolution, progress)
    if auto:
        head = fit_head_auto(split_features(net, feats), marks, prompts, settings, net.source)
    else:
        head = fit_head(feats, marks, prompts, settings, net.source if settings.feature.startswith("critic") else None)
    save_head(head, out_dir)
    return head


# --- the reward --------------------------------------------------------------------------------------

class PreferenceReward(Reward):
    """Per-view scores (B, V) of a fitted preference head on frozen features of the rendered views."""

    name = "preference"
    differentiable = True
    channels = frozenset({"rgb"})

    def __init__(self, head: PreferenceHead, features: FeatureNet, mode: str = "logit"):
        if features.dim != head.dim:
            raise PreferenceError(f"the preference head takes {head.dim}-d features but the {features.kind} network gives {features.dim}-d")
        if mode not in REWARD_MODES:
            raise PreferenceError(f"preference mode must be one of {', '.join(REWARD_MODES)}, not {mode!r}")
        self.head, self.features, self.mode = head, features, mode
        if features.needs_alpha:
            self.channels = frozenset({"rgb", "alpha"})

    def score_views(self, renders: RenderOutput | torch.Tensor, prompts: list[str]) -> torch.Tensor:
        rgb = renders.rgb if isinstance(renders, RenderOutput) else renders
        if not isinstance(rgb, torch.Tensor) or rgb.dim() != 5 or rgb.shape[2] != 3:
            raise ValueError(f"expected rgb renders (B, V, 3, R, R), got {getattr(rgb, 'shape', type(rgb).__name__)}")
        if len(prompts) != rgb.shape[0]:
            raise ValueError(f"{rgb.shape[0]} rendered assets but {len(prompts)} prompts")
        alpha = renders.alpha if isinstance(renders, RenderOutput) else None
        score = self.head.score(self.features(rgb, alpha))
        # log_prob saturates once a view beats the average pick: less pull toward features far off the picks
        return torch.nn.functional.logsigmoid(score) if self.mode == "log_prob" else score


def load_preference(path: str | os.PathLike, clip_model: str | os.PathLike | None = None, mode: str = "logit") -> PreferenceReward:
    """The reward of the preference folder ``path``; ``clip_model`` overrides the CLIP folder it was fitted with;
    ``mode``: ``"logit"`` (the head's score) or ``"log_prob"`` (log sigmoid of it, <= 0)."""
    if mode not in REWARD_MODES:  # before any network is loaded
        raise PreferenceError(f"preference mode must be one of {', '.join(REWARD_MODES)}, not {mode!r}")
    head = load_head(path)
    kind = head.meta["feature"]
    clip = clip_model if clip_model is not None else head.meta.get("clip_model")
    return PreferenceReward(head, feature_net(kind, clip, head.meta.get("critic_weights") if kind.startswith("critic") else None), mode)
