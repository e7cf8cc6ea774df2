"""Our own Table 1: every alignment method on every reward, at the same budget, on the embedded model.

    .venv/bin/python scripts/evaluate_alignment.py --out out/alignment_table [--rounds 20] [--eval-seeds 4]

For each reward (default: ``dnc``, ``palette`` with the orange palette ``#ff8800``, and ``critic``
when its weights are shipped) and each method (``base`` = no finetuning, ``refl``, ``ddpo``,
``draft``, ``nabla``), finetune a LoRA adapter with the same budget (rounds, trajectories per round,
prompts, seed, sampler, renderer) through :func:`engine.align.job.run_alignment`, into
``<out>/<reward>/<method>/``. Then sample every prompt on held-out seeds (2_000_000 + i; training
draws its seeds from its own generator) and measure, from fixed cameras (4 views, azimuths 30 +
90 k degrees, elevation 20):

- the reward (mean ± std over samples);
- Fréchet distance between base and finetuned samples on the prompt critic's features (the base
  row shows the distance between two disjoint base sample sets: the estimator's noise floor);
- prompt alignment: critic accuracy (predicted shape and colour both match the prompt) and the
  geometric judge's accuracy (the model's ``judge_mesh`` on the extracted meshes: the embedded
  model's ``engine.models.embedded.shape_judge``, no network);
- diversity: mean pairwise critic-feature distance among samples of the same prompt;
- seconds per training round (from the job's report).

Writes ``<out>/table.md`` (the exact command on top), ``<out>/results.json``, and per reward
``<out>/<reward>_curves.png`` (training reward per round of each method) and
``<out>/<reward>_tradeoff.png`` (reward against FD to base).

Held-out curve: every run keeps the adapter of each checkpoint round (``--set METHOD.checkpoint_every=N``,
default 10, and the last round) under ``<reward>/<method>/checkpoints/round_XXXX/`` and measures it
there as above, when the round is reached (the model in training is sampled under a forked RNG, so
training is unchanged) or, for rounds not measured yet (a run stopped in between), when the run is
reused. ``<reward>/<method>/heldout.jsonl`` lists one line per measured round (round 0: the base
model, FD 0, with ``fd_floor``), so one run gives a curve in the reward-FD plane. ``--no-curve`` turns it off.

Resumable: a method whose ``report.json`` exists is not trained again (its adapter is loaded; a
report made with other settings is an error), an interrupted training continues from its
checkpoint, and measurements are cached (``evaluation.json`` + ``features.safetensors``) and
reused while their settings, adapter and critic are unchanged.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.align.evaluation import accuracy, diversity, format_tables, frechet_distance, mean_std  # noqa: E402
from engine.align.config import AlignConfig  # noqa: E402
from engine.align.job import CHECKPOINT_ADAPTERS, AlignJob, AlignmentDiverged, run_alignment  # noqa: E402
from engine.models import model_spec  # noqa: E402
from engine.align.lora import load_adapter, remove_lora  # noqa: E402
from engine.models.prompts import PromptError  # noqa: E402
from engine.fileio import strict_json, write_bytes, write_json, write_safetensors  # noqa: E402
from engine.plots import COLOURS, progress_plot, tradeoff_plot  # noqa: E402
from engine.render import render  # noqa: E402
from engine.render.cameras import OrbitConfig, orbit_cameras  # noqa: E402
from engine.render.volume import VolumeRenderConfig  # noqa: E402
from engine.rewards.errors import RewardConfigError  # noqa: E402
from engine.rewards.registry import build_reward_expression, parse_option_assignments  # noqa: E402
from engine.sampling.sampler import SamplerConfig, sample  # noqa: E402

# This table is the embedded model's: its tuned numbers (engine/models/embedded/tuning.py).
TUNED = model_spec("embedded").alignment
DEFAULT_BETA, DEFAULT_LR, DEFAULT_NABLA_LR = TUNED.beta, TUNED.lr, TUNED.nabla_lr

DEFAULT_PROMPTS = (
    "a red cube", "an orange sphere", "a yellow cylinder", "a green cone",
    "a blue torus", "a purple pyramid", "a white sphere", "a black cube",
)
ALL_METHODS = ("base", "refl", "ddpo", "draft", "nabla")
DEFAULT_REWARD_OPTIONS = {"palette": {"palette": "#ff8800"}}
EVAL_SEED_BASE = 2_000_000  # held-out seeds of every method's samples (paired across methods)
FLOOR_SEED_BASE = 3_000_000  # a second, disjoint base sample set: the FD noise floor
TUNING_SEED_BASES = (4_000_000, 5_000_000)  # --tuning: the same two sets for choosing settings
EVAL_AZIMUTH_OFFSET = 30.0  # fixed evaluation cameras, between the training azimuths' extremes
BATCH = 8  # samples rendered at once
COMMAND = "scripts/evaluate_alignment.py"


class UsageError(ValueError):
    """Bad command-line input or an output folder made with other settings (exit code 2)."""


def _critic_weights_exist() -> bool:
    from engine.rewards.critic import WEIGHTS_PATH

    return WEIGHTS_PATH.is_file() and WEIGHTS_PATH.with_suffix(".json").is_file()


# --- command line --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/alignment_table"), help="output folder (resumable)")
    p.add_argument("--rewards", nargs="+", default=None,
                   help="reward names of the registry (default: dnc palette, plus critic when its weights exist)")
    p.add_argument("--option", action="append", default=[], metavar="REWARD.OPTION=VALUE",
                   help="reward option, e.g. palette.palette=#ff8800 (the default palette is #ff8800)")
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), help=f"any of {', '.join(ALL_METHODS)}")
    p.add_argument("--rounds", type=int, default=20, help="sampling rounds of finetuning per method")
    p.add_argument("--trajectories", type=int, default=4, help="trajectories sampled per round")
    p.add_argument("--eval-seeds", type=int, default=4, help="held-out samples per prompt")
    p.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS), help="training and evaluation prompts")
    p.add_argument("--render-resolution", type=int, default=32, help="pixels per side, training and evaluation")
    p.add_argument("--render-samples", type=int, default=32, help="ray samples per pixel")
    p.add_argument("--views", type=int, default=4, help="views per asset, training and evaluation")
    p.add_argument("--sampling-steps", type=int, default=20, help="sampling steps, training and evaluation")
    p.add_argument("--beta", action="append", default=[], metavar="REWARD=VALUE",
                   help=f"Nabla-R2D3 reward scale per reward (defaults: {', '.join(f'{k}={v:g}' for k, v in DEFAULT_BETA.items())})")
    p.add_argument("--lr", action="append", default=[], metavar="METHOD=VALUE",
                   help="learning rate per method (default: the alignment job's, 5e-3; refl and draft 5e-4)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE", dest="overrides",
                   help="any other AlignConfig field for one method, e.g. nabla.clip_reward_grad=1.0 (JSON values)")
    p.add_argument("--seed", type=int, default=0, help="training seed, shared by every method")
    p.add_argument("--tuning", action="store_true",
                   help=f"measure on the tuning seeds ({TUNING_SEED_BASES[0]}, ...) instead of the evaluation seeds, "
                        "to choose settings without looking at the table's samples")
    p.add_argument("--no-curve", dest="curve", action="store_false",
                   help="do not keep and measure the adapter of every checkpoint round (the held-out curve)")
    p.add_argument("--critic-weights", type=Path, default=None, help="critic .safetensors for the metrics (default: the shipped one)")
    # One thread by default: on the shared 2-core development machine a nabla round took 12-13 s with
    # one thread and 30-150 s with two (the second thread mostly waits for a busy core).
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; see the comment above)")
    return p


@dataclass
class Settings:
    """The validated command line."""

    out: Path
    rewards: dict[str, dict]  # reward name -> its options
    methods: list[str]
    rounds: int
    trajectories: int
    eval_seeds: int
    prompts: list[str]
    resolution: int
    render_samples: int
    views: int
    sampling_steps: int
    betas: dict[str, float]
    lrs: dict[str, float]
    overrides: dict[str, dict]  # method -> AlignConfig fields
    seed: int
    critic_weights: Path | None
    threads: int
    tuning: bool = False
    curve: bool = True  # keep and measure every checkpoint round's adapter (heldout.jsonl)
    command: str = ""

    @property
    def eval_seed_base(self) -> int:
        return TUNING_SEED_BASES[0] if self.tuning else EVAL_SEED_BASE

    @property
    def floor_seed_base(self) -> int:
        return TUNING_SEED_BASES[1] if self.tuning else FLOOR_SEED_BASE

    @property
    def render_config(self) -> VolumeRenderConfig:
        return VolumeRenderConfig(resolution=self.resolution, samples=self.render_samples)

    @property
    def sampler(self) -> SamplerConfig:
        return SamplerConfig(steps=self.sampling_steps)

    def eval_pairs(self, first_seed: int) -> tuple[list[str], list[int]]:
        prompts = [p for p in self.prompts for _ in range(self.eval_seeds)]
        return prompts, [first_seed + i for _ in self.prompts for i in range(self.eval_seeds)]


def parse_settings(argv: list[str]) -> Settings:
    """Parse and check the command line; :class:`UsageError` with a readable message on bad input."""
    args = build_parser().parse_args(argv)
    for name in ("rounds", "trajectories", "eval_seeds", "render_resolution", "render_samples", "views", "sampling_steps", "threads"):
        minimum = 0 if name == "rounds" else 1
        if getattr(args, name) < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}")
    unknown = [m for m in args.methods if m not in ALL_METHODS]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ALL_METHODS)}")
    methods = list(dict.fromkeys(args.methods))
    for p in args.prompts:
        try:
            model_spec("embedded").prompts.validate([p])
        except PromptError as exc:
            raise UsageError(str(exc)) from None
    names = args.rewards if args.rewards is not None else ["dnc", "palette"] + (["critic"] if _critic_weights_exist() else [])
    names = list(dict.fromkeys(names))
    for name in names:  # one folder per reward: names only, not weighted expressions
        if not name.replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"--rewards takes reward names (e.g. dnc palette), not expressions: {name!r}")
    try:
        options = parse_option_assignments(args.option)
    except RewardConfigError as exc:
        raise UsageError(str(exc)) from None
    stray = sorted(set(options) - set(names))
    if stray:
        raise UsageError(f"options given for reward(s) {', '.join(stray)} that are not in --rewards")
    rewards = {}
    for name in names:
        opts = {**DEFAULT_REWARD_OPTIONS.get(name, {}), **options.get(name, {})}
        if name == "critic" and args.critic_weights is not None and "weights" not in opts:
            opts["weights"] = str(args.critic_weights)
        rewards[name] = opts
    betas = {}
    for item in args.beta:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in rewards:
            raise UsageError(f"bad --beta {item!r}: expected REWARD=VALUE with REWARD one of {', '.join(rewards)}")
        try:
            betas[key.strip()] = float(value)
        except ValueError:
            raise UsageError(f"bad --beta {item!r}: {value!r} is not a number") from None
    lrs = {}
    for item in args.lr:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in methods:
            raise UsageError(f"bad --lr {item!r}: expected METHOD=VALUE with METHOD one of {', '.join(methods)}")
        try:
            lrs[key.strip()] = float(value)
        except ValueError:
            raise UsageError(f"bad --lr {item!r}: {value!r} is not a number") from None
    overrides = _parse_overrides(args.overrides, methods)
    exe = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    return Settings(
        out=args.out, rewards=rewards, methods=methods, rounds=args.rounds, trajectories=args.trajectories,
        eval_seeds=args.eval_seeds, prompts=list(args.prompts), resolution=args.render_resolution,
        render_samples=args.render_samples, views=args.views, sampling_steps=args.sampling_steps, betas=betas, lrs=lrs,
        overrides=overrides,
        seed=args.seed, critic_weights=args.critic_weights, threads=args.threads, tuning=args.tuning, curve=args.curve,
        command=shlex.join([exe, COMMAND, *argv]),
    )


def _parse_overrides(items: list[str], methods: list[str]) -> dict[str, dict]:
    """``["nabla.clip_reward_grad=1.0"]`` -> ``{"nabla": {"clip_reward_grad": 1.0}}`` (values as JSON, else text)."""
    # sampler takes a JSON object merged into the table's sampler settings, e.g. nabla.sampler={"scheduler": "dpmsolver-sde"}
    fields = {f.name for f in dataclasses.fields(AlignConfig)} - {"method", "steps", "seed", "orbit", "render"}
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or method not in methods or name not in fields:
            raise UsageError(f"bad --set {item!r}: expected METHOD.FIELD=VALUE with METHOD one of {', '.join(methods)} "
                             f"and FIELD an AlignConfig field ({', '.join(sorted(fields))})")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if name == "sampler":
            known = {f.name for f in dataclasses.fields(SamplerConfig)} - {"steps"}  # steps: --sampling-steps
            if not isinstance(parsed, dict) or not set(parsed) <= known:
                raise UsageError(f"bad --set {item!r}: sampler takes a JSON object with keys among {', '.join(sorted(known))}")
        out.setdefault(method, {})[name] = parsed
    return out


# --- measuring a set of samples -----------------------------------------------------------------------

@dataclass
class Measurement:
    """Per-sample results of one sample set (N = prompts x eval seeds)."""

    prompts: list[str]
    seeds: list[int]
    rewards: dict[str, list[float]]  # reward name -> (N,)
    critic_ok: list[bool] | None  # None without a critic
    geometric_ok: list[bool] | None  # None when not measured (the FD floor set)
    features: torch.Tensor | None  # (N, D) critic features
    seconds: float = 0.0
    details: list[dict] = field(default_factory=list)  # per sample: predicted shape/colour of critic and judge

    def to_json(self) -> dict:
        return {"prompts": self.prompts, "seeds": self.seeds, "rewards": self.rewards, "critic_ok": self.critic_ok,
                "geometric_ok": self.geometric_ok, "seconds": self.seconds, "details": self.details}


def _fingerprint(state: dict[str, torch.Tensor] | Path | None) -> str | None:
    """sha256 of a file or of a state dict's tensors (which weights a cached measurement saw)."""
    if state is None:
        return None
    h = hashlib.sha256()
    if isinstance(state, Path):
        h.update(state.read_bytes())
    else:
        for key in sorted(state):
            h.update(key.encode())
            h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def measure(model, prompts: list[str], seeds: list[int], settings: Settings, rewards: dict, critic, geometric: bool = True) -> Measurement:
    """Sample (prompt, seed) pairs with the model as it is now and measure them (see the module docstring)."""
    from engine.rewards.critic import PromptCritic, critic_features

    geometric = geometric and hasattr(model, "judge_mesh")  # the model's own judge (engine/models/protocol.py)

    t0 = time.perf_counter()
    latents = sample(model, prompts, seeds, settings.sampler.for_model(model)).latents.float()
    cameras = orbit_cameras(OrbitConfig(views=settings.views, azimuth_offset=EVAL_AZIMUTH_OFFSET))
    scores = {name: [] for name in rewards}
    feats, critic_ok, geometric_ok, details = [], [] if critic else None, [] if geometric else None, []
    for start in range(0, len(prompts), BATCH):
        sl = slice(start, start + BATCH)
        batch_prompts = prompts[sl]
        out = render(model.decode(latents[sl]), cameras, settings.render_config)
        for name, reward in rewards.items():
            scores[name] += [float(v) for v in reward(out, batch_prompts)]
        rows = [{} for _ in batch_prompts]
        if critic is not None:
            feats.append(critic_features(out, critic).float().cpu())
            shapes, colours = PromptCritic(critic).predict(out)
            for row, p, s, c in zip(rows, batch_prompts, shapes, colours):
                critic_ok.append(PromptCritic.matches(p, s, c))
                row.update(critic_shape=s, critic_colour=c)
        if geometric:
            for row, mesh, p in zip(rows, model.latents_to_meshes(latents[sl]), batch_prompts):
                verdict = model.judge_mesh(mesh, p)
                geometric_ok.append(bool(verdict.ok))
                row.update(judge_shape=verdict.shape, judge_colour=verdict.colour)
        details += rows
    return Measurement(list(prompts), list(seeds), scores, critic_ok, geometric_ok,
                       torch.cat(feats) if feats else None, time.perf_counter() - t0, details)


