"""How close the toy's LoRA family can get to the exact-flow oracle at all: offline distillation.

States of the oracle's own chain (base transitions with every mean moved by std^2 grad log F, the
"base + exact flow guidance" row of scripts/toy_alignment.py), 2,000 chains x 20 steps. The LoRA
(the toy's targets and rank) is fitted by Adam to the oracle's transition means at those states,
the squared mean error weighted by std^-2 ("std") or std^-4 ("score", the aligner's default units),
then the distilled model is sampled and judged like every row of the toy tables. If it stays short
of the oracle, no flow network, however exact, can bring a policy of this family there.

    .venv/bin/python scripts/toy_family_ceiling.py [--toy mixture] [--units std] [--iterations 1500]

One thread, about a minute.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import toy_alignment as ta  # noqa: E402
from engine.align import closed_form as cf  # noqa: E402
from engine.align.lora import add_lora, lora_parameters  # noqa: E402
from engine.sampling.sampler import make_scheduler, transition  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--toy", choices=sorted(ta.TOYS), default="mixture")
ap.add_argument("--units", choices=("std", "score"), default="std")
ap.add_argument("--iterations", type=int, default=1500)
ap.add_argument("--lr", type=float, default=1e-2)
args = ap.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
kind, beta = ta.TOYS[args.toy]
model = kind()
pool = cf.base_samples(model, 200_000, seed=10**7, config=ta.SAMPLER)
reference, reference_mean = cf.tilted_reference(pool, beta, ta.C, 4000), cf.tilted_expectation(pool, beta, ta.C)
base = cf.base_samples(model, 4000, seed=10**6, config=ta.SAMPLER)
guide = cf.exact_flow_guidance(model, beta, ta.C)
sched = make_scheduler(model, ta.SAMPLER)
sched.set_timesteps(ta.SAMPLER.steps)
g = torch.Generator().manual_seed(3)
n = 2000
x = torch.randn(n, 2, generator=g)
cond = model.encode_prompts(["x"] * n)
states, wanted, variances = [], [], []
with torch.no_grad():
    for k, t in enumerate(sched.timesteps):
        mean, std = transition(sched, model.denoise(x, t.reshape(1), cond), int(t), x, 1.0)
        target = mean + std.pow(2)[:, None] * guide(mean, k)
        states.append(x)
        wanted.append(target)
        variances.append(std.pow(2))
        x = target + std[:, None] * torch.randn(x.shape, generator=g)
add_lora(model, ta.TOY_TRAINING["lora_rank"], None, model.lora_target_modules, seed=0)
opt = torch.optim.Adam(lora_parameters(model), lr=args.lr)
power = {"std": 1, "score": 2}[args.units]
for it in range(args.iterations):
    loss = torch.zeros(())
    for k, t in enumerate(sched.timesteps):
        idx = torch.randint(n, (256,), generator=g)
        mean, _ = transition(sched, model.denoiser(states[k][idx], t.expand(256)), int(t), states[k][idx], 1.0)
        loss = loss + ((mean - wanted[k][idx]).pow(2).sum(1) / variances[k][idx].pow(power)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if it % max(1, args.iterations // 5) == 0 or it == args.iterations - 1:
        print(f"iteration {it}: loss {float(loss.detach()):.4f}", flush=True)
samples = cf.base_samples(model, 4000, seed=10**6, config=ta.SAMPLER)
oracle = cf.guided_sample(kind(), guide, 4000, 10**6)
print("| row | shift (of exact) | shift (of data tilt) | drift across | mass per component | spread | energy | SW2 |")
print(f"| oracle: base + exact flow guidance | {cf.report(model, oracle, base, reference, beta, ta.C, reference_mean).row()} |")
print(f"| LoRA distilled onto it ({args.units} units, {args.iterations} iterations) | "
      f"{cf.report(model, samples, base, reference, beta, ta.C, reference_mean).row()} |")
