"""Data and training for the prompt-alignment critic (``engine.rewards.critic``); bpy-free.

Data are volume renders (white background, orbit cameras with random azimuth and elevation
jitter) of two kinds of object, each stored as uint8 images per object and view:

* **Ground truth**: procedural fields (``sample_spec`` + ``field_volume`` at 32^3) for every
  shape x colour x allowed size word, labelled by their prompt. Most are degraded before
  rendering so that the critic also reads the embedded model's blurrier, lumpier samples:
  a round trip through the model's own autoencoder with latent noise, a 3D Gaussian blur, or
  low-frequency tsdf and colour noise with occasional floaters. Colour noise stays small next to
  the distance between palette colours, so the colour class does not change.
* **Model samples**: the embedded model's samples for those prompts, decoded at 32^3, labelled
  by its geometric judge ``engine.models.embedded.shape_judge`` (shape and colour separately; a
  verdict of "unknown" is left out of that head's loss). Labelling with the judge's verdict rather than the
  prompt keeps the model's failures (pyramids that came out as cones) from being taught as
  successes, and gives the critic the model's own artefacts as examples.

Training: cross-entropy on both heads with label smoothing, AdamW with a cosine schedule, and
image-space augmentation (foreground colour jitter, small shifts, and down-sampling to 32 px so
that low-resolution renders read the same).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..models.embedded.grammar import COLOURS, SHAPES, Prompt, parse_prompt
from ..models.embedded.procedural import TRUNCATION, field_volume, grid_points, sample_spec
from ..models.fields import SDFGrid
from ..render import OrbitConfig, VolumeRenderConfig, orbit_cameras, render
from ..rewards.critic import CriticConfig, CriticNet

Log = Callable[[str], None]
DEGRADATIONS = ("clean", "autoencoder", "blur", "noise")
SOURCES = ("ground_truth", "model_sample")


# ----------------------------------------------------------------------------- data


@dataclass
class RenderSet:
    """N objects seen from V views. Images are uint8 so a few thousand fit in memory.

    ``images`` (N, V, 3, R, R) and ``alpha`` (N, V, 1, R, R) uint8; ``shape`` / ``colour`` (N,)
    the training labels (indices into SHAPES / COLOURS, -1 = no label); ``prompt_shape`` /
    ``prompt_colour`` (N,) the labels of the prompt the object was made for (-1: colour left open);
    ``source`` (N,) an index into :data:`SOURCES`.
    """

    images: torch.Tensor
    alpha: torch.Tensor
    shape: torch.Tensor
    colour: torch.Tensor
    prompt_shape: torch.Tensor
    prompt_colour: torch.Tensor
    source: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def views(self) -> int:
        return int(self.images.shape[1])

    def float_images(self) -> torch.Tensor:
        return self.images.float() / 255.0

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def cat(cls, sets: Sequence["RenderSet"]) -> "RenderSet":
        return cls(**{k: torch.cat([getattr(s, k) for s in sets]) for k in cls.__dataclass_fields__})


def _labels(prompt: Prompt) -> tuple[int, int]:
    return SHAPES.index(prompt.shape) if prompt.shape else -1, list(COLOURS).index(prompt.colour) if prompt.colour else -1


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def render_views(
    fields: torch.Tensor, views: int, resolution: int, generator: torch.Generator, elevation: float = 20.0, jitter: float = 15.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render fields (B, 4, D, D, D) from one draw of ``views`` orbit cameras (random azimuth,
    elevation jittered by +-``jitter`` degrees): rgb (B, V, 3, R, R) and alpha (B, V, 1, R, R), uint8."""
    cams = orbit_cameras(OrbitConfig(views=views, elevation=elevation, random_azimuth=True, elevation_jitter=jitter), generator)
    with torch.no_grad():
        out = render(SDFGrid(fields, TRUNCATION), cams, VolumeRenderConfig(resolution=resolution))
    return _to_uint8(out.rgb), _to_uint8(out.alpha)