def _save_measurement(folder: Path, m: Measurement, key: dict) -> None:
    if m.features is not None:
        write_safetensors(folder / "features.safetensors", {"features": m.features.contiguous()})
    write_json(folder / "evaluation.json", {"key": key, **m.to_json()})


def _load_measurement(folder: Path, key: dict, needed_rewards: list[str]) -> Measurement | None:
    """The cached measurement in ``folder`` if it was made under ``key`` and has every needed reward."""
    from safetensors.torch import load_file

    path = folder / "evaluation.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if raw.get("key") != json.loads(json.dumps(key)) or not all(r in raw.get("rewards", {}) for r in needed_rewards):
        return None
    feats = None
    if raw.get("critic_ok") is not None:
        if not (folder / "features.safetensors").is_file():
            return None
        feats = load_file(str(folder / "features.safetensors"))["features"]
    return Measurement(raw["prompts"], raw["seeds"], raw["rewards"], raw["critic_ok"], raw["geometric_ok"], feats,
                       raw.get("seconds", 0.0), raw.get("details", []))


def measure_cached(folder: Path, key: dict, model, prompts, seeds, settings, rewards, critic, geometric=True) -> tuple[Measurement, bool]:
    cached = _load_measurement(folder, key, list(rewards))
    if cached is not None:
        return cached, True
    m = measure(model, prompts, seeds, settings, rewards, critic, geometric)
    _save_measurement(folder, m, key)
    return m, False


