"""The simulated-artist study of the preference reward (issue 23, section 3).

For each hidden rule of engine/rewards/preference_study.py ("prefers taller objects", "prefers
orange", "dislikes tori"):

1. generate candidates with the embedded model and let the rule mark them (thirds: liked / neutral
   / disliked; tori disliked, other shapes liked);
2. fit the preference head on those picks and measure its AUC on held-out candidates;
3. align the model a few rounds with Nabla-R2D3 on the preference reward, and, as the baseline,
   with ReFL on the rule's own measure (a differentiable version of it: silhouette height, the
   orange palette reward, the critic's "not a torus");
4. on held-out (prompt, seed) pairs, print the rule's measure before/after and the Fréchet distance
   of the critic features to the base model's samples (FD to base).

Run (one thread; about 10-15 minutes with the defaults on a CPU core):

    OMP_NUM_THREADS=1 python scripts/preference_demo.py --out /tmp/pref_study

Writes ``results.json`` and ``results.md`` (the table) into --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.align.config import AlignConfig  # noqa: E402
from engine.align.evaluation import frechet_distance  # noqa: E402
from engine.align.objective import RenderedReward  # noqa: E402
from engine.align.trainer import Aligner  # noqa: E402
from engine.fileio import write_bytes, write_json  # noqa: E402
from engine.models import load_model, model_spec  # noqa: E402
from engine.render.cameras import OrbitConfig  # noqa: E402
from engine.render.volume import VolumeRenderConfig  # noqa: E402
from engine.rewards.preference import CriticFeatures, PreferenceReward, fit_head  # noqa: E402
from engine.rewards.preference_study import (RULES, STUDY_PROMPTS, held_out_auc, make_candidates,  # noqa: E402
                                             marks_from_measure, rule_measure)
from engine.sampling.sampler import SamplerConfig  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--picks", type=int, default=36, help="candidates the artist marks (default 36)")
    p.add_argument("--held-out", type=int, default=60, help="held-out candidates for the AUC (default 60)")
    p.add_argument("--rounds", type=int, default=8, help="alignment rounds per method (default 8)")
    p.add_argument("--eval-seeds", type=int, default=4, help="held-out seeds per prompt for the rule measure and FD")
    p.add_argument("--sampling-steps", type=int, default=20)
    p.add_argument("--beta", type=float, default=3e3, help="Nabla-R2D3's reward scale on the preference (the critic's)")
    p.add_argument("--lr", type=float, default=5e-4, help="Nabla-R2D3's learning rate on the preference (the critic's)")
    p.add_argument("--mode", choices=("logit", "log_prob"), default="logit", help="the preference reward's mode")
    p.add_argument("--methods", nargs="+", default=["nabla", "refl"], choices=["nabla", "refl"],
                   help="methods aligning on the preference (the baseline is always ReFL on the rule's measure)")
    p.add_argument("--skip-align", action="store_true", help="only the AUCs")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def align_config(method: str, rounds: int, steps: int, beta: float, lr: float) -> AlignConfig:
    return AlignConfig(method=method, steps=rounds, beta=beta, lr=lr, seed=0,
                       sampler=dataclasses.replace(AlignConfig.sampler, steps=steps),
                       orbit=OrbitConfig(views=4, random_azimuth=True, elevation_jitter=5.0),
                       render=VolumeRenderConfig(resolution=24, samples=24), subsample=0.4)


@torch.no_grad()
def held_out_figures(model, rule, features, seeds_per_prompt: int, sampler: SamplerConfig, first_seed: int = 2_000_000):
    """(rule figure, critic features (N, D)) of held-out samples of ``model`` (prompts x seeds from ``first_seed``)."""
    cands = make_candidates(model, len(STUDY_PROMPTS) * seeds_per_prompt, first_seed, features, sampler)
    return rule.report(rule.sample_measure(model, cands.latents, cands.prompts, cands.renders)), cands.features


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    features = CriticFeatures()
    model = load_model("embedded")
    sampler = SamplerConfig(steps=args.sampling_steps)
    t0 = time.perf_counter()
    train = make_candidates(model, args.picks, 0, features, sampler)
    held = make_candidates(model, args.held_out, 50_000, features, sampler)
    print(f"candidates: {args.picks} to pick, {args.held_out} held out ({time.perf_counter() - t0:.1f} s)", flush=True)
    results = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rules": {}}
    tuned = model_spec("embedded").alignment
    for name in args.rules:
        rule = RULES[name]
        row = {"description": rule.description, "unit": rule.unit}
        marks, thresholds = marks_from_measure(rule_measure(rule, model, train), rule.by_class)
        t = time.perf_counter()
        head = fit_head(train.features, marks, train.prompts)
        row["fit_s"] = time.perf_counter() - t
        row["picks"] = {m: marks.count(m) for m in ("liked", "disliked", "neutral")}
        row["cv_auc"] = head.meta["cross_validation"]["auc"]
        row["held_out_auc"] = held_out_auc(head.score(held.features), rule_measure(rule, model, held), rule.by_class, thresholds)
        print(f"[{name}] picks {row['picks']}: cross-validated AUC {row['cv_auc']:.3f}, held-out AUC {row['held_out_auc']:.3f}",
              flush=True)
        if not args.skip_align:
            # held-out samples with the sampler the aligner trains with, base and finetuned alike
            eval_sampler = align_config("nabla", 1, args.sampling_steps, 1, 1).sampler
            base_figure, base_feats = held_out_figures(model, rule, features, args.eval_seeds, eval_sampler)
            row["base"] = base_figure
            row["base_preference_score"] = float(head.score(base_feats).mean())
            # a scale for FD: the base model against itself on other seeds (sampling noise alone)
            _, other_feats = held_out_figures(model, rule, features, args.eval_seeds, eval_sampler, 3_000_000)
            row["fd_base_other_seeds"] = frechet_distance(other_feats, base_feats)
            runs = {"nabla on preference": ("nabla", PreferenceReward(head, features, args.mode), args.beta, args.lr),
                    "refl on preference": ("refl", PreferenceReward(head, features, args.mode), 1.0, tuned.lr_for("refl", name)),
                    "refl on the rule's measure": ("refl", rule.direct_reward(), 1.0, tuned.lr_for("refl", name))}
            runs = {k: v for k, v in runs.items() if v[0] in args.methods or k == "refl on the rule's measure"}
            for label, (method, reward, beta, lr) in runs.items():
                m = load_model("embedded")
                t = time.perf_counter()
                config = align_config(method, args.rounds, args.sampling_steps, beta, lr)
                objective = RenderedReward(m, reward, config.orbit, config.render, config.image_noise)
                aligner = Aligner(m, objective, list(STUDY_PROMPTS), config)
                aligner.run()
                figure, feats = held_out_figures(m, rule, features, args.eval_seeds, eval_sampler)
                row[label] = {"figure": figure, "fd_to_base": frechet_distance(feats, base_feats),
                              "preference_score": float(head.score(feats).mean()), "seconds": time.perf_counter() - t}
                print(f"[{name}] {label}: {rule.unit}: {base_figure:.3f} -> {figure:.3f}, "
                      f"FD to base {row[label]['fd_to_base']:.3f}, preference score {row['base_preference_score']:.3f} -> "
                      f"{row[label]['preference_score']:.3f} ({row[label]['seconds']:.0f} s)", flush=True)
        results["rules"][name] = row
    write_json(args.out / "results.json", results)
    labels = [k for k in ("nabla on preference", "refl on preference", "refl on the rule's measure")
              if any(k in r for r in results["rules"].values())]
    lines = ["| rule | picks (liked/disliked/neutral) | CV AUC | held-out AUC | base | FD base vs other seeds | "
             + " | ".join(f"{k} | FD" for k in labels) + " |", "|---" * (6 + 2 * len(labels)) + "|"]
    for name, r in results["rules"].items():
        p = r["picks"]
        cells = [name, f"{p['liked']}/{p['disliked']}/{p['neutral']}", f"{r['cv_auc']:.3f}", f"{r['held_out_auc']:.3f}"]
        if "base" in r:
            cells += [f"{r['base']:.3f}", f"{r['fd_base_other_seeds']:.2f}"]
            cells += [c for k in labels for c in (f"{r[k]['figure']:.3f}", f"{r[k]['fd_to_base']:.2f}")]
        else:
            cells += ["-"] * (2 + 2 * len(labels))
        lines.append("| " + " | ".join(cells) + " |")
    write_bytes(args.out / "results.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
