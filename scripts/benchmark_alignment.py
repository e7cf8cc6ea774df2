"""Seconds per alignment round for every method on the embedded model, and the Nabla-R2D3 / ReFL ratio.

    .venv/bin/python scripts/benchmark_alignment.py [--trajectories 8] [--rounds 3] [--threads 1]
        [--micro-batch 4] [--accumulate 2] [--reward palette] [--set FIELD=JSON] [--profile]
        [--methods refl draft ddpo nabla "nabla:intermediate_views=1,intermediate_detail=0.5"
                   'nabla:intermediate_gradient="terminal"' "nabla:subsample=0.1"]

Each method runs with the engine's defaults for the reward (AlignJob.config: beta, lr, sampler,
views, render settings), ``--trajectories`` per round, micro-batches of ``--micro-batch`` and
``--accumulate`` of them per update (8 / 4 / 2: one update per round, the paper's batching). One
warm-up round each, then the median of ``--rounds`` timed rounds, interleaved across methods. Each round
is timed twice: wall-clock seconds and the process's CPU seconds (with one thread, CPU seconds barely
move when other jobs share the machine; wall seconds do). The ratios are given for both. Not a test:
nothing is asserted.
``--profile`` prints the top of cProfile's cumulative table (CPU seconds) for one round of the first
Nabla-R2D3 variant. Round cost and what the variants buy: docs/method.md, "Round cost".
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
from engine.align.objective import RenderedReward  # noqa: E402
from engine.align.trainer import Aligner  # noqa: E402
from engine.models import load_model  # noqa: E402
from engine.rewards.registry import build_reward_expression  # noqa: E402

OPTIONS = {"palette": {"palette": {"palette": "#ff8800"}}}  # the demo's orange palette
PROMPTS = ["a red cube", "a green cone", "a blue torus", "a yellow pyramid"]


def _assignment(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, json.loads(value)


def _variant(text: str) -> tuple[str, str, dict]:
    """"nabla" or "nabla:intermediate_views=1,intermediate_detail=0.5" -> (label, method, overrides)."""
    method, _, rest = text.partition(":")
    return text, method, dict(_assignment(a) for a in rest.split(",") if a)


def aligner(model, method: str, overrides: dict, args) -> Aligner:
    job = AlignJob(out_dir="unused", reward=args.reward, method=method, trajectories=args.trajectories,
                   extra={"micro_batch": args.micro_batch, "accumulate": args.accumulate, **dict(args.set or []), **overrides})
    cfg = job.config()
    objective = RenderedReward(model, build_reward_expression(args.reward, OPTIONS.get(args.reward, {})), cfg.orbit, cfg.render, cfg.image_noise)
    return Aligner(model, objective, PROMPTS, dataclasses.replace(cfg, steps=10**6))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--accumulate", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reward", default="palette")
    ap.add_argument("--methods", nargs="+", default=["refl", "draft", "ddpo", "nabla"],
                    help='methods, or "method:FIELD=JSON,..." for a variant (e.g. nabla:intermediate_views=1)')
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--set", action="append", type=_assignment, metavar="FIELD=JSON",
                    help="an AlignConfig field for every method, e.g. intermediate_views=1 (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = [_variant(m) for m in args.methods]
    # One model and aligner per variant, rounds interleaved: a slow spell of the machine then hits
    # every method alike instead of whichever ran during it.
    aligners = {}
    for label, method, overrides in variants:
        aligners[label] = aligner(load_model("embedded"), method, overrides, args)
        aligners[label].train_step()  # warm-up
    runs = {label: [] for label in aligners}
    cpu_runs = {label: [] for label in aligners}
    for _ in range(args.rounds):
        for label, al in aligners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            al.train_step()
            runs[label].append(time.perf_counter() - t0)
            cpu_runs[label].append(time.process_time() - c0)
    seconds = {label: statistics.median(r) for label, r in runs.items()}
    cpu = {label: statistics.median(r) for label, r in cpu_runs.items()}
    for label, s in seconds.items():
        print(f"{label:12s} {s:6.2f} s per round, {s / args.trajectories:5.2f} s per trajectory, {cpu[label]:6.2f} CPU s per round  "
              f"(rounds: {', '.join(f'{r:.2f}' for r in runs[label])}; CPU {', '.join(f'{r:.2f}' for r in cpu_runs[label])})", flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.trajectories} trajectories per round, "
          f"micro-batch {args.micro_batch} x {args.accumulate}, reward {args.reward}, rounds interleaved")
    if "refl" in seconds:
        for label, _, _ in variants:
            if label.startswith("nabla"):
                print(f"{label} / ReFL: {seconds[label] / seconds['refl']:.2f} (wall), {cpu[label] / cpu['refl']:.2f} (CPU)")
    if args.profile:
        label = next(label for label, method, _ in variants if method == "nabla")
        prof = cProfile.Profile(time.process_time)  # CPU seconds: steady while other jobs share the machine
        prof.runcall(aligners[label].train_step)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