# --- finetuning -------------------------------------------------------------------------------------------

def job_params(settings: Settings, reward: str, method: str, folder: Path) -> dict:
    """The :func:`run_alignment` parameters of one (reward, method) cell: the same budget for all."""
    options = settings.rewards[reward]
    return {
        "out_dir": str(folder),
        "reward": reward,
        "reward_options": {reward: options} if options else {},
        "method": method,
        "steps": settings.rounds,
        "prompts": list(settings.prompts),
        "eval_seeds": 1,  # the job's own before/after check; the table's measurement is ours
        "beta": settings.betas.get(reward),
        "lr": settings.lrs.get(method),
        "trajectories": settings.trajectories,
        "seed": settings.seed,
        "resume": True,
        "checkpoint_adapters": settings.curve,
        "extra": {
            "render": {"resolution": settings.resolution, "samples": settings.render_samples},
            "orbit": {"views": settings.views, "random_azimuth": True, "elevation_jitter": 5.0},
            **settings.overrides.get(method, {}),
            "sampler": {"steps": settings.sampling_steps, **settings.overrides.get(method, {}).get("sampler", {})},
        },
    }


def finetune(model, settings: Settings, reward: str, method: str, folder: Path, say, on_checkpoint=None) -> dict:
    """Train (or reuse) the adapter of one cell; leaves it loaded on ``model``. Returns the job's report.

    ``on_checkpoint(round, adapter_dir)``: see :func:`run_alignment` (called only while training).
    """
    params = job_params(settings, reward, method, folder)
    expected = json.loads(json.dumps(AlignJob.from_params(params).config().to_dict()))
    remove_lora(model)
    report_path = folder / "report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        if report.get("config") != expected:
            raise UsageError(f"{report_path} was made with other settings; choose another --out or delete {folder}")
        load_adapter(model, folder / "adapter")
        say(f"reusing the finished run in {folder} ({report['rounds']} rounds, {report['seconds_per_round']:.1f} s/round)")
        return report
    if not (folder / "checkpoint.pt").is_file():
        # Without a checkpoint the trainer starts from round 0 and appends to the log: drop lines
        # left by a run that died before its first checkpoint, or the curves would repeat rounds.
        (folder / "log.jsonl").unlink(missing_ok=True)
    else:
        say(f"continuing from the checkpoint in {folder}")
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        if message.startswith("round") or time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            say(message)

    return run_alignment(params, progress=progress, model=model, on_checkpoint=on_checkpoint)


