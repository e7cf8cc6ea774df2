"""How close each aligner, and each oracle, gets to the exact reward-tilted distribution on the toys.

Three closed-form toys (engine/models/toy.py), exact denoisers, linear reward R(x) = c.x, c = (1, 0):
- gaussian: N((0.5, -0.5), 0.7^2 I), beta 2;
- mixture: three components at (-1, 0), (1, 0), (0, 1), weights 0.5 / 0.2 / 0.3, std 0.3, beta 1: the
  tilt makes the minority component (1, 0) the majority (0.2 -> 0.53 at the data level);
- anisotropic: two components with diagonal, unequal covariances, (-0.8, 0) std (0.2, 0.6) weight 0.6
  and (0.8, 0.3) std (0.5, 0.15) weight 0.4, beta 1: the tilt moves the two means by different
  amounts along c and makes the minority the majority (0.4 -> 0.79 at the data level).

The reference is the exact tilt of the 20-step base sampler's own distribution (importance-resampled
from 200k base samples; engine/align/closed_form.py says why that, and not the data-level tilt, is
the target). Columns: mean shift along c as a fraction of the reference's and of the data-level
tilt's, drift across c, mass per component, within-component variance per axis, energy and sliced W2
distances to the reference (0 = exact; the "fresh draw" row is the floor that sampling noise sets,
the "base" row shows how far the untuned sampler is).

"oracle: policy on the exact flow" trains the policy with the flow variant's forward term and the
exact flow gradient as its target (a perfect flow network): what an exactly learned flow would give
with the toy's LoRA family and training settings.

    .venv/bin/python scripts/toy_alignment.py [--toy gaussian|mixture|anisotropic] [--rounds 150] [--only SUBSTRING]
        [--set FIELD=JSON ...]   # e.g. --set epochs=16 --set seed=1: on every finetuned row

The finetuned rows use one training seed (0 unless ``--set seed=S``): on the mixture the same
settings moved the mean 104% or 69% of the way with seeds 0 and 1 (docs/method.md, "Several passes
per round"), so compare rows over seeds before reading a few points into them.

One torch thread; each finetuned row takes 10-60 s.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.align import closed_form as cf  # noqa: E402
from engine.align.config import AlignConfig  # noqa: E402
from engine.align.objective import LinearReward  # noqa: E402
from engine.align.trainer import Aligner  # noqa: E402
from engine.align import methods  # noqa: E402
from engine.models.toy import AnisotropicToyModel, GaussianToyModel, MixtureToyModel  # noqa: E402
from engine.sampling.sampler import SamplerConfig  # noqa: E402

C = torch.tensor([1.0, 0.0])
TOYS = {"gaussian": (GaussianToyModel, 2.0), "mixture": (MixtureToyModel, 1.0), "anisotropic": (AnisotropicToyModel, 1.0)}
SAMPLER = SamplerConfig(steps=20)  # DDIM, eta 1: the sampler the finetuned models are judged with

# The toy's training settings (the nabla rows share them; each method keeps its own lr).
TOY_TRAINING = dict(trust_region=3.0, lr=1e-2, lora_rank=2, trajectories=16, micro_batch=8)
LAST = SamplerConfig(scheduler="dpmsolver-sde", final_sigmas="sigma_min")  # stochastic, trained last step
METHODS = [
    ("nabla (defaults)", {}),
    ("nabla, w = 1", dict(reward_weighting="none")),
    ("nabla, w = alpha_bar", dict(reward_weighting="squared")),
    ("nabla, w = 1, g through base", dict(reward_weighting="none", reward_gradient_from="base")),
    ("nabla, train on previous round", dict(train_on_previous=True)),
    ("nabla, w = 1, g through base, previous round", dict(reward_weighting="none", reward_gradient_from="base", train_on_previous=True)),
    ("nabla, stochastic last step", dict(sampler=LAST)),
    ("nabla, w = 1, stochastic last step", dict(sampler=LAST, reward_weighting="none")),
    ("nabla + flow network (defaults: bootstrap)", dict(flow_network=True)),
    ("nabla + flow network, w = 1", dict(flow_network=True, reward_weighting="none")),
    ("nabla + flow network, before: reverse term", dict(flow_network=True, flow_target="reverse")),
    ("nabla + flow network, before: reverse term, w = 1", dict(flow_network=True, flow_target="reverse", reward_weighting="none")),
    ("nabla + flow network, reverse term training the flow only (official)",
     dict(flow_network=True, flow_target="reverse", reverse_policy_grad=False)),
    ("nabla + flow network, reverse term, w = 1, reverse at the mean",
     dict(flow_network=True, flow_target="reverse", reward_weighting="none", reverse_point="mean")),
    ("nabla + flow network, reverse term, flow fitted by the reverse term only", dict(flow_network=True, flow_target="reverse", flow_forward_grad=False)),
    ("nabla + flow network, stochastic last step", dict(flow_network=True, sampler=LAST)),
    ("ReFL", dict(method="refl", lr=3e-3, trust_region=0.0)),
    ("DRaFT-1", dict(method="draft", lr=3e-3, trust_region=0.0)),
    ("DDPO", dict(method="ddpo", lr=3e-2, trust_region=0.0)),
]


def finetune(toy: str, rounds: int, overrides: dict):
    kind, beta = TOYS[toy]
    torch.manual_seed(0)
    model = kind()
    cfg = AlignConfig(**{**TOY_TRAINING, "beta": beta, "steps": rounds, **overrides})
    t0 = time.perf_counter()
    Aligner(model, LinearReward(C), ["x"], cfg).run()
    return model, time.perf_counter() - t0


@contextlib.contextmanager
def exact_flow_targets():
    """Inside the block the forward target at every end state is the exact grad log F (w = 1, no
    learned flow): the reward gradients the loss sees are replaced by grad log F / beta."""
    plain = methods.reward_gradients

    def exact(ctx, chunk, x, states):
        r, _, w = plain(ctx, chunk, x, states)
        K, b = len(ctx.timesteps), x.shape[0] // len(states)
        grads = []
        for i, j in enumerate(states):
            xs = x[i * b:(i + 1) * b].detach().requires_grad_(True)
            with torch.enable_grad():
                log_f = ctx.model.log_flow(xs, int(ctx.timesteps[j]) if j < K else -1, ctx.config.beta, C)
                grads.append(torch.autograd.grad(log_f.sum(), xs)[0] / ctx.config.beta)
        return r, torch.cat(grads), torch.ones_like(w)

    methods.reward_gradients = exact
    try:
        yield
    finally:
        methods.reward_gradients = plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", choices=sorted(TOYS), action="append")
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--only", action="append", default=None, help="run only the rows whose name contains this (repeatable: any of them)")
    ap.add_argument("--no-oracles", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="an AlignConfig field for every finetuned row, oracle policy included (repeatable)")
    args = ap.parse_args()
    extra = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in AlignConfig.__dataclass_fields__:
            ap.error(f"bad --set {item!r}: expected FIELD=VALUE with FIELD an AlignConfig field")
        try:
            extra[key] = json.loads(value)
        except json.JSONDecodeError:  # a bare word is a string, as in scripts/evaluate_alignment.py
            extra[key] = value
    torch.set_num_threads(1)

    def wanted(name: str) -> bool:
        return args.only is None or any(part in name for part in args.only)

    for toy in args.toy or sorted(TOYS):
        kind, beta = TOYS[toy]
        model = kind()
        base_pool = cf.base_samples(model, 200_000, seed=10**7, config=SAMPLER)
        reference = cf.tilted_reference(base_pool, beta, C, args.samples)
        reference_mean = cf.tilted_expectation(base_pool, beta, C)
        base = cf.base_samples(model, args.samples, seed=10**6, config=SAMPLER)
        means, weights = model.tilted(beta, C)
        print(f"\n## {toy} toy, beta {beta:g}: data-level tilt weights {' / '.join(f'{w:.2f}' for w in weights)}; "
              f"{args.rounds} rounds x 16 trajectories\n")
        print("| row | shift (of exact) | shift (of data tilt) | drift across | mass per component | spread | energy | SW2 | time |")
        print("|---|---|---|---|---|---|---|---|---|")

        def show(name, samples, seconds=None):
            if not wanted(name):
                return
            rep = cf.report(model, samples, base, reference, beta, C, reference_mean)
            print(f"| {name} | {rep.row()} | {'-' if seconds is None else f'{seconds:.0f} s'} |", flush=True)

        if not args.no_oracles:
            show("exact tilt (reference, fresh draw)", cf.tilted_reference(base_pool, beta, C, args.samples, seed=1))
            show("base sampler", base)
            tilted = model.with_components(means, weights)
            show("oracle: exact tilted denoiser", cf.base_samples(tilted, args.samples, seed=10**6, config=SAMPLER))
            show("oracle: base + exact flow guidance", cf.guided_sample(model, cf.exact_flow_guidance(model, beta, C), args.samples, 10**6))
            for w in ("none", "sqrt", "squared"):
                h = cf.forward_target_guidance(model, beta, C, w)
                show(f"oracle: base + forward target, w = {w}", cf.guided_sample(model, h, args.samples, 10**6))
            name = "oracle: policy on the exact flow (a perfect flow network)"
            if wanted(name):
                with exact_flow_targets():
                    tuned, seconds = finetune(toy, args.rounds, dict(extra))
                show(name, cf.base_samples(tuned, args.samples, seed=10**6, config=SAMPLER), seconds)
        for name, overrides in METHODS:
            if not wanted(name):
                continue
            tuned, seconds = finetune(toy, args.rounds, {**overrides, **extra})
            show(name, cf.base_samples(tuned, args.samples, seed=10**6, config=SAMPLER), seconds)


if __name__ == "__main__":
    main()
