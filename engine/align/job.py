"""One alignment job from start to finish, shared by the CLI (``python -m engine align``), the main
job and the Blender worker: measure the base model on held-out seeds, finetune, measure again, and
write the adapter, the log, plots, a before/after sheet and a JSON report.

Files in ``out_dir``: ``adapter/`` (peft folder), ``log.jsonl`` (one line per round),
``reward_curve.png`` (training batches and held-out reward), ``before_after.png`` (the same held-out
prompt/seed pairs rendered before and after training, side by side), ``report.json``;
``checkpoint.pt`` while the run is going (kept for resuming); ``previews/``: every
``preview_every`` rounds the current model's asset for the first held-out prompt, as ``.npz`` mesh
and ``.png`` thumbnail, both announced through the ``preview`` callback (the Blender layer shows the
mesh as a preview object in the scene and the PNG in its Previews panel).
With ``checkpoint_adapters``, ``checkpoints/round_XXXX/adapter/`` keeps the adapter of every
checkpoint round (every ``checkpoint_every`` rounds and the last), so the run can be measured along
the way (scripts/evaluate_alignment.py evaluates them: one run gives a curve, not a point).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..fileio import folder_lock, write_json
from ..imaging import save_png, to_pil
from ..plots import before_after_sheet, reward_curve_plot
from ..params import (MAX_BETA, MAX_EVAL_SEEDS, MAX_LR, MAX_SEED, BadInput, check_bool, check_device, check_fields,
                      check_float, check_int, check_str)
from ..render import render
from ..render.cameras import OrbitConfig, orbit_cameras
from ..render.volume import VolumeRenderConfig
from ..rewards.registry import check_reward_for_model, parse_reward_expression
from ..sampling.sampler import SamplerConfig, sample
from ..models import model_spec, prompt_rules
from ..names import GRADIENT_FREE_METHODS, MODELS, RENDERERS
from .config import AlignConfig
from .lora import lora_disabled
from .objective import CyclesRenderedReward, RenderedReward
from .trainer import CHECKPOINT, Aligner, StepRecord, world

EVAL_SEED_BASE = 1_000_000  # held-out seeds: training draws seeds from its own generator
BEFORE_AFTER = "before_after.png"  # the before/after sheet, in out_dir


@dataclass
class AlignJob:
    """What a user chooses; everything else comes from :class:`AlignConfig` defaults."""

    out_dir: str
    reward: str = "dnc"  # a reward name or weighted expression of the registry
    reward_options: dict = field(default_factory=dict)  # {reward name: {option: value}}
    method: str = "nabla"
    steps: int = 30
    prompts: list[str] | None = None  # None: the model's default prompts (its tuning.py, AlignmentDefaults.prompts)
    eval_seeds: int = 2  # held-out seeds per prompt for before/after
    beta: float | None = None  # None: the model's tuned beta for the reward (first term of an expression)
    trust_region: float | None = None
    lr: float | None = None
    lora_rank: int | None = None
    trajectories: int | None = None
    seed: int = 0
    device: str = "cpu"
    resume: bool = True
    preview_every: int = 5  # rounds between preview meshes/thumbnails of the current model (0: none)
    model: str = "embedded"  # a name of the model registry (engine/models/__init__.py)
    model_path: str | None = None  # folder of its weights; None: the bundled ones
    renderer: str = "volume"  # RENDERERS: "cycles" renders meshes with Blender (DDPO only)
    cycles_samples: int = 16  # Cycles samples per pixel (renderer "cycles")
    # keep the adapter of every checkpoint round under checkpoints/round_XXXX/adapter (not part of the
    # run's identity: it changes what is kept, not what is trained)
    checkpoint_adapters: bool = False
    extra: dict = field(default_factory=dict)  # any other AlignConfig field

    def __post_init__(self) -> None:
        """Check every field's type and range: the worker's JSON can hold anything, and a wrong type
        (``steps: "30"``) would otherwise fail as a TypeError deep in the run instead of naming the
        field. :class:`BadInput` is a ValueError: exit 2 on the CLI, ``bad_input`` in the worker."""
        self.out_dir = check_str("out_dir", self.out_dir)
        self.reward = check_str("reward", self.reward)
        if not isinstance(self.reward_options, dict) or not all(isinstance(v, dict) for v in self.reward_options.values()):
            raise BadInput(f"reward_options must map reward names to objects of options, got {self.reward_options!r}")
        self.method = check_str("method", self.method)
        self.steps = check_int("steps", self.steps, 0)
        self.model = check_str("model", self.model)
        if self.model not in MODELS:
            raise BadInput(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.prompts is None:
            self.prompts = list(model_spec(self.model).alignment.prompts)
            if not self.prompts:
                raise BadInput(f"model {self.model!r} has no default prompts: name the prompts to align on")
        if not isinstance(self.prompts, (list, tuple)) or not self.prompts:
            raise BadInput(f"prompts must be a non-empty list of prompts, got {self.prompts!r}")
        self.prompts = [check_str("prompts[]", p) for p in self.prompts]
        self.model_path = check_str("model_path", self.model_path, nullable=True)
        prompt_rules(self.model).validate(self.prompts)  # PromptError (a ValueError) names the bad word
        check_reward_for_model(self.reward, self.model)  # e.g. the critic reads the embedded model's prompts only
        self.eval_seeds = check_int("eval_seeds", self.eval_seeds, 1, MAX_EVAL_SEEDS)
        self.beta = check_float("beta", self.beta, 0.0, MAX_BETA, nullable=True)
        self.trust_region = check_float("trust_region", self.trust_region, 0.0, nullable=True)
        self.lr = check_float("lr", self.lr, 0.0, MAX_LR, nullable=True)
        self.lora_rank = check_int("lora_rank", self.lora_rank, 1, nullable=True)
        self.trajectories = check_int("trajectories", self.trajectories, 1, nullable=True)
        self.seed = check_int("seed", self.seed, -MAX_SEED, MAX_SEED)
        self.device = check_device(self.device)
        self.resume = check_bool("resume", self.resume)
        self.preview_every = check_int("preview_every", self.preview_every, 0)
        self.renderer = check_str("renderer", self.renderer)
        if self.renderer not in RENDERERS:
            raise BadInput(f"unknown renderer {self.renderer!r}; choose one of {', '.join(RENDERERS)}")
        if self.renderer == "cycles" and self.method not in GRADIENT_FREE_METHODS:
            raise BadInput(f"method {self.method} needs the reward's gradient, and Cycles renders have none: "
                           f"use the volume renderer, or method {' / '.join(GRADIENT_FREE_METHODS)} with Cycles")
        self.cycles_samples = check_int("cycles_samples", self.cycles_samples, 1, 4096)
        self.checkpoint_adapters = check_bool("checkpoint_adapters", self.checkpoint_adapters)
        self.extra = check_fields("extra", self.extra, AlignConfig)

    @classmethod
    def from_params(cls, params: dict) -> "AlignJob":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise BadInput(f"unknown alignment parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        if "out_dir" not in params:
            raise BadInput("alignment needs out_dir")
        return cls(**params)

    def config(self) -> AlignConfig:
        # Unset numbers come from the model's tuned defaults (engine/models/tuning.py); a weighted
        # sum takes the defaults of its first term.
        tuned = model_spec(self.model).alignment
        first = parse_reward_expression(self.reward)[0][1]
        beta = self.beta if self.beta is not None else tuned.beta_for(first)
        chosen = {"method": self.method, "steps": self.steps, "beta": beta, "seed": self.seed}
        tuned_lr = tuned.lr_for(self.method, first)
        if tuned_lr is not None:
            chosen["lr"] = tuned_lr
        for name in ("trust_region", "lr", "lora_rank", "trajectories"):
            if getattr(self, name) is not None:
                chosen[name] = getattr(self, name)
        extra = dict(self.extra)
        for key in ("sampler", "orbit", "render"):
            if isinstance(extra.get(key), dict):
                # fields left out keep AlignConfig's defaults (e.g. the aligner's own scheduler)
                extra[key] = dataclasses.replace(getattr(AlignConfig, key), **extra[key])
        config = AlignConfig(**{**chosen, **extra})
        check_float("beta", config.beta, 0.0, MAX_BETA)  # again: extra may set them too
        check_float("lr", config.lr, 0.0, MAX_LR)
        return config


class AlignmentDiverged(RuntimeError):
    """A round's loss, reward or gradient norm, or a held-out reward, turned non-finite: the run stops
    there, before NaN reaches a file (exit 1 on the CLI, ``runtime`` in the worker)."""


class _FiniteAligner(Aligner):
    """An :class:`Aligner` that stops at the first round with a non-finite number in its record.

    The check sits in ``train_step`` rather than in ``run``'s progress callback because ``run``
    appends the round to ``log.jsonl`` and may save ``checkpoint.pt`` before calling back: checked
    here, the log stays strict JSON and the checkpoint keeps the last good round's weights (a
    non-finite loss or gradient has already spoilt the weights in memory).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoint_step = self.step if self.step > 0 else None  # resumed from a checkpoint

    def train_step(self, should_cancel=None) -> StepRecord:
        record = super().train_step(should_cancel)
        bad = {k: v for k, v in record.to_json().items() if isinstance(v, float) and not math.isfinite(v)}
        if bad:
            self.history.pop()
            raise AlignmentDiverged(self._diverged(record.step, bad))
        return record

    def save_checkpoint(self):
        path = super().save_checkpoint()
        self.checkpoint_step = self.step
        return path

    def _diverged(self, step: int, bad: dict) -> str:
        what = ", ".join(f"{k} = {v}" for k, v in bad.items())
        if self.out_dir is None or self.checkpoint_step is None:
            kept = "no checkpoint had been written yet"
        else:
            kept = f"the last good checkpoint is kept in {self.out_dir / CHECKPOINT} (round {self.checkpoint_step})"
        return f"alignment diverged at round {step}: {what}; {kept}; lower beta or lr and start again in a new folder"