# --- the held-out curve: every checkpoint round's adapter, measured -----------------------------------------

CURVE = "heldout.jsonl"


def checkpoint_rounds(folder: Path) -> dict[int, Path]:
    """Round -> kept adapter folder (``<folder>/checkpoints/round_XXXX/adapter``) of one run."""
    found = {}
    for adapter in (folder / CHECKPOINT_ADAPTERS).glob("round_*/adapter"):
        digits = adapter.parent.name.removeprefix("round_")
        if digits.isdigit() and (adapter / "adapter_model.safetensors").is_file():
            found[int(digits)] = adapter
    return dict(sorted(found.items()))


def measure_checkpoints(model, settings: Settings, folder: Path, key: dict, prompts, seeds, rewards: dict, critic,
                        say) -> dict[int, Measurement]:
    """Measure every kept checkpoint adapter of the run in ``folder`` that has no valid cached
    measurement (``key`` plus the adapter's fingerprint), loading each in turn; returns round ->
    measurement. Leaves ``model`` without LoRA."""
    out = {}
    for step, adapter in checkpoint_rounds(folder).items():
        cell_key = {**key, "adapter": _fingerprint(adapter / "adapter_model.safetensors")}
        cached = _load_measurement(adapter.parent, cell_key, list(rewards))
        if cached is None:
            remove_lora(model)
            load_adapter(model, adapter)
            cached, _ = measure_cached(adapter.parent, cell_key, model, prompts, seeds, settings, rewards, critic)
            say(f"measured round {step} on {len(prompts)} held-out samples in {cached.seconds:.1f} s")
        out[step] = cached
    remove_lora(model)
    return out