def _gaussian_blur3d(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, D, H, W), sigma in voxels, edges replicated."""
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = k.numel()
        pad = [0] * 6
        pad[2 * (2 - dim)] = pad[2 * (2 - dim) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), k.view(shape).expand(c, 1, *shape[2:]), groups=c)
    return x


def _low_frequency(shape: tuple[int, ...], cells: int, resolution: int, g: torch.Generator) -> torch.Tensor:
    """Smooth noise (B, C, R, R, R), unit std per cell, interpolated from a ``cells``^3 lattice."""
    coarse = torch.randn(*shape, cells, cells, cells, generator=g)
    return F.interpolate(coarse, size=(resolution,) * 3, mode="trilinear", align_corners=True)


def degrade(field: torch.Tensor, kind: str, g: torch.Generator, autoencoder=None) -> torch.Tensor:
    """One ground-truth field (4, R, R, R) made to look more like a model sample.

    ``autoencoder``: the embedded model's round trip, with latent noise of std U(0, 0.4) (needs
    ``autoencoder``, a ``FieldAutoencoder``); ``blur``: Gaussian blur of every channel with sigma
    U(0.4, 1.0) voxels (more rounds pyramids into cones, which would teach the critic to accept
    exactly the model's typical failure); ``noise``: smooth tsdf noise of amplitude U(0.1, 0.4) (up
    to 0.08 world units of surface displacement), smooth colour noise of std <= 0.03 and, half the
    time, one to three small floaters of the object's colour; ``clean``: unchanged.
    """
    if kind == "clean":
        return field
    x = field[None]
    res = field.shape[-1]
    if kind == "autoencoder":
        if autoencoder is None:
            raise ValueError("the 'autoencoder' degradation needs the model's autoencoder")
        with torch.no_grad():
            mean, _ = autoencoder.encode(x)
            sigma = 0.4 * float(torch.rand((), generator=g))
            z = mean + sigma * torch.randn(mean.shape, generator=g)
            return autoencoder.decode_grid(z, res)[0]
    if kind == "blur":
        sigma = 0.4 + 0.6 * float(torch.rand((), generator=g))
        return _gaussian_blur3d(x, sigma)[0]
    if kind == "noise":
        amp = 0.1 + 0.3 * float(torch.rand((), generator=g))
        tsdf = x[:, :1] + amp * _low_frequency((1, 1), 5, res, g)
        colour_std = 0.03 * float(torch.rand((), generator=g))
        rgb = (x[:, 1:] + colour_std * _low_frequency((1, 3), 4, res, g)).clamp(0, 1)
        if float(torch.rand((), generator=g)) < 0.5:
            pts = grid_points(res).permute(3, 0, 1, 2)[None]  # (1, 3, z, y, x) as (x, y, z)
            for _ in range(int(torch.randint(1, 4, (), generator=g))):
                centre = (torch.rand(3, generator=g) * 1.6 - 0.8).view(1, 3, 1, 1, 1)
                radius = 0.05 + 0.07 * float(torch.rand((), generator=g))
                blob = ((pts - centre).norm(dim=1, keepdim=True) - radius) / TRUNCATION
                tsdf = torch.minimum(tsdf, blob.clamp(-1, 1))
        return torch.cat([tsdf.clamp(-1, 1), rgb], 1)[0]
    raise ValueError(f"unknown degradation {kind!r}; choose from {', '.join(DEGRADATIONS)}")


@dataclass(frozen=True)
class GroundTruthConfig:
    """Which ground-truth objects to render and how."""

    prompts: tuple[str, ...]
    seeds_per_prompt: int = 1
    first_seed: int = 0  # object i of prompt p uses generator seed first_seed + p * seeds_per_prompt + i
    views: int = 2
    resolution: int = 64
    degradations: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)  # probabilities, in DEGRADATIONS order
    batch: int = 16
    elevation: float = 20.0
    elevation_jitter: float = 15.0


def ground_truth_set(cfg: GroundTruthConfig, autoencoder=None, log: Log | None = None) -> RenderSet:
    """Render ``cfg.seeds_per_prompt`` procedural objects per prompt, labelled by their prompt."""
    if len(cfg.degradations) != len(DEGRADATIONS) or abs(sum(cfg.degradations) - 1) > 1e-6:
        raise ValueError(f"degradations must be {len(DEGRADATIONS)} probabilities summing to 1 ({DEGRADATIONS})")
    jobs = [(parse_prompt(p), cfg.first_seed + k * cfg.seeds_per_prompt + i) for k, p in enumerate(cfg.prompts) for i in range(cfg.seeds_per_prompt)]
    probs = torch.tensor(cfg.degradations)
    cam_gen = torch.Generator().manual_seed(cfg.first_seed + 7919)
    parts, t0 = [], time.perf_counter()
    for start in range(0, len(jobs), cfg.batch):
        fields = []
        for prompt, seed in jobs[start : start + cfg.batch]:
            g = torch.Generator().manual_seed(seed)
            spec = sample_spec(g, prompt)
            kind = DEGRADATIONS[int(torch.multinomial(probs, 1, generator=g))]
            fields.append(degrade(field_volume(spec, 32), kind, g, autoencoder))
        rgb, alpha = render_views(torch.stack(fields), cfg.views, cfg.resolution, cam_gen, cfg.elevation, cfg.elevation_jitter)
        parts.append((rgb, alpha))
        if log and (start // cfg.batch) % 20 == 0:
            log(f"  ground truth {start + len(fields)}/{len(jobs)} ({time.perf_counter() - t0:.0f} s)")
    labels = torch.tensor([_labels(p) for p, _ in jobs], dtype=torch.long).view(-1, 2)
    return RenderSet(
        images=torch.cat([p[0] for p in parts]),
        alpha=torch.cat([p[1] for p in parts]),
        shape=labels[:, 0].clone(),
        colour=labels[:, 1].clone(),
        prompt_shape=labels[:, 0].clone(),
        prompt_colour=labels[:, 1].clone(),
        source=torch.zeros(len(jobs), dtype=torch.long),
    )


@dataclass(frozen=True)
class SampleConfig:
    """Which embedded-model samples to render, and how."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]  # every prompt is sampled with every seed
    views: int = 2
    resolution: int = 64
    steps: int = 20
    # The committed critic saw samples at guidance 8, the model's default until its guidance sweep
    # (docs/embedded_guidance_sweep.md) moved it to 4: pinned so the recipe still reproduces it.
    guidance: float = 8.0
    batch: int = 16
    camera_seed: int = 0
    elevation: float = 20.0
    elevation_jitter: float = 15.0