def _require_finite(rewards: torch.Tensor, what: str) -> None:
    """Held-out rewards go into the sheets, the curve and report.json: none of them can take NaN."""
    if not torch.isfinite(rewards).all():
        raise AlignmentDiverged(f"the reward is not finite on {what}: {rewards.tolist()}")


@torch.no_grad()
def evaluate(model, objective: RenderedReward, prompts: list[str], seeds: list[int], sampler: SamplerConfig,
             base: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample (prompt, seed) pairs and score them from fixed cameras: latents (N, *L), rewards (N,)."""
    with lora_disabled(model) if base else contextlib.nullcontext():
        latents = sample(model, prompts, seeds, sampler).latents
    views = orbit_cameras(dataclasses.replace(objective.orbit, random_azimuth=False, elevation_jitter=0.0, azimuth_offset=30.0))
    rewards = torch.cat([objective(latents[i:i + 8], prompts[i:i + 8], views) for i in range(0, len(prompts), 8)])
    return latents, rewards


# Pixels a side of the before/after sheet's renders. With the volume renderer's 64 ray samples a
# render costs about 1.0 s at 128 px, 2.3 s at 192 and 4.2 s at 256 (embedded model, one CPU thread),
# and the sheet takes two per held-out sample (24 in the demo): 192 is sharp at its size and costs
# ~30 s more than 128 on the demo, where 256 would cost ~75 s more.
SHEET_RESOLUTION = 192
SHEET_MAX_ROWS = 16  # held-out samples shown (of up to 64 per prompt): bounds its renders and its height
PREVIEW_RESOLUTION = 128  # the thumbnails of previews/, written every few rounds


@torch.no_grad()
def thumbnails(model, latents: torch.Tensor, size: int = PREVIEW_RESOLUTION) -> list[torch.Tensor]:
    """One shaded view (3, size, size) per latent, from a fixed three-quarter camera."""
    cams = orbit_cameras(OrbitConfig(views=1, elevation=25.0, azimuth_offset=35.0))
    out = render(model.decode(latents), cams, VolumeRenderConfig(resolution=size, samples=64))
    return [img[0] for img in out.rgb]


def palette_swatches(reward) -> list[tuple[float, float, float]]:
    """The target colours (sRGB in [0, 1]) of the palette reward in ``reward`` (itself or a term of a
    weighted sum); empty when it has none."""
    from ..rewards.appearance import PaletteReward
    from ..rewards.base import WeightedSum

    parts = [r for _, r in reward.parts] if isinstance(reward, WeightedSum) else [reward]
    return [tuple(float(c) for c in colour) for r in parts if isinstance(r, PaletteReward) for colour in r.palette.tolist()]


def sheet_rows(prompts: list[str], seeds: list[int], limit: int = SHEET_MAX_ROWS) -> list[int]:
    """Indices of the held-out samples the before/after sheet shows, in their order: all of them when
    they fit in ``limit``, else the first seeds of every prompt in turn (every prompt is shown)."""
    order = {p: k for k, p in enumerate(dict.fromkeys(prompts))}
    by_seed = sorted(range(len(prompts)), key=lambda i: (seeds[i], order[prompts[i]]))
    return sorted(by_seed[:limit])


def write_before_after(path: Path, before: list, after: list, rows: list[int], prompts: list[str], seeds: list[int],
                       before_rewards: torch.Tensor, after_rewards: torch.Tensor, method: str, reward_name: str,
                       rounds: int, swatches=()) -> Path:
    """The before/after sheet: a pair per shown held-out (prompt, seed), two pairs a row (``rows``,
    indices into ``prompts``/``seeds``/the rewards; ``before``/``after`` are their renders), the base
    model's render beside the finetuned one's, each with its reward; titled with the method, reward
    and rounds, and the held-out mean over all the samples before -> after."""
    n, k = len(prompts), len(dict.fromkeys(prompts))
    subtitle = (f"held-out reward {float(before_rewards.mean()):.3f} \u2192 {float(after_rewards.mean()):.3f} "
                f"(mean of {n} sample{'s' * (n != 1)}: {k} prompt{'s' * (k != 1)} \u00d7 {n // k} seed{'s' * (n // k != 1)}"
                + (f"; {len(rows)} shown)" if len(rows) < n else ")"))
    return before_after_sheet(
        path, before, after, [f"{prompts[i]} #{seeds[i] - EVAL_SEED_BASE}" for i in rows],
        f"{method} on {reward_name}, {rounds} round{'s' * (rounds != 1)}", subtitle=subtitle,
        before_scores=before_rewards[rows].tolist(), after_scores=after_rewards[rows].tolist(), swatches=swatches)


@torch.no_grad()
def write_preview(model, sampler: SamplerConfig, prompt: str, seed: int, folder: Path, step: int) -> list[tuple[Path, str]]:
    """The current model's asset for one held-out (prompt, seed): a mesh (``.npz``, the Blender
    layer's format, for a preview object in the scene) and a thumbnail PNG. Returns (path, label)s."""
    from ..geometry.mesh import save_npz

    latents = sample(model, [prompt], [seed], sampler).latents
    label = f"{prompt} #{seed - EVAL_SEED_BASE} after round {step}"
    png = save_png(to_pil(thumbnails(model, latents)[0]), folder / f"round_{step:04d}.png")
    npz = save_npz(model.latents_to_meshes(latents)[0], folder / f"round_{step:04d}.npz")
    return [(png, label), (npz, label)]


def curve_caption(trajectories: int, prompts: int, held_out: int) -> str:
    """Why the training batches sit apart from the held-out reward (the reward curve's caption)."""
    seen = (f"at most {trajectories} of the {prompts} prompts" if trajectories < prompts
            else f"a random draw (with repeats) of the {prompts} prompts")
    return (f"Training batch: the mean reward of the {trajectories} trajectories sampled in that round, with new seeds and "
            f"random cameras. Each round sees {seen}, so the batch mean is noisy and sits apart from the held-out "
            f"mean. Held-out: all {prompts} prompts \u00d7 "
            f"{held_out // max(prompts, 1)} fixed seeds ({held_out} samples) from fixed cameras, before training "
            "(round 0) and after the last round.")


def write_reward_curve(path: Path, log: list[dict], before: torch.Tensor, after: torch.Tensor | None, title: str,
                       caption: str = "") -> Path:
    """``reward_curve.png``: training batch mean +- std per round (from ``log``), the held-out mean of
    the base model at round 0 and, once known, of the finetuned model at the last round."""
    training = [(r["step"], r["reward_mean"], r["reward_std"]) for r in log]
    held_out = [(0, float(before.mean()))]
    if after is not None:
        held_out.append((log[-1]["step"] if log else 0, float(after.mean())))
    return reward_curve_plot(path, training, held_out, title, caption)


def make_objective(job: AlignJob, config: AlignConfig, model, reward) -> RenderedReward:
    """The reward of clean latents for ``job``'s renderer (a ValueError names what cannot work)."""
    if job.renderer == "cycles":
        return CyclesRenderedReward(model, reward, config.orbit, config.render, config.image_noise, job.cycles_samples)
    return RenderedReward(model, reward, config.orbit, config.render, config.image_noise)


CHECKPOINT_ADAPTERS = "checkpoints"


def checkpoint_adapter_dir(out_dir: str | Path, step: int) -> Path:
    """Where a run with ``checkpoint_adapters`` keeps the adapter of round ``step``."""
    return Path(out_dir) / CHECKPOINT_ADAPTERS / f"round_{step:04d}" / "adapter"


ALIGN_LOCK = ".align.lock"  # in out_dir while a run holds it (engine.fileio.folder_lock)


def run_alignment(params: dict, *args, **kwargs) -> dict:
    """Run an alignment job (arguments and report: :func:`_run_alignment_unlocked`) holding ``out_dir``'s
    lock, so a second run on the same folder (another terminal, a second Blender) is refused at once
    with :class:`engine.fileio.FolderBusy` (a ValueError) instead of interleaving its rounds with the
    first one's in ``log.jsonl``. The OS drops the lock when its process dies: a crashed run leaves
    nothing stuck. Under ``torchrun`` only rank 0, the one that writes, takes it."""
    job = AlignJob.from_params(params)
    job.config()  # bad parameters are refused before the folder is touched
    if world()[0] != 0:
        return _run_alignment_unlocked(params, *args, **kwargs)
    with folder_lock(job.out_dir, "alignment run", ALIGN_LOCK):
        return _run_alignment_unlocked(params, *args, **kwargs)


def _run_alignment_unlocked(params: dict, progress: Callable[[float, str], None] | None = None,
                  should_cancel: Callable[[], bool] | None = None,
                  preview: Callable[[str, str], None] | None = None, model=None,
                  on_checkpoint: Callable[[int, Path], None] | None = None) -> dict:
    """Run an alignment job described by ``params`` (the fields of :class:`AlignJob`); returns the report.

    ``progress(fraction, message)`` is called along the way; ``preview(png_path, label)`` whenever a
    new picture (reward curve) is written. With ``checkpoint_adapters``, ``on_checkpoint(round,
    adapter_dir)`` is called after each checkpoint round's adapter is kept, with the model holding
    that round's weights (a caller may sample it there, under no_grad; it must leave the LoRA as it is).
    Raises ValueError for bad parameters before any work.
    """
    from ..models import load_model
    from ..rewards.registry import build_reward_expression

    job = AlignJob.from_params(params)
    config = job.config()
    out = Path(job.out_dir)
    reward = build_reward_expression(job.reward, job.reward_options)
    model = model if model is not None else load_model(job.model, job.model_path, device=job.device)
    objective = make_objective(job, config, model, reward)
    say = progress or (lambda f, m: None)
    t_start = time.perf_counter()
    writer = world()[0] == 0  # under torchrun only rank 0 writes files; every rank trains

    identity = {"reward": job.reward, "reward_options": job.reward_options}
    if job.renderer != "volume":  # left out for the volume renderer: runs from before the choice resume
        identity.update(renderer=job.renderer, cycles_samples=job.cycles_samples)
    aligner = _FiniteAligner(model, objective, job.prompts, config, out_dir=out, resume=job.resume, identity=identity)
    sampler = config.sampler.for_model(model)
    eval_prompts = [p for p in job.prompts for _ in range(job.eval_seeds)]
    eval_seeds = [EVAL_SEED_BASE + i for _ in job.prompts for i in range(job.eval_seeds)]
    if aligner.step > 0:  # a checkpoint of this run (interrupted, or finished and now asked for more rounds)
        say(0.0, f"resuming from round {aligner.step} of {config.steps}")
    say(0.0, "scoring the base model on held-out seeds")
    base_latents, base_rewards = evaluate(model, objective, eval_prompts, eval_seeds, sampler, base=True)
    _require_finite(base_rewards, "the base model's held-out samples")
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        say(0.01, "rendering the base model's held-out samples for the before/after sheet")
        shown = sheet_rows(eval_prompts, eval_seeds)
        base_renders = thumbnails(model, base_latents[shown], SHEET_RESOLUTION)  # before training changes anything

    curve = out / "reward_curve.png"
    caption = curve_caption(config.trajectories, len(job.prompts), len(eval_prompts))

    def keep_checkpoint_adapter(step: int) -> None:
        # Called when the trainer has just saved checkpoint.pt for this round, so the kept adapter
        # and the checkpoint agree; an existing one (a resumed run) is the same weights.
        folder = checkpoint_adapter_dir(out, step)
        if not folder.is_dir():
            aligner.save_adapter(folder, {"reward": job.reward, "prompts": job.prompts, "round": step})
        if on_checkpoint is not None:
            on_checkpoint(step, folder)

    if writer and job.checkpoint_adapters and aligner.step > 0 and not checkpoint_adapter_dir(out, aligner.step).is_dir():
        # resumed from a checkpoint whose adapter was not kept yet (stopped between the two writes)
        keep_checkpoint_adapter(aligner.step)

    def on_step(record) -> None:
        say(0.05 + 0.9 * record.step / max(config.steps, 1), f"round {record.step}/{config.steps}: reward {record.reward_mean:.4f} ({record.time_s:.1f} s)")
        if not writer:
            return
        if job.checkpoint_adapters and (record.step % config.checkpoint_every == 0 or record.step == config.steps):
            keep_checkpoint_adapter(record.step)
        if record.step % 5 == 0 or record.step == config.steps:
            write_reward_curve(curve, aligner.history, base_rewards, None, f"{config.method} on {job.reward}", caption)
            if preview is not None:
                preview(str(curve), f"reward curve after round {record.step}")
        if preview is not None and job.preview_every > 0 and record.step % job.preview_every == 0:
            for path, label in write_preview(model, sampler, eval_prompts[0], eval_seeds[0], out / "previews", record.step):
                preview(str(path), label)

    log = aligner.run(progress=on_step, should_cancel=should_cancel)
    train_s = time.perf_counter() - t_start
    say(0.97, "scoring the finetuned model on the same held-out seeds")
    tuned_latents, tuned_rewards = evaluate(model, objective, eval_prompts, eval_seeds, sampler)
    _require_finite(tuned_rewards, "the finetuned model's held-out samples (no adapter was saved)")
    adapter = out / "adapter"
    if writer:
        aligner.save_adapter(adapter, {"reward": job.reward, "prompts": job.prompts})
        write_before_after(out / BEFORE_AFTER, base_renders, thumbnails(model, tuned_latents[shown], SHEET_RESOLUTION),
                           shown, eval_prompts, eval_seeds, base_rewards, tuned_rewards, config.method, job.reward,
                           len(log), palette_swatches(reward))
        write_reward_curve(curve, log, base_rewards, tuned_rewards,
                           f"{config.method} on {job.reward}: {len(log)} round{'s' * (len(log) != 1)}", caption)
    step_times = [r["time_s"] for r in log]
    report = {
        "model": model.name,
        "reward": job.reward,
        "method": config.method,
        "renderer": job.renderer,
        "rounds": len(log),
        "prompts": job.prompts,
        "eval_seeds": eval_seeds,
        "reward_before": {"mean": float(base_rewards.mean()), "std": float(base_rewards.std()) if len(base_rewards) > 1 else 0.0},
        "reward_after": {"mean": float(tuned_rewards.mean()), "std": float(tuned_rewards.std()) if len(tuned_rewards) > 1 else 0.0},
        "seconds_per_round": (sum(step_times) / len(step_times)) if step_times else None,
        "total_s": time.perf_counter() - t_start,
        "train_s": train_s,
        "files": {"adapter": adapter.name, "log": "log.jsonl", "reward_curve": curve.name, "before_after": BEFORE_AFTER},
        "config": json.loads(json.dumps(config.to_dict())),
    }
    if writer:
        write_json(out / "report.json", report)
    say(1.0, f"reward {report['reward_before']['mean']:.4f} -> {report['reward_after']['mean']:.4f}")
    return report