def curve_rows(checkpoints: dict[int, Measurement], reward: str, base: Measurement, floor: Measurement | None,
               trajectories: int) -> list[dict]:
    """One row per measured round (the :func:`summarise` columns plus ``round`` and cumulative
    ``trajectories``), round 0 being the base model: FD 0 (the base set against itself: every round is
    measured on the same seeds), and ``fd_floor``, the FD between two disjoint base sets (the noise
    level of FD at this sample size)."""
    start = summarise(base, reward, base, floor, is_base=True)
    start["fd_floor"], start["fd_to_base"] = start["fd_to_base"], 0.0 if base.features is not None else None
    rows = [{"round": 0, "trajectories": 0, "base": True, **start}]
    for step, m in sorted(checkpoints.items()):
        rows.append({"round": step, "trajectories": step * trajectories, **summarise(m, reward, base, floor, is_base=False)})
    return rows


def write_curve(folder: Path, rows: list[dict]) -> Path:
    """``heldout.jsonl``: strict JSON, one line per round, replaced atomically as a whole."""
    text = "".join(strict_json(row) + "\n" for row in rows)
    return write_bytes(folder / CURVE, text.encode())


def read_log(folder: Path) -> list[dict]:
    path = folder / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- results, table, plots -----------------------------------------------------------------------------