def model_sample_set(model, cfg: SampleConfig, log: Log | None = None) -> RenderSet:
    """Sample, render and judge (``engine.models.embedded.shape_judge``) the model's assets for ``cfg``.

    ``shape`` / ``colour`` hold the judge's verdicts (-1 where it says unknown), ``prompt_*`` the
    prompt's labels.
    """
    from ..models.embedded.shape_judge import UNKNOWN, judge
    from ..sampling.sampler import SamplerConfig, sample

    jobs = [(p, s) for p in cfg.prompts for s in cfg.seeds]
    cam_gen = torch.Generator().manual_seed(cfg.camera_seed)
    sampler = SamplerConfig(steps=cfg.steps, guidance=cfg.guidance)
    rows: dict[str, list] = {k: [] for k in RenderSet.__dataclass_fields__}
    t0 = time.perf_counter()
    for start in range(0, len(jobs), cfg.batch):
        prompts = [p for p, _ in jobs[start : start + cfg.batch]]
        seeds = [s for _, s in jobs[start : start + cfg.batch]]
        latents = sample(model, prompts, seeds, sampler).latents
        with torch.no_grad():
            fields = model.decode(latents).grid
        rgb, alpha = render_views(fields, cfg.views, cfg.resolution, cam_gen, cfg.elevation, cfg.elevation_jitter)
        rows["images"].append(rgb)
        rows["alpha"].append(alpha)
        for prompt, mesh in zip(prompts, model.latents_to_meshes(latents)):
            report = judge(mesh, prompt)
            ps, pc = _labels(report.prompt)
            rows["shape"].append(SHAPES.index(report.shape) if report.shape != UNKNOWN else -1)
            rows["colour"].append(list(COLOURS).index(report.colour) if report.colour != UNKNOWN else -1)
            rows["prompt_shape"].append(ps)
            rows["prompt_colour"].append(pc)
        if log and (start // cfg.batch) % 5 == 0:
            log(f"  model samples {start + len(prompts)}/{len(jobs)} ({time.perf_counter() - t0:.0f} s)")
    return RenderSet(
        images=torch.cat(rows["images"]),
        alpha=torch.cat(rows["alpha"]),
        **{k: torch.tensor(rows[k], dtype=torch.long) for k in ("shape", "colour", "prompt_shape", "prompt_colour")},
        source=torch.ones(len(jobs), dtype=torch.long),
    )


def cached_set(cache_dir: str | Path | None, name: str, key: dict, build: Callable[[], RenderSet], log: Log | None = None) -> RenderSet:
    """``build()``, or the set stored under ``cache_dir`` for the same ``name`` and ``key``.

    The key (any JSON-able description of how the set is made) is hashed into the file name, so
    a changed recipe never reads a stale cache. ``cache_dir=None`` disables caching.
    """
    if cache_dir is None:
        return build()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{name}-{digest}.pt"
    if path.is_file():
        try:
            data = torch.load(path, weights_only=True)
            if log:
                log(f"{name}: read from cache {path}")
            return RenderSet(**data)
        except Exception as exc:  # a corrupt cache file is rebuilt, not fatal
            if log:
                log(f"{name}: cache {path} unreadable ({exc}); rebuilding")
    t0 = time.perf_counter()
    out = build()
    if log:
        log(f"{name}: built {len(out)} objects x {out.views} views in {time.perf_counter() - t0:.0f} s")
    from ..fileio import atomic_write

    atomic_write(path, lambda tmp: torch.save(out.to_dict(), tmp))
    return out


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class CriticTrainConfig:
    seed: int = 0
    epochs: int = 30
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    sample_weight: float = 2.0  # model-sample views are drawn this many times as often per epoch
    low_res_prob: float = 0.3  # chance a view is shown at 32 px (then resized up by the network)
    shift: int = 4  # max translation, pixels at 64 px
    colour_jitter: float = 0.03  # max foreground gain/offset per channel


def augment(images: torch.Tensor, alpha: torch.Tensor, cfg: CriticTrainConfig, g: torch.Generator) -> torch.Tensor:
    """Training views (N, 3, R, R) in [0, 1], background white, with their alpha (N, 1, R, R).

    Foreground colour: per-channel gain 1 +- j and offset +- j (j = ``colour_jitter``), blended by
    alpha so the background stays white. Then a shift of up to ``shift`` pixels (white fill), and
    with probability ``low_res_prob`` a bilinear down-sampling to half size.
    """
    n = images.shape[0]
    j = cfg.colour_jitter
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1) * j
    offset = (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1) * j
    fg = (images * gain + offset * alpha).clamp(0, 1)
    x = alpha * fg + (1 - alpha) * images  # background pixels keep their value
    if cfg.shift > 0:
        s = cfg.shift
        padded = F.pad(x, (s, s, s, s), value=1.0)
        dx = torch.randint(0, 2 * s + 1, (n,), generator=g)
        dy = torch.randint(0, 2 * s + 1, (n,), generator=g)
        r = x.shape[-1]
        x = torch.stack([padded[i, :, dy[i] : dy[i] + r, dx[i] : dx[i] + r] for i in range(n)])
    if cfg.low_res_prob > 0 and float(torch.rand((), generator=g)) < cfg.low_res_prob:
        # Per batch, not per view: the network resizes every view of a batch the same way.
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    return x


