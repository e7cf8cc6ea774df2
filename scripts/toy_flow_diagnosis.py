"""What the full Nabla-GFlowNet's flow network learns on a toy, against the exact answer.

Trains the flow network with the reward gradient through the frozen base (so the exact residual it
should learn is stationary), then compares the learned phi(x, t) with the exact residual
grad log F(x) - beta w grad R(x0_hat_base(x)) on states of the training sampler, per step: norms,
cosine, mean vector. ``--flow-target reverse`` is the flow as fitted before (the reverse nabla-DB
term; with the forward term not training the flow and the reverse term at the transition mean, the
setting docs/method.md diagnosed), ``bootstrap`` the default now. docs/method.md ("Flow network")
has the figures.

    .venv/bin/python scripts/toy_flow_diagnosis.py [--rounds 150] [--toy mixture] [--flow-target bootstrap] [--weighting none]

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
from engine.align.config import AlignConfig  # noqa: E402
from engine.align.lora import lora_disabled  # noqa: E402
from engine.align.objective import LinearReward  # noqa: E402
from engine.align.trainer import Aligner  # noqa: E402
from engine.sampling.sampler import make_scheduler, transition  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--rounds", type=int, default=150)
ap.add_argument("--toy", choices=sorted(ta.TOYS), default="mixture")
ap.add_argument("--flow-target", choices=("bootstrap", "reverse"), default="bootstrap")
ap.add_argument("--weighting", choices=("none", "sqrt", "squared"), default="none")
args = ap.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
kind, beta = ta.TOYS[args.toy]
C = ta.C
model = kind()
over = dict(flow_network=True, flow_target=args.flow_target, reward_weighting=args.weighting, reward_gradient_from="base")
if args.flow_target == "reverse":
    over.update(flow_forward_grad=False, reverse_point="mean")
cfg = AlignConfig(**{**ta.TOY_TRAINING, "beta": beta, "steps": args.rounds, **over})
al = Aligner(model, LinearReward(C), ["x"], cfg)
al.run()
scfg = cfg.sampler  # the training sampler (dpmsolver-sde)
exact = cf.exact_flow_guidance(model, beta, C, scfg)
fwd = cf.forward_target_guidance(model, beta, C, args.weighting, scfg)
sch = make_scheduler(model, scfg)
sch.set_timesteps(scfg.steps)
g = torch.Generator().manual_seed(5)
n = 2000
x = torch.randn(n, 2, generator=g)
cond = model.encode_prompts(["x"] * n)
print(f"{args.toy}, flow_target={args.flow_target}, w={args.weighting}, g through the base, {args.rounds} rounds")
for k, t in enumerate(sch.timesteps):
    with torch.no_grad(), lora_disabled(model):
        out = model.denoise(x, t.reshape(1), cond)
    mean, std = transition(sch, out, int(t), x, 1.0)
    x = mean + std[:, None] * torch.randn(x.shape, generator=g)
    if k + 1 < len(sch.timesteps):
        tn = sch.timesteps[k + 1]
        want = (exact(x, k) - fwd(x, k)).detach()
        with torch.no_grad():
            got = al.flow(x, torch.full((n,), float(tn)))
        cos = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
        if k % 3 == 0 or k >= len(sch.timesteps) - 3:
            mw, mg = want.mean(0).tolist(), got.mean(0).tolist()
            print(f"state {k + 1:2d} (t {int(tn):4d}): |exact| {want.norm(dim=1).mean():.4f} |learned| {got.norm(dim=1).mean():.4f} "
                  f"cos {cos:+.3f}  mean exact ({mw[0]:+.4f}, {mw[1]:+.4f}) learned ({mg[0]:+.4f}, {mg[1]:+.4f})")