def summarise(m: Measurement, reward: str, base: Measurement, floor: Measurement | None, is_base: bool) -> dict:
    mean, std = mean_std(m.rewards[reward])
    # The base row compares two disjoint base sets (the floor); a covariance needs 2 samples per set.
    other = (floor.features if floor is not None else None) if is_base else m.features
    fd = None
    if base.features is not None and other is not None and min(len(base.features), len(other)) >= 2:
        fd = frechet_distance(base.features, other)
    return {
        "reward_mean": mean,
        "reward_std": std,
        "fd_to_base": fd,
        "critic_accuracy": accuracy(m.critic_ok) if m.critic_ok is not None else None,
        "geometric_accuracy": accuracy(m.geometric_ok) if m.geometric_ok is not None else None,
        "diversity": diversity(m.features, m.prompts) if m.features is not None else None,
        "samples": len(m.prompts),
        "measure_s": m.seconds,
    }


def write_outputs(settings: Settings, results: dict, logs: dict[str, dict[str, list[dict]]]) -> None:
    out = settings.out
    write_json(out / "results.json", results)
    write_bytes(out / "table.md", format_tables(results).encode())
    for reward, block in results["rewards"].items():
        rows = block["methods"]
        series = {m: [(r["step"], r["reward_mean"]) for r in logs[reward].get(m, [])] for m in rows if logs[reward].get(m)}
        # one colour per method in both plots (the base model black in the first, as a level)
        colour_of = {m: COLOURS[i % len(COLOURS)] for i, m in enumerate([*series, *(m for m in rows if m not in series and m != "base")])}
        if series:
            progress_plot(series, out / f"{reward}_curves.png", f"training reward per round: {reward}",
                          base=rows["base"]["reward_mean"] if "base" in rows else None, colours=colour_of,
                          xlabel="round", ylabel="batch mean reward", base_label="base (held-out)")
        label = {m: "base (floor)" if m == "base" else m for m in rows}
        points = {label[m]: (r["fd_to_base"], r["reward_mean"]) for m, r in rows.items() if r.get("fd_to_base") is not None}
        if points:
            tradeoff_plot(points, out / f"{reward}_tradeoff.png", f"reward vs prior drift: {reward}",
                          xlabel="FD to base (critic features)", ylabel="held-out reward",
                          colours={label[m]: colour_of.get(m, "black") for m in rows}, x_from_zero=True)


