"""The alignment loop: sample trajectories -> loss of the chosen method -> LoRA update, with
checkpoints, resume, a JSONL log and optional DistributedDataParallel (``torchrun``).

Every random choice of update ``s`` (prompts, seeds, cameras, transitions, image noise) comes from a
generator seeded by (seed, s, rank), and the checkpoint holds the LoRA weights, the optimizer state and
the step, so a run interrupted and resumed ends bit for bit where an uninterrupted run ends.

Under ``torchrun`` each process samples its own trajectories; the LoRA gradients are averaged by
DDP (gloo on CPU, nccl on CUDA). Only the policy forward whose loss is backpropagated goes through the
DDP wrapper; the frozen-base and reward-gradient forwards call the plain module, since DDP expects
one backward per wrapped forward. Gradients accumulate over micro-batches under ``no_sync``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from ..fileio import atomic_write
from ..render.cameras import Cameras
from ..sampling.sampler import Cancelled, make_scheduler, sample
from .config import AlignConfig
from .flow import ResidualFlow
from .lora import add_lora, has_lora, lora_parameters, lora_state_dict, save_adapter
from .methods import LOSSES, Chunk, StepContext, choose_transitions

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
RUN = "run.json"  # what decides the run's result: config, model and weights, prompts, the caller's identity


@dataclass
class StepRecord:
    step: int
    reward_mean: float
    reward_std: float
    loss: float
    grad_norm: float
    time_s: float
    parts: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"step": self.step, "reward_mean": self.reward_mean, "reward_std": self.reward_std, "loss": self.loss,
                "grad_norm": self.grad_norm, "time_s": self.time_s, **self.parts}


def init_distributed(device: str | torch.device = "cpu") -> tuple[int, int]:
    """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA.

    Returns (rank, world size); (0, 1) outside torchrun. Safe to call twice.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()


