"""What the full Nabla-GFlowNet's flow network learns on the mixture toy, against the exact answer.

Trains the flow network in its stationary setting (w = 1, reward gradient through the frozen base, the
forward term not training the flow, reverse term at the transition mean), then compares the learned
phi(x, t) with the exact residual grad log F(x) - beta grad R(x0_hat_base(x)) on states of the training
sampler, per step: norms, cosine, mean vector. docs/method.md ("Flow network") has the figures.

    .venv/bin/python scripts/toy_flow_diagnosis.py [ROUNDS]      # default 150; one thread, ~1 min
"""
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
from engine.models.toy import MixtureToyModel  # noqa: E402
from engine.sampling.sampler import make_scheduler, transition  # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
beta, C = 1.0, torch.tensor([1.0, 0.0])
model = MixtureToyModel()
over = dict(flow_network=True, flow_forward_grad=False, reverse_point="mean", reward_weighting="none", reward_gradient_from="base")
cfg = AlignConfig(**{**ta.TOY_TRAINING, "beta": beta, "steps": int(sys.argv[1]) if len(sys.argv) > 1 else 150, **over})
al = Aligner(model, LinearReward(C), ["x"], cfg); al.run()
scfg = cfg.sampler  # the training sampler (dpmsolver-sde)
exact = cf.exact_flow_guidance(model, beta, C, scfg)
fwd = cf.forward_target_guidance(model, beta, C, "none", scfg)
sch = make_scheduler(model, scfg); sch.set_timesteps(scfg.steps)
g = torch.Generator().manual_seed(5); n = 2000
x = torch.randn(n, 2, generator=g); cond = model.encode_prompts(["x"] * n)
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