def _notes(settings: Settings, critic_source: str | None) -> list[str]:
    n = len(settings.prompts) * settings.eval_seeds
    notes = [
        f"Model: embedded. {len(settings.prompts)} prompt(s) ({', '.join(settings.prompts)}), used for training and evaluation.",
        f"Finetuning budget per method: {settings.rounds} rounds x {settings.trajectories} trajectories, seed {settings.seed}, "
        f"{settings.sampling_steps} sampling steps (training trajectories from the aligner's {AlignConfig.sampler.scheduler}, "
        f"eta {AlignConfig.sampler.eta:g}; evaluation samples with DDIM, eta 1), renders {settings.resolution}^2 x {settings.views} views.",
        f"Evaluation: {n} samples per method ({settings.eval_seeds} held-out seeds per prompt from {settings.eval_seed_base}"
        f"{' (tuning seeds)' if settings.tuning else ''}, "
        f"the same for every method), fixed cameras (azimuth offset {EVAL_AZIMUTH_OFFSET:g}, elevation 20, no jitter), no image noise.",
        "FD to base: Fréchet distance of critic features to the base samples; the base row is the distance between two disjoint "
        f"base sample sets (seeds from {settings.eval_seed_base} and {settings.floor_seed_base}), the estimator's floor at this sample size.",
        "Critic acc.: critic's predicted shape and colour both match the prompt. Geometric acc.: the same judged on the "
        "extracted mesh by the model's judge, engine.models.embedded.shape_judge (no network). Diversity: mean pairwise critic-feature distance within a prompt.",
    ]
    if critic_source is None:
        notes.append("No critic weights were found: critic accuracy, FD and diversity are n/a.")
    else:
        notes.append(f"Critic used for the metrics: {critic_source}.")
    if "critic" in settings.rewards:
        notes.append("For the critic reward, critic accuracy is measured by the reward itself; the geometric judge is the independent check.")
    betas = {r: settings.betas.get(r, DEFAULT_BETA.get(r, 1e3)) for r in settings.rewards}
    lrs = {m: settings.lrs.get(m, DEFAULT_LR.get(m, AlignConfig.lr)) for m in settings.methods if m != "base"}
    per_reward = {r: v for r, v in DEFAULT_NABLA_LR.items() if r in settings.rewards} if "nabla" in lrs and "nabla" not in settings.lrs else {}
    notes.append("Nabla-R2D3 beta: " + ", ".join(f"{r} {b:g}" for r, b in betas.items())
                 + "; learning rates: " + ", ".join(f"{m} {v:g}" for m, v in lrs.items())
                 + "".join(f" (nabla on {r}: {v:g})" for r, v in per_reward.items())
                 + "".join(f"; {m} " + ", ".join(f"{k} {v}" for k, v in o.items()) for m, o in settings.overrides.items())
                 + "; every other setting is AlignConfig's default.")
    return notes


# --- main ---------------------------------------------------------------------------------------------------

