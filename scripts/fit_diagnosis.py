"""Can the LoRA family follow E[forward target | x_t] at all? Offline distillation on the embedded model.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fit_diagnosis.py [--reward palette] [--prompts 4]
        [--redraws 4] [--iterations 150] [--grid rank=2,8,32 lr=1e-3,5e-3,2e-2 targets=default,attention,ff,conditioning]
        [--out /work/tmp/fit]

1. Records trajectories of the *base* model's sampler (the training sampler: SDE-DPM-Solver++, 20
   steps) for ``--prompts`` of the alignment table's prompts on two tuning seed sets (4,000,000 on:
   the training states; 5,000,000 on: held-out states), and picks each trajectory's transitions as an
   update does (``subsample`` 0.4, stratified, the final trainable one always).
2. At every picked transition: the single-sample forward target (the round's cameras, image noise,
   the recorded end state) and a low-noise one (``--redraws`` redraws of the end state and the
   cameras, no image noise; engine/align/fit_diagnostics.py). ``target_cos`` between them says how
   noisy the method's target is. Cached in ``--out``/targets_<reward>.pt.
3. Distils a fresh LoRA onto the fixed low-noise target at the training states: the method's own
   forward loss, mean(((mu_theta - mu_base) / std^2 - target)^2 std^(2p)), without the trust region,
   Adam, ``--iterations`` full-batch steps. Reports the fit cosine reached (in the loss's units, as
   ``fit_cos``) on the training states and on the held-out ones, against the low-noise target and the
   single-sample one. One variable at a time around rank 8, lr 5e-3, the model's targets.

``--as-online`` distils with the online update's settings instead (one trajectory's transitions a
step, the trust region toward the base's outputs, AdamW, the grad-norm clip); ``--set FIELD=JSON``
changes AlignConfig fields (e.g. ``trust_region=0``). ``--online ROUNDS`` instead trains the method
for ROUNDS rounds of 4 trajectories with ``fit_clean_redraws=--redraws`` and prints fit_cos,
fit_cos_clean and target_cos per round.

Writes ``--out``/fit_diagnosis_<reward>...json (after every distillation run) and prints a markdown
table. One torch thread. docs/method.md, "Fit against target noise (issue 21 §2)".
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.align.config import AlignConfig  # noqa: E402
from engine.align.fit_diagnostics import low_noise_target  # noqa: E402
from engine.align.lora import add_lora, lora_disabled, lora_parameters, remove_lora  # noqa: E402
from engine.align.methods import RESIDUAL_POWER, Chunk, StepContext, _bcast, _group_timesteps, _means, _repeat_embeds, \
    _stack, choose_transitions  # noqa: E402
from engine.align.objective import RenderedReward  # noqa: E402
from engine.fileio import write_json  # noqa: E402
from engine.models import load_model, model_spec  # noqa: E402
from engine.rewards.registry import build_reward_expression, parse_option_assignments  # noqa: E402
from engine.sampling.sampler import guided_output, make_scheduler, sample  # noqa: E402

PROMPTS = ("a red cube", "an orange sphere", "a yellow cylinder", "a green cone",
           "a blue torus", "a purple pyramid", "a white sphere", "a black cube")
SEED_SETS = {"train": 4_000_000, "held_out": 5_000_000}  # the tuning seeds of scripts/evaluate_alignment.py
REWARD_OPTIONS = {"palette": ["palette.palette=#ff8800"]}
TARGETS = {
    "default": None,  # the model's lora_target_modules
    "attention": ("to_q", "to_k", "to_v", "to_out.0"),
    "ff": ("ff.net.0.proj", "ff.net.2", "proj_out"),
    "conditioning": "default+conditioning",
}


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b) / max(math.sqrt(float(a @ a) * float(b @ b)), 1e-30)


def record(model, cfg: AlignConfig, objective, prompts: list[str], seed_base: int, redraws: int, say) -> dict:
    """Base trajectories of ``prompts`` (seeds seed_base + i), their picked transitions and both targets."""
    sampler = cfg.sampler.for_model(model)
    seeds = [seed_base + i for i in range(len(prompts))]
    traj = sample(model, prompts, seeds, sampler, return_trajectory=True).trajectory
    scheduler = make_scheduler(model, sampler)
    scheduler.set_timesteps(sampler.steps)
    g = torch.Generator().manual_seed(seed_base)
    b = len(prompts)
    chunk = Chunk(latents=traj.latents.float(), model_outputs=traj.model_outputs.float(), stds=traj.stds,
                  log_probs=traj.log_probs, prompts=prompts, cond=model.encode_prompts(prompts),
                  uncond=model.unconditional_embeds(b), transitions=[], means=traj.means.float())
    chunk.transitions = choose_transitions(cfg, len(scheduler.timesteps), chunk.stds, g)
    ctx = StepContext(model, scheduler, cfg, objective, objective.sample_views(g), sampler.guidance, g)
    ks = chunk.transitions
    t0 = time.perf_counter()
    single = low_noise_target(ctx, chunk, ks, 1, fresh_views=False, redraw_ends=False, image_noise=True, generator=g)
    clean = low_noise_target(ctx, chunk, ks, redraws, generator=torch.Generator().manual_seed(seed_base + 1))
    say(f"  targets at {len(ks)} x {b} states, {redraws} redraws: {time.perf_counter() - t0:.0f} s")
    return {"chunk": chunk, "ks": ks, "single": single, "clean": clean, "guidance": sampler.guidance}


def _units(cfg: AlignConfig, chunk: Chunk, ks: list[int], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    std = _stack(chunk.stds, ks).to(like.dtype)
    var = _bcast(std.pow(2), like)
    return var, _bcast(std.pow(RESIDUAL_POWER[cfg.residual_units] - 2), like)


def shift_of(model, scheduler, cfg: AlignConfig, data: dict, base_mean: torch.Tensor, with_output: bool = False):
    """mu_theta - mu_base (n * b, *L) at the recorded start states; differentiable in the LoRA. With
    ``with_output``: also the guided denoiser output (n * b, *L) there."""
    chunk, ks = data["chunk"], data["ks"]
    ctx = StepContext(model, scheduler, cfg, None, None, data["guidance"], torch.Generator())
    n, b = len(ks), chunk.latents.shape[1]
    x_t = _stack(chunk.latents, ks)
    t = _group_timesteps(ctx, ks, b, x_t.device)
    out = guided_output(model, x_t, t, _repeat_embeds(chunk.cond, n), _repeat_embeds(chunk.uncond, n), data["guidance"])
    shift = _means(ctx, out, x_t, ks) - base_mean
    return (shift, out) if with_output else shift


def base_mean_of(model, scheduler, cfg: AlignConfig, data: dict) -> torch.Tensor:
    with torch.no_grad(), lora_disabled(model):
        return shift_of(model, scheduler, cfg, data, 0.0)


def distil(model, scheduler, cfg: AlignConfig, train: dict, held: dict, rank: int, lr: float, targets: str,
           iterations: int, say, as_online: bool = False) -> dict:
    """Fit a fresh LoRA to the low-noise target at the training states; fit cosines along the way.

    ``as_online``: the online update's settings on the same fixed states and target: one trajectory's
    transitions per step (in turn), the trust region ``cfg.trust_region`` toward the base's outputs
    (the recorded ones: the states are base samples), AdamW with ``cfg.weight_decay`` and grad-norm
    clip ``cfg.grad_clip``. Otherwise full-batch Adam, no trust region, no clip."""
    remove_lora(model)
    modules = TARGETS[targets]
    if modules == "default+conditioning":
        modules = tuple(model.lora_target_modules) + tuple(model.lora_conditioning_modules)
    add_lora(model, rank, None, modules, seed=0)
    params = lora_parameters(model)
    opt = (torch.optim.AdamW(params, lr=lr, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
           if as_online else torch.optim.Adam(params, lr=lr))
    power = RESIDUAL_POWER[cfg.residual_units]
    sets = {"train": train, "held_out": held}
    bases = {name: base_mean_of(model, scheduler, cfg, d) for name, d in sets.items()}
    scales = {name: _units(cfg, d["chunk"], d["ks"], bases[name]) for name, d in sets.items()}
    curve = []
    t0 = time.perf_counter()

    def measure(it: int) -> dict:
        row = {"iteration": it}
        with torch.no_grad():
            for name, d in sets.items():
                var, units = scales[name]
                shift = shift_of(model, scheduler, cfg, d, bases[name]) * units
                row[f"{name}_clean"] = _cos(shift, var * d["clean"] * units)
                row[f"{name}_single"] = _cos(shift, var * d["single"] * units)
                row[f"{name}_ratio"] = math.sqrt(float(shift.pow(2).sum()) / max(float((var * d["clean"] * units).pow(2).sum()), 1e-30))
        return row

    checkpoints = sorted({0, iterations // 4, iterations // 2, iterations})
    if as_online:
        with torch.no_grad(), lora_disabled(model):
            _, base_out = shift_of(model, scheduler, cfg, train, bases["train"], with_output=True)
    var, _ = scales["train"]
    for it in range(iterations + 1):
        if it in checkpoints:
            curve.append(measure(it))
        if it == iterations:
            break
        shift, out = shift_of(model, scheduler, cfg, train, bases["train"], with_output=True)
        per_row = ((shift / var - train["clean"]).pow(2) * var.pow(power)).flatten(1).mean(1)
        if as_online:
            b = train["chunk"].latents.shape[1]
            rows = torch.arange(it % b, per_row.shape[0], b)  # one trajectory's transitions
            trust = (out[rows] - base_out[rows]).pow(2).mean()
            loss = per_row[rows].mean() + cfg.trust_region * trust
        else:
            loss = per_row.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if as_online and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
    final = curve[-1]
    say(f"  rank {rank} lr {lr:g} targets {targets}{' as online' if as_online else ''}: train {final['train_clean']:.3f}, held-out {final['held_out_clean']:.3f} "
        f"({time.perf_counter() - t0:.0f} s)")
    remove_lora(model)
    return {"rank": rank, "lr": lr, "targets": targets, "iterations": iterations, "as_online": as_online, "curve": curve,
            "parameters": sum(p.numel() for p in params)}


def online(model, cfg: AlignConfig, objective, prompts: list[str], args, overrides: dict, say) -> None:
    """A short run of the method with the low-noise fit logged (``fit_clean_redraws``)."""
    import dataclasses

    from engine.align.trainer import Aligner

    cfg = dataclasses.replace(cfg, steps=args.online, trajectories=4, seed=1, fit_clean_redraws=args.redraws)
    trainer = Aligner(model, objective, prompts, cfg)
    keys = ("fit_cos", "fit_cos_clean", "target_cos", "fit_ratio", "fit_ratio_clean", "target_ratio")
    rows = []
    for _ in range(args.online):
        rec = trainer.train_step().to_json()
        rows.append({"round": rec["step"], "reward": rec["reward_mean"], "time_s": rec["time_s"], **{k: rec[k] for k in keys}})
        say("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()))
    tag = "_".join([args.reward] + [f"{k}-{v}" for k, v in sorted(overrides.items())]).replace('"', "")
    label = f"_{args.label}" if args.label else ""
    write_json(args.out / f"online_{tag}_k{args.redraws}{label}.json",
               {"config": cfg.to_dict(), "prompts": prompts, "threads": torch.get_num_threads(), "rounds": rows})
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    print("mean over rounds: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))


def parse_grid(items: list[str]) -> dict:
    grid = {"rank": [2, 8, 32], "lr": [1e-3, 5e-3, 2e-2], "targets": ["default", "attention", "ff", "conditioning"]}
    for item in items:
        key, _, values = item.partition("=")
        if key not in grid or not values:
            raise SystemExit(f"bad --grid {item!r}: expected rank=..., lr=... or targets=...")
        cast = {"rank": int, "lr": float, "targets": str}[key]
        grid[key] = [cast(v) for v in values.split(",")]
        if key == "targets" and set(grid[key]) - set(TARGETS):
            raise SystemExit(f"targets among {', '.join(TARGETS)}")
    return grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reward", default="palette")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--redraws", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2")
    ap.add_argument("--as-online", action="store_true",
                    help="distil with the online update's settings (one trajectory a step, trust region, AdamW, clip)")
    ap.add_argument("--only-targets", action="store_true", help="stop after the targets (step 2)")
    ap.add_argument("--online", type=int, default=0, metavar="ROUNDS",
                    help="instead: train ROUNDS rounds of the method (4 trajectories a round, seed 1) with "
                         "fit_clean_redraws=--redraws and print fit_cos, fit_cos_clean and target_cos per round")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="AlignConfig fields, e.g. reward_weighting=\"none\"")
    ap.add_argument("--out", type=Path, default=Path("/work/tmp/fit"))
    ap.add_argument("--label", default="", help="suffix of the report's file name (runs of parts of a grid side by side)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if not 1 <= args.prompts <= len(PROMPTS) or args.redraws < 1 or args.iterations < 0:
        raise SystemExit("--prompts in 1..8, --redraws >= 1, --iterations >= 0")
    grid = parse_grid(args.grid)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    model = load_model("embedded")
    tuned = model_spec("embedded").alignment
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    cfg = AlignConfig(beta=tuned.beta.get(args.reward, 1e3), **overrides)
    options = parse_option_assignments(REWARD_OPTIONS.get(args.reward, []))
    objective = RenderedReward(model, build_reward_expression(args.reward, options), cfg.orbit, cfg.render, cfg.image_noise)
    prompts = list(PROMPTS[: args.prompts])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.online:
        online(model, cfg, objective, prompts, args, overrides, say)
        return
    tag = "_".join([args.reward] + [f"{k}-{v}" for k, v in sorted(overrides.items())]).replace('"', "")
    cache = args.out / f"targets_{tag}_p{args.prompts}_k{args.redraws}.pt"
    if cache.is_file():
        data = torch.load(cache, weights_only=False)
        say(f"targets from {cache}")
    else:
        data = {}
        for name, base in SEED_SETS.items():
            say(f"recording {name} states (seeds {base}+)")
            data[name] = record(model, cfg, objective, prompts, base, args.redraws, say)
        torch.save(data, cache)
    scheduler = make_scheduler(model, cfg.sampler.for_model(model))
    scheduler.set_timesteps(cfg.sampler.steps)
    report = {"reward": args.reward, "beta": cfg.beta, "prompts": prompts, "redraws": args.redraws,
              "overrides": overrides, "threads": torch.get_num_threads(), "targets": {}, "distil": []}
    for name, d in data.items():
        var, units = _units(cfg, d["chunk"], d["ks"], d["single"])
        report["targets"][name] = {
            "transitions": d["ks"], "states": int(d["single"].shape[0]),
            "target_cos": _cos(var * d["single"] * units, var * d["clean"] * units),
            "target_ratio": math.sqrt(float((d["clean"] * var * units).pow(2).sum()) / max(float((d["single"] * var * units).pow(2).sum()), 1e-30)),
            # per transition: how noisy the target is where
            "per_transition": [{"k": k, "target_cos": _cos(d["single"][i * len(prompts):(i + 1) * len(prompts)],
                                                           d["clean"][i * len(prompts):(i + 1) * len(prompts)])}
                               for i, k in enumerate(d["ks"])],
        }
        say(f"{name}: target_cos {report['targets'][name]['target_cos']:.3f}")
    label = f"_{args.label}" if args.label else ""
    path = args.out / f"fit_diagnosis_{tag}_p{args.prompts}_k{args.redraws}{label}.json"
    if not args.only_targets:
        runs = [(r, 5e-3, "default") for r in grid["rank"]]
        runs += [(8, lr, "default") for lr in grid["lr"] if (8, lr, "default") not in runs]
        runs += [(8, 5e-3, t) for t in grid["targets"] if (8, 5e-3, t) not in runs]
        for rank, lr, targets in runs:
            report["distil"].append(distil(model, scheduler, cfg, data["train"], data["held_out"], rank, lr, targets,
                                           args.iterations, say, args.as_online))
            write_json(path, report)  # after every run: a long grid keeps what it has measured
    write_json(path, report)
    print("\n| rank | lr | targets | LoRA params | train: cos to low-noise target | held-out: cos to low-noise | held-out: cos to single-sample | held-out norm ratio |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for run in report["distil"]:
        f = run["curve"][-1]
        print(f"| {run['rank']} | {run['lr']:g} | {run['targets']} | {run['parameters']} | {f['train_clean']:.3f} | "
              f"{f['held_out_clean']:.3f} | {f['held_out_single']:.3f} | {f['held_out_ratio']:.2f} |")


if __name__ == "__main__":
    main()
