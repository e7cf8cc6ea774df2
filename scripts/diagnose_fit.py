"""Per transition: the shift a Nabla-R2D3 target asks for against the shift an adapter makes.

    .venv/bin/python scripts/diagnose_fit.py [--adapter DIR] [--reward palette --option palette.palette=#ff8800]
                                             [--beta 3e3] [--scheduler ddim] [--redraws 4]

Samples one trajectory per prompt (the alignment table's prompts, seeds 7000+) with the adapter (or
the base model), and prints for each step k: the transition std, the norm of the target shift
std^2 beta w g (over all samples), the norm of the adapter's shift mu_theta - mu_base, their cosine,
and how consistent the target is given x_k (cosine between the target and its mean over
``--redraws`` redraws of x_{k+1}; near 1: learnable from x_k, low: mostly noise). This is the
printout behind docs/alignment.md, "Which transitions weigh most".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.align.config import AlignConfig  # noqa: E402
from engine.align.lora import load_adapter, lora_disabled  # noqa: E402
from engine.align.methods import Chunk, StepContext, _output, _scaled_reward_gradient, reward_and_gradient  # noqa: E402
from engine.align.objective import RenderedReward  # noqa: E402
from engine.models import load_model  # noqa: E402
from engine.rewards.registry import build_reward_expression, parse_option_assignments  # noqa: E402
from engine.sampling.sampler import SamplerConfig, sample, transition  # noqa: E402

PROMPTS = ("a red cube", "an orange sphere", "a yellow cylinder", "a green cone",
           "a blue torus", "a purple pyramid", "a white sphere", "a black cube")


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a.flatten() @ b.flatten() / (a.norm() * b.norm()).clamp_min(1e-30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", type=Path, default=None, help="peft adapter folder (default: the base model, shift 0)")
    ap.add_argument("--reward", default="palette")
    ap.add_argument("--option", action="append", default=None, metavar="REWARD.OPTION=VALUE")
    ap.add_argument("--beta", type=float, default=3e3)
    ap.add_argument("--weighting", default="sqrt", choices=("sqrt", "squared", "none"))
    ap.add_argument("--scheduler", default="ddim", choices=("ddim", "dpmsolver-sde"))
    ap.add_argument("--redraws", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model("embedded")
    if args.adapter is not None:
        load_adapter(model, args.adapter)
    options = parse_option_assignments(args.option if args.option is not None else ["palette.palette=#ff8800"])
    cfg = AlignConfig(beta=args.beta, reward_weighting=args.weighting, sampler=SamplerConfig(scheduler=args.scheduler))
    objective = RenderedReward(model, build_reward_expression(args.reward, options), cfg.orbit, cfg.render, cfg.image_noise)
    prompts = list(PROMPTS)
    sampler = cfg.sampler.for_model(model)
    traj = sample(model, prompts, [7000 + i for i in range(len(prompts))], sampler, return_trajectory=True).trajectory
    scheduler = model.make_scheduler(args.scheduler)
    scheduler.set_timesteps(sampler.steps)
    g = torch.Generator().manual_seed(0)
    ctx = StepContext(model, scheduler, cfg, objective, objective.sample_views(g), sampler.guidance, g)
    chunk = Chunk(traj.latents, traj.model_outputs, traj.stds, traj.log_probs, prompts, model.encode_prompts(prompts),
                  model.unconditional_embeds(len(prompts)), [])
    print("| k | std | target shift | adapter shift | cosine | target consistency |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k in range(len(scheduler.timesteps)):
        std = traj.stds[k]
        if not bool((std > 0).all()):
            continue  # deterministic step: not trained on
        x_t, t = traj.latents[k], int(scheduler.timesteps[k])
        with torch.no_grad():
            mean, _ = transition(scheduler, _output(ctx, chunk, x_t, k), t, x_t)
            with lora_disabled(model):
                mean_base, _ = transition(scheduler, _output(ctx, chunk, x_t, k), t, x_t)
        var = std.view(-1, *[1] * (x_t.dim() - 1)) ** 2

        def wanted(x_next: torch.Tensor) -> torch.Tensor:
            _, grad, w = reward_and_gradient(ctx, chunk, x_next, k + 1)
            return var * _scaled_reward_gradient(ctx, grad, w)

        target = wanted(traj.latents[k + 1])
        redrawn = sum(wanted(mean + var.sqrt() * torch.randn(mean.shape, generator=g)) for _ in range(args.redraws)) / args.redraws
        shift = mean - mean_base
        print(f"| {k} | {float(std[0]):.4f} | {float(target.norm()):.4g} | {float(shift.norm()):.4g} | "
              f"{_cos(shift, target):.3f} | {_cos(redrawn, target):.3f} |", flush=True)


if __name__ == "__main__":
    main()