def run(settings: Settings, model=None, critic=None) -> dict:
    """Train, measure and write every output; returns the results dictionary."""
    from engine.models import load_model
    from engine.rewards.critic import CriticLoadError, load_critic

    torch.set_num_threads(settings.threads)
    t_all = time.perf_counter()

    def say(message: str, cell: str = "") -> None:
        print(f"[{time.perf_counter() - t_all:7.1f} s]{' [' + cell + ']' if cell else ''} {message}", flush=True)

    rewards = {}
    for name, options in settings.rewards.items():
        try:
            rewards[name] = build_reward_expression(name, {name: options} if options else {})
        except RewardConfigError as exc:
            raise UsageError(str(exc)) from exc
    for method in settings.methods:
        if method in ("nabla", "refl", "draft"):
            for name, reward in rewards.items():
                if not reward.differentiable:
                    raise UsageError(f"method {method} needs a differentiable reward; {name} is not (use ddpo only)")

    critic_source = None
    if critic is not None:
        critic_source = "a critic passed in by the caller"
    else:
        try:
            critic = load_critic(settings.critic_weights)
            critic_source = str(settings.critic_weights or "engine/rewards/weights/critic.safetensors (shipped)")
        except CriticLoadError as exc:
            say(f"warning: {exc}; critic metrics will be n/a")
    critic_print = _fingerprint(critic.state_dict()) if critic is not None else None

    if model is None:
        say("loading the embedded model")
        model = load_model("embedded")
    remove_lora(model)
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    eval_prompts, eval_seeds = settings.eval_pairs(settings.eval_seed_base)
    common_key = {"model": model.name, "sampling_steps": settings.sampling_steps, "resolution": settings.resolution,
                  "render_samples": settings.render_samples, "views": settings.views, "critic": critic_print,
                  "azimuth_offset": EVAL_AZIMUTH_OFFSET}

    say(f"measuring the base model on {len(eval_prompts)} held-out samples")
    base_key = {**common_key, "prompts": eval_prompts, "seeds": eval_seeds, "rewards": settings.rewards}
    base, cached = measure_cached(out / "base", base_key, model, eval_prompts, eval_seeds, settings, rewards, critic)
    say(("reused" if cached else "measured") + f" base in {base.seconds:.1f} s", "base")
    floor = None
    if critic is not None and "base" in settings.methods:
        fp, fs = settings.eval_pairs(settings.floor_seed_base)
        floor_key = {**common_key, "prompts": fp, "seeds": fs, "rewards": {}}
        floor, cached = measure_cached(out / "base_floor", floor_key, model, fp, fs, settings, {}, critic, geometric=False)
        say(("reused" if cached else "measured") + f" the second base set (FD floor) in {floor.seconds:.1f} s", "base")

    results = {"command": settings.command, "notes": _notes(settings, critic_source),
               "settings": json.loads(json.dumps(dataclasses.asdict(settings), default=str)), "rewards": {}}
    logs: dict[str, dict[str, list[dict]]] = {}
    for reward in settings.rewards:
        block = {"options": settings.rewards[reward], "beta": settings.betas.get(reward, DEFAULT_BETA.get(reward, 1e3)),
                 "methods": {}}
        results["rewards"][reward] = block
        logs[reward] = {}
        for method in settings.methods:
            cell = f"{reward}/{method}"
            if method == "base":
                block["methods"]["base"] = {**summarise(base, reward, base, floor, is_base=True), "seconds_per_round": None, "rounds": 0}
                continue
            folder = out / reward / method
            cell_key = {**common_key, "prompts": eval_prompts, "seeds": eval_seeds, "rewards": {reward: settings.rewards[reward]}}
            one_reward = {reward: rewards[reward]}

            def at_checkpoint(step: int, adapter: Path, cell=cell, cell_key=cell_key, one_reward=one_reward) -> None:
                # the model in training holds this round's weights: sample it as it is, under a forked
                # RNG so that the run's own randomness is untouched
                key = {**cell_key, "adapter": _fingerprint(adapter / "adapter_model.safetensors")}
                with torch.random.fork_rng(devices=[]):
                    m, cached = measure_cached(adapter.parent, key, model, eval_prompts, eval_seeds, settings, one_reward, critic)
                if not cached:
                    say(f"round {step}: held-out reward {mean_std(m.rewards[reward])[0]:.4g} ({m.seconds:.1f} s)", cell)

            try:
                report = finetune(model, settings, reward, method, folder, lambda msg: say(msg, cell),
                                  on_checkpoint=at_checkpoint if settings.curve else None)
            except AlignmentDiverged:
                if settings.curve:  # the rounds kept before the divergence still make a curve
                    remove_lora(model)
                    checkpoints = measure_checkpoints(model, settings, folder, cell_key, eval_prompts, eval_seeds,
                                                      one_reward, critic, lambda msg: say(msg, cell))
                    write_curve(folder, curve_rows(checkpoints, reward, base, floor, settings.trajectories))
                raise
            key = {**cell_key, "adapter": _fingerprint(folder / "adapter" / "adapter_model.safetensors")}
            last = checkpoint_rounds(folder).get(report.get("rounds") or -1)
            m = _load_measurement(last.parent, key, list(one_reward)) if last is not None else None
            if m is not None and _load_measurement(folder, key, list(one_reward)) is None:
                _save_measurement(folder, m, key)  # the last round's adapter is the final one: measured once
            m, cached = measure_cached(folder, key, model, eval_prompts, eval_seeds, settings, one_reward, critic)
            remove_lora(model)
            if settings.curve:
                checkpoints = measure_checkpoints(model, settings, folder, cell_key, eval_prompts, eval_seeds, one_reward,
                                                  critic, lambda msg: say(msg, cell))
                write_curve(folder, curve_rows(checkpoints, reward, base, floor, settings.trajectories))
            row = {**summarise(m, reward, base, floor, is_base=False), "seconds_per_round": report.get("seconds_per_round"),
                   "rounds": report.get("rounds"), "train_s": report.get("train_s")}
            block["methods"][method] = row
            logs[reward][method] = read_log(folder)
            fd = "n/a" if row["fd_to_base"] is None else f"{row['fd_to_base']:.4g}"
            say(f"{'reused' if cached else 'measured'}: reward {row['reward_mean']:.4g} ± {row['reward_std']:.3g}, FD {fd}", cell)
            write_outputs(settings, results, logs)  # partial tables while a long run goes on
    results["total_s"] = time.perf_counter() - t_all
    write_outputs(settings, results, logs)
    say(f"wrote {out / 'table.md'}")
    return results


def main(argv: list[str] | None = None, model=None, critic=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_settings(argv)
        results = run(settings, model=model, critic=critic)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