def shutdown_distributed() -> None:
    """Leave the process group (without this, gloo aborts the process at exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + rank)


class Aligner:
    """Finetune ``model`` (any model of the protocol) toward ``objective`` on ``prompts``.

    ``out_dir`` receives ``checkpoint.pt``, ``log.jsonl`` and ``run.json``; with ``resume=True`` an
    existing checkpoint there is continued. ``identity`` (JSON-able; e.g. the reward expression and
    its options) joins the config, the model's name and weights and the prompts in the run's identity:
    a checkpoint or a folder of a run with another identity is refused, never continued or deleted.
    The model gets a LoRA adapter (or keeps the one it has when resuming into a model that already
    carries it).
    """

    def __init__(self, model, objective, prompts: list[str], config: AlignConfig, out_dir: str | os.PathLike | None = None,
                 resume: bool = True, identity: dict | None = None):
        if not prompts:
            raise ValueError("alignment needs at least one training prompt")
        if config.method in ("nabla", "refl", "draft") and not objective.differentiable:
            raise ValueError(f"method {config.method} needs a differentiable reward; use ddpo for this one")
        model.encode_prompts(sorted(set(prompts)))  # validate before any work
        trainable = tuple(getattr(model, "training_schedulers", ("ddim", "ddpm", "dpmsolver-sde")))
        if config.sampler.scheduler not in trainable:
            raise ValueError(f"model {model.name!r} trains on trajectories of {', '.join(trainable)} (Gaussian, stateless "
                             f"transitions), not {config.sampler.scheduler!r}")
        _check_unscaled_inputs(model, config.sampler)
        self.model, self.objective, self.prompts, self.config = model, objective, list(prompts), config
        self.config_sampler = config.sampler.for_model(model)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.rank, self.world = world()
        if self.world > 1 and config.flow_network:
            raise ValueError("the flow network needs double backward, which DDP does not support; run it in one process")
        self.identity = json.loads(json.dumps({"config": config.to_dict(), "model": model.name, "weights": _weights_fingerprint(model),
                                               "prompts": list(prompts), **(identity or {})}))
        if not has_lora(model):
            targets = tuple(config.lora_targets or model.lora_target_modules)
            if config.lora_conditioning:
                extra = tuple(getattr(model, "lora_conditioning_modules", ()))
                if not extra:
                    raise ValueError(f"model {model.name!r} declares no conditioning layers for lora_conditioning")
                targets += extra
            add_lora(model, config.lora_rank, config.lora_alpha, targets, seed=config.seed)
        self.params = lora_parameters(model)
        self.flow = ResidualFlow(model.latent_shape).to(self._device) if config.flow_network else None
        groups = [{"params": self.params, "lr": config.lr}]
        if self.flow is not None:
            groups.append({"params": list(self.flow.parameters()), "lr": config.flow_lr})
        self.optimizer = torch.optim.AdamW(groups, betas=config.adam_betas, eps=config.adam_eps, weight_decay=config.weight_decay)
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(model.denoiser, device_ids=None if self._device.type == "cpu" else [self._device])
        self.step = 0
        self.saved_step: int | None = None  # the round checkpoint.pt holds, once written or loaded
        self.history: list[dict] = []
        self._pending: SampledRound | None = None  # train_on_previous: this round's samples, trained on next round
        if self.out_dir is not None:
            _refuse_non_files(self.out_dir)  # before anything in the folder is read, replaced or deleted
        if resume and self.out_dir is not None and (self.out_dir / CHECKPOINT).is_file():
            self._load_checkpoint()
        elif self.out_dir is not None and self.rank == 0:
            # A fresh run: an old log or checkpoint of this same run is replaced; another run's is refused.
            self._refuse_other_runs()
            (self.out_dir / LOG).unlink(missing_ok=True)
            (self.out_dir / CHECKPOINT).unlink(missing_ok=True)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out_dir / RUN, lambda tmp: Path(tmp).write_text(json.dumps(self.identity, indent=1, allow_nan=False)))

    @property
    def _device(self) -> torch.device:
        return next(self.model.denoiser.parameters()).device

    # -- one update -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _policy(self):
        """Route the model's denoiser calls through the DDP wrapper inside the block."""
        if self.ddp is None:
            yield
            return
        plain = self.model.denoiser
        self.model.denoiser = self.ddp
        try:
            yield
        finally:
            self.model.denoiser = plain

    def _autocast(self):
        if self._device.type == "cuda" and self.config.mixed_precision == "auto":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sample_round(self, g: torch.Generator, should_cancel) -> "SampledRound":
        b = self.config.trajectories
        prompts = [self.prompts[int(i)] for i in torch.randint(len(self.prompts), (b,), generator=g)]
        seeds = [int(s) for s in torch.randint(2**31 - 1, (b,), generator=g)]
        views = self.objective.sample_views(g)
        with self._autocast():
            traj = sample(self.model, prompts, seeds, self.config_sampler, return_trajectory=True, should_cancel=should_cancel).trajectory
        tensors = {"latents": traj.latents.float(), "model_outputs": traj.model_outputs.float(), "means": traj.means.float(),
                   "stds": traj.stds, "log_probs": traj.log_probs}
        with torch.no_grad():
            rewards = self.objective(tensors["latents"][-1], prompts, views, g).float()
        return SampledRound(prompts, views, tensors, rewards)

    def train_step(self, should_cancel: Callable[[], bool] | None = None) -> StepRecord:
        cfg, model = self.config, self.model
        t0 = time.perf_counter()
        g = _step_generator(cfg.seed, self.step, self.rank)
        b = cfg.trajectories
        fresh = self._sample_round(g, should_cancel)
        rewards = fresh.rewards  # logged: the current policy's samples
        data = fresh
        if cfg.train_on_previous:
            # The official code's regime: train on the samples of one round earlier, so the trust region
            # toward the outputs recorded then acts from the first update (docs/method.md). The first
            # round has nothing older and trains on its own samples.
            data = self._pending if self._pending is not None else fresh
            self._pending = fresh
        prompts, views, traj = data.prompts, data.views, data.tensors
        advantages = _per_prompt_advantages(data.rewards, prompts) if cfg.method == "ddpo" else None
        scheduler = make_scheduler(model, self.config_sampler)
        scheduler.set_timesteps(cfg.sampler.steps, device=self._device)
        ctx = StepContext(model, scheduler, cfg, self.objective, views, self.config_sampler.guidance, g, self.flow,
                          self._policy if self.ddp is not None else None)
        cond, uncond = model.encode_prompts(prompts), model.unconditional_embeds(b)
        parts_sum: dict[str, float] = {}
        loss_sum, grad_norms = 0.0, []
        starts = list(range(0, b, cfg.micro_batch))
        groups = [starts[i:i + cfg.accumulate] for i in range(0, len(starts), cfg.accumulate)]
        params = self.params + ([] if self.flow is None else list(self.flow.parameters()))
        # Several updates per round: later micro-batches see a moved policy, which is where the
        # trust region toward the outputs recorded at sampling time takes effect.
        passes = [group for _ in range(cfg.epochs) for group in groups]
        for group in passes:
            self.optimizer.zero_grad(set_to_none=True)
            for i, s in enumerate(group):
                if should_cancel is not None and should_cancel():
                    raise Cancelled("alignment cancelled")
                sl = slice(s, s + cfg.micro_batch)
                chunk = Chunk(
                    latents=traj["latents"][:, sl], model_outputs=traj["model_outputs"][:, sl], stds=traj["stds"][:, sl],
                    log_probs=traj["log_probs"][:, sl], prompts=prompts[sl],
                    cond=cond[sl], uncond=uncond[sl],
                    transitions=choose_transitions(cfg, len(scheduler.timesteps), traj["stds"][:, sl], g),
                    advantages=None if advantages is None else advantages[sl], means=traj["means"][:, sl],
                )
                weight = chunk.latents.shape[1] / sum(min(cfg.micro_batch, b - q) for q in group)
                sync = self.ddp.no_sync() if (self.ddp is not None and i < len(group) - 1) else contextlib.nullcontext()
                with sync, self._autocast():
                    loss, parts = LOSSES[cfg.method](ctx, chunk)
                    (loss * weight).backward()
                share = chunk.latents.shape[1] / (b * cfg.epochs)  # the logged loss: the mean over passes
                loss_sum += float(loss.detach()) * share
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v * share
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)))
            self.optimizer.step()
        self.step += 1
        record = StepRecord(self.step, float(rewards.mean()), float(rewards.std()) if b > 1 else 0.0, loss_sum, max(grad_norms),
                            time.perf_counter() - t0, parts_sum)
        self.history.append(record.to_json())
        return record

    # -- the run ----------------------------------------------------------------------------------
    def run(self, progress: Callable[[StepRecord], None] | None = None, should_cancel: Callable[[], bool] | None = None) -> list[dict]:
        """Train until ``config.steps`` updates are done; returns the log (one dict per update).

        An interrupt (``Cancelled`` from ``should_cancel``, or ``KeyboardInterrupt``: Ctrl-C, or a
        SIGTERM the caller turns into one) abandons the unfinished round, rolling the LoRA, the
        optimizer and the flow back to where the last completed round left them, writes a
        checkpoint of that round unless one is already there, adds a note naming it to the
        exception and re-raises it: the next run with the same settings resumes from that round,
        whatever ``checkpoint_every`` is."""
        try:
            while self.step < self.config.steps:
                start = self._round_start()
                try:
                    record = self.train_step(should_cancel)
                except BaseException:
                    self._roll_back(start)  # abandon the unfinished round
                    raise
                if self.rank == 0 and self.out_dir is not None:
                    self._append_log(record)
                    if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                        self.save_checkpoint()
                if progress is not None:
                    progress(record)
        except (Cancelled, KeyboardInterrupt) as exc:
            self._checkpoint_on_interrupt(exc)
            raise
        return self.history

    def _round_start(self) -> dict:
        """What a round changes before it completes: copies of the trainable weights and the optimizer
        state (LoRA-sized, so cheap next to a round), the step, the log's length and the pending round."""
        params = self.params + ([] if self.flow is None else list(self.flow.parameters()))
        return {"step": self.step, "history": len(self.history), "pending": self._pending,
                "params": [p.detach().clone() for p in params], "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def _roll_back(self, start: dict) -> None:
        params = self.params + ([] if self.flow is None else list(self.flow.parameters()))
        with torch.no_grad():
            for p, saved in zip(params, start["params"]):
                p.copy_(saved)
        self.optimizer.load_state_dict(start["optimizer"])
        self.step, self._pending = start["step"], start["pending"]
        del self.history[start["history"]:]

    def _checkpoint_on_interrupt(self, exc: BaseException) -> None:
        if self.rank != 0 or self.out_dir is None or self.step == 0:
            return
        if self.saved_step != self.step:
            self.save_checkpoint()
        exc.add_note(f"the checkpoint of round {self.step} of {self.config.steps} is in {self.out_dir / CHECKPOINT}; "
                     "run the same command again to resume from it")

    # -- files --------------------------------------------------------------------------------------
    def _append_log(self, record: StepRecord) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / LOG, "a") as f:
            f.write(json.dumps(record.to_json()) + "\n")

    def save_checkpoint(self) -> Path:
        state = {
            "step": self.step,
            "lora": lora_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "flow": None if self.flow is None else self.flow.state_dict(),
            "config": json.dumps(self.config.to_dict()),
            "model": self.model.name,
            "pending": None if self._pending is None else self._pending.to_state(),
            "identity": json.dumps(self.identity, allow_nan=False),
        }
        target = self.out_dir / CHECKPOINT

        def write(tmp: str) -> None:
            try:
                torch.save(state, tmp)
            except (RuntimeError, OSError) as exc:
                # torch reports a full disk as "enforce fail at inline_container.cc ... unexpected pos";
                # atomic_write removes the temp file, so the previous checkpoint stays as it was.
                why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise OSError(f"cannot write checkpoint {target} (round {self.step}): the disk may be full "
                              f"({why[:200]}); the previous checkpoint is kept") from None

        path = atomic_write(target, write)
        self.saved_step = self.step
        return path

    def _load_checkpoint(self) -> None:
        from peft import set_peft_model_state_dict

        path = self.out_dir / CHECKPOINT
        try:
            state = torch.load(path, map_location=self._device, weights_only=True)
        except Exception as exc:
            raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
        missing = [k for k in ("model", "step", "lora", "optimizer", "config") if not isinstance(state, dict) or k not in state]
        if not missing and (not isinstance(state["lora"], dict) or set(state["lora"]) != set(lora_state_dict(self.model))):
            missing = ["the LoRA tensors of this model"]
        if missing:  # e.g. a file saved by something else: one line, not a KeyError
            raise ValueError(f"checkpoint {path} is not a complete alignment checkpoint (no {', '.join(missing)}); "
                             "remove it to start over, or use a new output folder")
        if state.get("model") != self.model.name:
            raise ValueError(f"checkpoint {path} belongs to model {state.get('model')!r}, not {self.model.name!r}")
        # Checkpoints from before run identities carry the config only.
        saved = json.loads(state["identity"]) if "identity" in state else {"config": json.loads(state["config"])}
        self._check_identity(saved, f"checkpoint {path}")
        set_peft_model_state_dict(self.model.denoiser, state["lora"], adapter_name="default")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.flow is not None and state["flow"] is not None:
            self.flow.load_state_dict(state["flow"])
        self.step = int(state["step"])
        if self.step > self.config.steps:
            raise ValueError(f"checkpoint {path} holds round {self.step}, more than the {self.config.steps} rounds asked "
                             f"for: ask for {self.step} rounds or more to continue it, or use a new output folder")
        self.saved_step = self.step
        self._pending = SampledRound.from_state(state["pending"]) if state.get("pending") is not None else None
        # Keep the log consistent with the checkpoint: drop lines of updates that will be redone.
        log = self.out_dir / LOG
        self.history = [r for r in _read_log(log) if r["step"] <= self.step]
        text = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write(log, lambda tmp: Path(tmp).write_text(text))

    def _check_identity(self, saved: dict, what: str, where: str = "the checkpoint") -> None:
        """Refuse ``saved`` (a run's identity) unless it matches this run's, naming each setting that
        differs with both values. The number of rounds and the checkpoint interval do not decide
        the result (round ``s`` draws from its own generator), so they may change: more rounds
        continue a finished run."""
        here, there = _flatten(self.identity), _flatten(saved)
        for name in NOT_IDENTITY:
            here.pop(name, None), there.pop(name, None)
        top = {k.split(".")[0] for k in saved}  # an older run's identity lacks some parts: compare those it has
        # a setting added since that run was written, at its default here, is what that run did
        added = {k for k, v in _flatten({"config": AlignConfig().to_dict()}).items() if k not in there and here.get(k, _ABSENT) == v}
        for name in added:
            here.pop(name)
        differ = sorted(k for k in set(here) | set(there) if k.split(".")[0] in top and here.get(k, _ABSENT) != there.get(k, _ABSENT))
        if differ:
            shown = "; ".join(f"{k.removeprefix('config.')}: {_show(here.get(k, _ABSENT))} here, {_show(there.get(k, _ABSENT))} "
                              f"in {where}" for k in differ[:8])
            more = f"; and {len(differ) - 8} more" if len(differ) > 8 else ""
            raise ValueError(f"{what} was written with another configuration ({shown}{more}); "
                             "use the same settings or a new output folder")

    def _refuse_other_runs(self) -> None:
        """Before a fresh run deletes ``log.jsonl`` / ``checkpoint.pt`` in its folder: they must be this run's."""
        found = [n for n in (LOG, CHECKPOINT) if (self.out_dir / n).is_file()]
        if not found:
            return
        try:
            saved = json.loads((self.out_dir / RUN).read_text())
        except (OSError, ValueError):
            raise ValueError(f"{self.out_dir} holds {' and '.join(found)} of another run (no readable {RUN}); "
                             "choose a new output folder or remove them") from None
        self._check_identity(saved, f"{self.out_dir} holds {' and '.join(found)} of a run that", RUN)

    def save_adapter(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        return save_adapter(self.model, directory, {"method": self.config.method, "steps": self.step, **(extra or {})})


@dataclass
class SampledRound:
    """One round's samples: prompts (B,), the round's views, trajectory tensors (Trajectory's fields,
    fp32 latents (K+1, B, *L) etc.) and the rewards (B,) of their clean latents."""

    prompts: list[str]
    views: object
    tensors: dict[str, torch.Tensor]
    rewards: torch.Tensor

    def to_state(self) -> dict:
        """Tensors, strings and lists only: loadable with ``torch.load(weights_only=True)``."""
        if self.views is not None and not isinstance(self.views, Cameras):
            raise TypeError(f"cannot checkpoint views of type {type(self.views).__name__}")
        views = None if self.views is None else {f.name: getattr(self.views, f.name) for f in dataclasses.fields(Cameras)}
        return {"prompts": list(self.prompts), "views": views, "tensors": dict(self.tensors), "rewards": self.rewards}

    @classmethod
    def from_state(cls, state: dict) -> "SampledRound":
        views = None if state["views"] is None else Cameras(**state["views"])
        return cls(list(state["prompts"]), views, dict(state["tensors"]), state["rewards"])


NOT_IDENTITY = ("config.steps", "config.checkpoint_every")  # change what is kept or how far, not the result
_ABSENT = object()


def _read_log(log: Path) -> list[dict]:
    """The records of ``log.jsonl``. A torn final line (a full disk or a kill mid-append) is dropped
    with a warning naming the file: the checkpoint, not the log, says where the run resumes. A bad
    line before the last is damage the run cannot explain: a ValueError naming the file and line."""
    if not log.is_file():
        return []
    try:
        lines = log.read_text(encoding="utf-8", errors="strict").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{log} is not UTF-8 text ({exc}); remove it or use a new output folder") from None
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    records = []
    for k, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a round's record")
        except ValueError as exc:
            if k == len(numbered) - 1:
                warnings.warn(f"{log}: dropping its torn last line {number} ({exc}); a full disk or a killed "
                              "run leaves one", stacklevel=3)
                break
            raise ValueError(f"{log} line {number} is not a round's JSON record ({exc}); "
                             "remove the file or use a new output folder") from None
        records.append(record)
    return records


def _refuse_non_files(out_dir: Path) -> None:
    """A run's own files that exist but are not regular files (a folder, a dangling link) would fail
    half-way through replacing the previous run's files: refuse them before anything is touched."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {out_dir} is not a folder; choose another --out")
    for name in (CHECKPOINT, LOG, RUN):
        path = out_dir / name
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise ValueError(f"{path} is not a file (a folder or a broken link where the run keeps its {name}); "
                             "remove it or choose a new output folder")


def _flatten(identity: dict, prefix: str = "") -> dict:
    """``{"config": {"lr": 1e-3}}`` -> ``{"config.lr": 1e-3}``: nested settings compared one by one."""
    flat = {}
    for k, v in identity.items():
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _show(value) -> str:
    if value is _ABSENT:
        return "not set"
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _weights_fingerprint(model) -> str:
    """sha256 of the denoiser's base (non-LoRA) parameters: the same name with other weights is another model."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.denoiser.named_parameters()):
        if "lora_" in name:
            continue
        name = name.replace("base_layer.", "").replace("base_model.model.", "")  # the same weights with LoRA wrapped
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def _per_prompt_advantages(rewards: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """(r - mean) / std per prompt (DDPO); prompts seen once fall back to the batch statistics."""
    adv = torch.empty_like(rewards)
    batch_mean, batch_std = rewards.mean(), rewards.std() if len(rewards) > 1 else torch.tensor(1.0)
    for p in set(prompts):
        idx = torch.tensor([i for i, q in enumerate(prompts) if q == p])
        r = rewards[idx]
        mean, std = (r.mean(), r.std()) if len(idx) > 1 else (batch_mean, batch_std)
        adv[idx] = (r - mean) / (std + 1e-6)
    return adv


def _check_unscaled_inputs(model, sampler) -> None:
    """The sampler feeds the denoiser ``scheduler.scale_model_input(x, t)``; the aligner's batched
    transitions feed it ``x`` (several timesteps in one call, which diffusers' per-step
    ``scale_model_input`` cannot take). The two agree only when the scaling is the identity, as it
    is for DDIM, DDPM and SDE-DPM-Solver++: refuse a training scheduler for which it is not."""
    scheduler = make_scheduler(model, sampler)
    scheduler.set_timesteps(sampler.steps)
    probe = torch.ones(1, *model.latent_shape)
    for t in scheduler.timesteps[:: max(1, len(scheduler.timesteps) // 4)]:
        if not torch.equal(scheduler.scale_model_input(probe, t), probe):
            raise ValueError(f"{type(scheduler).__name__} scales the denoiser's input; the aligner trains only on "
                             "schedulers that do not (ddim, ddpm, dpmsolver-sde)")
