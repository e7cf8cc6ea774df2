"""Seconds per alignment round for every method on the embedded model, and the Nabla-R2D3 / ReFL ratio.

    .venv/bin/python scripts/benchmark_alignment.py [--trajectories 8] [--rounds 2] [--threads 1]
        [--micro-batch 4] [--accumulate 2] [--reward palette] [--set FIELD=JSON] [--profile]

Each method runs with the engine's defaults for the reward (AlignJob.config: beta, lr, sampler,
views, render settings), ``--trajectories`` per round, micro-batches of ``--micro-batch`` and
``--accumulate`` of them per update (8 / 4 / 2: one update per round, the paper's batching). One
warm-up round, then the median of ``--rounds`` timed rounds. Not a test: nothing is asserted.
``--profile`` prints the top of cProfile's cumulative table for one Nabla-R2D3 round.
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.align.job import AlignJob  # noqa: E402
from engine.align.lora import remove_lora  # noqa: E402
from engine.align.objective import RenderedReward  # noqa: E402
from engine.align.trainer import Aligner  # noqa: E402
from engine.models import load_model  # noqa: E402
from engine.rewards.registry import build_reward_expression  # noqa: E402

OPTIONS = {"palette": {"palette": {"palette": "#ff8800"}}}  # the demo's orange palette
PROMPTS = ["a red cube", "a green cone", "a blue torus", "a yellow pyramid"]


def _assignment(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, json.loads(value)


def aligner(model, method: str, args) -> Aligner:
    job = AlignJob(out_dir="unused", reward=args.reward, method=method, trajectories=args.trajectories,
                   extra={"micro_batch": args.micro_batch, "accumulate": args.accumulate, **dict(args.set or [])})
    cfg = job.config()
    objective = RenderedReward(model, build_reward_expression(args.reward, OPTIONS.get(args.reward, {})), cfg.orbit, cfg.render, cfg.image_noise)
    return Aligner(model, objective, PROMPTS, dataclasses.replace(cfg, steps=10**6))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--accumulate", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reward", default="palette")
    ap.add_argument("--methods", nargs="+", default=["refl", "draft", "ddpo", "nabla"])
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--set", action="append", type=_assignment, metavar="FIELD=JSON",
                    help="an AlignConfig field for every method, e.g. intermediate_views=1 (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("embedded")
    seconds = {}
    for method in args.methods:
        remove_lora(model)
        al = aligner(model, method, args)
        al.train_step()  # warm-up
        runs = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            al.train_step()
            runs.append(time.perf_counter() - t0)
        seconds[method] = statistics.median(runs)
        print(f"{method:6s} {seconds[method]:6.2f} s per round, {seconds[method] / args.trajectories:5.2f} s per trajectory", flush=True)
        if method == "nabla" and args.profile:
            prof = cProfile.Profile()
            prof.runcall(al.train_step)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.trajectories} trajectories per round, "
          f"micro-batch {args.micro_batch} x {args.accumulate}, reward {args.reward}")
    if "nabla" in seconds and "refl" in seconds:
        print(f"Nabla-R2D3 / ReFL: {seconds['nabla'] / seconds['refl']:.2f}")


if __name__ == "__main__":
    main()