def _flat_views(data: RenderSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    v = data.views
    rep = lambda t: t.repeat_interleave(v)  # noqa: E731
    return data.images.flatten(0, 1), data.alpha.flatten(0, 1), rep(data.shape), rep(data.colour), rep(data.source)


def train_critic(
    data: RenderSet, cfg: CriticTrainConfig = CriticTrainConfig(), net_cfg: CriticConfig = CriticConfig(), log: Log | None = None
) -> tuple[CriticNet, list[dict]]:
    """Train a fresh critic on every view of ``data``; returns it (eval mode) and per-epoch stats."""
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    net = CriticNet(net_cfg)
    images, alpha, shape, colour, source = _flat_views(data)
    weights = torch.where(source == 1, cfg.sample_weight, 1.0)
    per_epoch = len(images)
    steps_per_epoch = max(1, per_epoch // cfg.batch)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    history, t0 = [], time.perf_counter()
    net.train()
    for epoch in range(cfg.epochs):
        order = torch.multinomial(weights, steps_per_epoch * cfg.batch, replacement=True, generator=g)
        sums = torch.zeros(4)
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch : (step + 1) * cfg.batch]
            x = augment(images[idx].float() / 255, alpha[idx].float() / 255, cfg, g)
            s_logits, c_logits, _ = net(x)
            loss_s = F.cross_entropy(s_logits, shape[idx], ignore_index=-1, label_smoothing=cfg.label_smoothing)
            loss_c = F.cross_entropy(c_logits, colour[idx], ignore_index=-1, label_smoothing=cfg.label_smoothing)
            loss = torch.nan_to_num(loss_s) + torch.nan_to_num(loss_c)  # a batch without labels for a head gives nan
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                ok_s = (s_logits.argmax(-1) == shape[idx])[shape[idx] >= 0].float().mean()
                ok_c = (c_logits.argmax(-1) == colour[idx])[colour[idx] >= 0].float().mean()
            sums += torch.tensor([loss_s.item(), loss_c.item(), ok_s.item(), ok_c.item()])
        m = (sums / steps_per_epoch).tolist()
        stats = dict(epoch=epoch + 1, loss_shape=m[0], loss_colour=m[1], train_shape_acc=m[2], train_colour_acc=m[3], seconds=time.perf_counter() - t0)
        history.append(stats)
        if log:
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss shape {m[0]:.3f} colour {m[1]:.3f}, "
                f"train acc shape {m[2]:.1%} colour {m[3]:.1%} ({stats['seconds']:.0f} s)"
            )
    net.eval()
    net.requires_grad_(False)
    return net, history


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_set(net: CriticNet, data: RenderSet, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and colour log-probabilities per view: (N, V, S) and (N, V, C)."""
    views = data.float_images().flatten(0, 1)
    out_s, out_c = [], []
    for i in range(0, len(views), batch):
        s, c, _ = net(views[i : i + batch])
        out_s.append(s.log_softmax(-1))
        out_c.append(c.log_softmax(-1))
    n, v = len(data), data.views
    return torch.cat(out_s).view(n, v, -1), torch.cat(out_c).view(n, v, -1)


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    keep = labels >= 0
    return float((pred[keep] == labels[keep]).float().mean()) if keep.any() else float("nan")


@dataclass
class CriticMetrics:
    """Accuracies in [0, 1]: per object (log-probs averaged over views) and per single view."""

    objects: int
    views: int
    shape: float  # against ``labels`` (the prompt for ground truth, the judge for samples)
    colour: float
    shape_per_view: float
    colour_per_view: float
    shape_vs_prompt: float
    colour_vs_prompt: float
    judge_shape_vs_prompt: float | None = None  # model samples only: the judge's own accuracy
    judge_colour_vs_prompt: float | None = None
    shape_predictions: list[str] = field(default_factory=list)
    colour_predictions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("shape_predictions")
        d.pop("colour_predictions")
        return d


def evaluate_critic(net: CriticNet, data: RenderSet) -> CriticMetrics:
    """Accuracies of ``net`` on ``data``; for model samples ``shape``/``colour`` measure agreement with the judge."""
    s_lp, c_lp = predict_set(net, data)
    s_obj, c_obj = s_lp.mean(1).argmax(-1), c_lp.mean(1).argmax(-1)
    v = data.views
    samples = bool((data.source == 1).any())
    return CriticMetrics(
        objects=len(data),
        views=v,
        shape=_accuracy(s_obj, data.shape),
        colour=_accuracy(c_obj, data.colour),
        shape_per_view=_accuracy(s_lp.argmax(-1).flatten(), data.shape.repeat_interleave(v)),
        colour_per_view=_accuracy(c_lp.argmax(-1).flatten(), data.colour.repeat_interleave(v)),
        shape_vs_prompt=_accuracy(s_obj, data.prompt_shape),
        colour_vs_prompt=_accuracy(c_obj, data.prompt_colour),
        judge_shape_vs_prompt=_accuracy(data.shape, data.prompt_shape) if samples else None,
        judge_colour_vs_prompt=_accuracy(data.colour, data.prompt_colour) if samples else None,
        shape_predictions=[SHAPES[i] for i in s_obj.tolist()],
        colour_predictions=[list(COLOURS)[i] for i in c_obj.tolist()],
    )


def config_dict(cfg) -> dict:
    """A dataclass config as a JSON-able dict (for caches and the weights' JSON)."""
    return json.loads(json.dumps(asdict(cfg), default=list, allow_nan=False))
