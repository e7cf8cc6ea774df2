"""The simulated-artist study of the preference reward (issue 23, section 3).

For each hidden rule of engine/models/embedded/preference_study.py ("prefers taller objects", "prefers
orange", "dislikes tori"):

1. generate candidates from the rule's prompts (the six shape prompts; "an object" for no-tori) with
   the embedded model and let the rule mark them (thirds: liked / neutral / disliked; tori, as the
   geometric judge reads the meshes, disliked and other shapes liked);
2. fit the preference head on the first 12/24/36 picks and measure its AUC on held-out candidates;
3. align the model a few rounds (ReFL and/or Nabla-R2D3, --methods) on the preference reward, and, as
   the baseline, with ReFL on the rule's own measure (a differentiable version of it: silhouette
   height, the orange palette reward, the critic's "not a torus"); each round's trajectories make one
   update;
4. on held-out (prompt, seed) pairs, every --eval-every rounds, measure the rule's measure and the
   Fréchet distance of the critic features to the base model's samples (FD to base): a curve per run.
   no-tori's measure is the critic's mean p(torus) over the held-out renders (continuous; the torus
   fraction of a few samples moves in steps of 1/N), with the torus fraction as a "2nd" column.

Run (one thread; about 25 minutes with --methods refl, 45 with nabla too, on a loaded 2-core machine):

    OMP_NUM_THREADS=1 python scripts/preference_demo.py --out /tmp/pref_study --methods refl --docs docs/preferences.md

Writes ``results.json``, ``results.md`` (the table) and ``preference_study.png`` (picks -> AUC, each
rule's measure against FD to base) into --out; with --docs, also the table, command and plot into that markdown file,
between its ``<!-- preference-study:begin/end -->`` markers (the plot as images/preference_study.png).
"""
from __future__ import annotations

import argparse
import json
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.align.config import AlignConfig  # noqa: E402
from engine.align.evaluation import frechet_distance  # noqa: E402
from engine.align.objective import RenderedReward  # noqa: E402
from engine.align.trainer import Aligner  # noqa: E402
from engine.fileio import atomic_write, write_bytes, write_json  # noqa: E402
from engine.models import load_model, model_spec  # noqa: E402
from engine.render.cameras import OrbitConfig  # noqa: E402
from engine.render.volume import VolumeRenderConfig  # noqa: E402
from engine.rewards.preference import (AUTO, DEFAULT_FIT_FEATURE, FIT_FEATURES, CriticFeatures, FitSettings,  # noqa: E402
                                       PreferenceError, PreferenceReward, auto_feature_net, feature_net, fit_head,
                                       fit_head_auto, split_features)
from engine.models.embedded.preference_study import (RULES, held_out_auc, make_candidates,  # noqa: E402
                                             marks_from_measure, rule_measure)
from engine.sampling.sampler import SamplerConfig  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--picks", type=int, default=36, help="candidates the artist marks (default 36)")
    p.add_argument("--held-out", type=int, default=60, help="held-out candidates for the AUC (default 60)")
    p.add_argument("--rounds", type=int, default=8, help="alignment rounds per method (default 8)")
    p.add_argument("--eval-samples", type=int, default=24,
                   help="held-out samples (cycling over the rule's prompts) for the rule measure and FD (default 24)")
    p.add_argument("--sampling-steps", type=int, default=20)
    p.add_argument("--beta", type=float, default=3e3, help="Nabla-R2D3's reward scale on the preference (the critic's)")
    p.add_argument("--lr", type=float, default=5e-4, help="Nabla-R2D3's learning rate on the preference (the critic's)")
    p.add_argument("--mode", choices=("logit", "log_prob"), default="logit", help="the preference reward's mode")
    p.add_argument("--methods", nargs="+", default=["nabla", "refl"], choices=["nabla", "refl"],
                   help="methods aligning on the preference (the baseline is always ReFL on the rule's measure)")
    p.add_argument("--feature", default=DEFAULT_FIT_FEATURE, choices=[k for k in FIT_FEATURES if not k.startswith("clip")],
                   help="the preference's frozen features (default auto: the proportions unless critic+layout explains the picks better)")
    p.add_argument("--trajectories", type=int, default=8, help="trajectories per round, all in one update (default 8)")
    p.add_argument("--resolution", type=int, default=24, help="reward render size during alignment (default 24)")
    p.add_argument("--pick-counts", type=int, nargs="+", default=[12, 24, 36], help="pick counts of the AUC curve")
    p.add_argument("--eval-every", type=int, default=2, help="rounds between held-out measurements (default 2)")
    p.add_argument("--docs", type=Path, help="also write the table and plot into this markdown file between the study markers")
    p.add_argument("--skip-align", action="store_true", help="only the AUCs")
    p.add_argument("--cross-prompt-weight", type=float, default=FitSettings.cross_prompt_weight,
                   help="weight of pairs across prompts in the fit (0: within a prompt only; default 1)")
    p.add_argument("--train-seed", type=int, default=0, help="the alignment runs' training seed (default 0)")
    p.add_argument("--from-results", type=Path, metavar="RESULTS_JSON",
                   help="run nothing: rebuild the tables, plot (and --docs block) from a finished run's results.json")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def align_config(method: str, rounds: int, steps: int, beta: float, lr: float, trajectories: int = 8,
                 resolution: int = 24, seed: int = 0) -> AlignConfig:
    # All of a round's trajectories in one update (micro-batches of 4 accumulated): one trajectory per
    # update made every Adam step a near-sign step on a single sample's preference gradient, whose
    # sample-to-sample noise then dominated (docs/preferences.md, "Why aligning on it failed").
    micro = min(4, trajectories)
    return AlignConfig(method=method, steps=rounds, beta=beta, lr=lr, seed=seed, trajectories=trajectories,
                       micro_batch=micro, accumulate=max(1, trajectories // micro),
                       sampler=dataclasses.replace(AlignConfig.sampler, steps=steps),
                       orbit=OrbitConfig(views=4, random_azimuth=True, elevation_jitter=5.0),
                       render=VolumeRenderConfig(resolution=resolution, samples=resolution), subsample=0.4)


@torch.no_grad()
def held_out_figures(model, rule, features, samples: int, sampler: SamplerConfig, first_seed: int = 2_000_000,
                     cache: dict | None = None):
    """(rule figure, its second figure or None, preference features (N, D), critic features (N, 128)) of
    ``samples`` held-out samples of ``model`` (the rule's prompts in turn, seeds from ``first_seed``);
    FD is measured on the critic's features whatever the preference uses. ``cache`` (for the base
    model only): its samples by (prompts, first seed), shared by rules with the same prompts."""
    key = (rule.prompts, first_seed)
    if cache is not None and key in cache:
        cands, critic = cache[key]
    else:
        cands = make_candidates(model, samples, first_seed, features, sampler, prompts=rule.prompts)
        critic = CRITIC(cands.renders.rgb).mean(1)
        if cache is not None:
            cache[key] = cands, critic
    second = None if rule.second is None else rule.second.report(model, cands.latents, cands.prompts, cands.renders)
    return rule.report(rule.sample_measure(model, cands.latents, cands.prompts, cands.renders)), second, cands.features, critic


CRITIC = None  # the critic's features, for FD (set in main)


def fit_study_head(features, feats: torch.Tensor, marks: list[str], prompts: list[str], settings: FitSettings):
    """The head of the picks' features ``feats`` (N, D) of the study's feature net ``features``; with
    ``auto`` the kind is chosen as ``preferences fit`` chooses it."""
    if features.kind == AUTO:
        return fit_head_auto(split_features(features, feats), marks, prompts, settings)
    return fit_head(feats, marks, prompts, settings)


def head_columns(features, head, feats: torch.Tensor) -> torch.Tensor:
    """The columns of ``feats`` (N, D) that ``head`` reads (all of them unless the kind was chosen)."""
    return split_features(features, feats)[head.meta["feature"]] if features.kind == AUTO else feats


def check_classes(rule: str, what: str, marks: list[str]) -> None:
    """Exit with a message, not a traceback, where the artist's marks leave no liked or no disliked
    candidate (few candidates, or samplers so coarse that every candidate looks alike)."""
    counts = {m: marks.count(m) for m in ("liked", "disliked", "neutral")}
    if counts["liked"] == 0 or counts["disliked"] == 0:
        raise SystemExit(f"rule {rule}: the {len(marks)} {what} hold {counts['liked']} liked, {counts['disliked']} disliked "
                         f"and {counts['neutral']} neutral; the study needs both liked and disliked ones: draw more "
                         f"candidates or use more --sampling-steps")


def main(argv=None) -> int:
    global CRITIC
    args = parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_results is not None:
        results = json.loads(args.from_results.read_text())
        return write_outputs(results, args, results.get("argv", argv), rebuilt_by=argv)
    torch.set_num_threads(args.threads)
    CRITIC = CriticFeatures()
    features = auto_feature_net() if args.feature == AUTO else feature_net(args.feature)
    settings = FitSettings(feature=args.feature, cross_prompt_weight=args.cross_prompt_weight)
    model = load_model("embedded")
    sampler = SamplerConfig(steps=args.sampling_steps)
    t0 = time.perf_counter()
    candidates = {}  # the rule's prompts -> (candidates to pick, held-out candidates)
    for prompts in dict.fromkeys(RULES[name].prompts for name in args.rules):
        candidates[prompts] = (make_candidates(model, args.picks, 0, features, sampler, prompts=prompts),
                               make_candidates(model, args.held_out, 50_000, features, sampler, prompts=prompts))
    print(f"candidates: {args.picks} to pick, {args.held_out} held out, for {len(candidates)} prompt set(s) "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    results = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "argv": argv,
               "rules": {}}
    tuned = model_spec("embedded").alignment
    base_samples: dict = {}  # the base model's held-out samples, shared by rules with the same prompts
    for name in args.rules:
        rule = RULES[name]
        train, held = candidates[rule.prompts]
        row = {"description": rule.description, "unit": rule.unit, "prompts": list(rule.prompts)}
        if rule.second is not None:
            row["second_unit"] = rule.second.unit
        marks, thresholds = marks_from_measure(rule_measure(rule, model, train), rule.by_class)
        held_measure = rule_measure(rule, model, held)
        # too few picks of a class: the fit below exits with the engine's own count message
        check_classes(name, "held-out candidates (--held-out)", marks_from_measure(held_measure, rule.by_class,
                                                                                   None if rule.by_class else thresholds)[0])
        row["auc_by_picks"] = {}
        for n in sorted(set(args.pick_counts) | {args.picks}):
            if n > args.picks:
                continue
            try:  # the first n candidates, marked with the thresholds of all picks
                h = fit_study_head(features, train.features[:n], marks[:n], train.prompts[:n], settings)
                row["auc_by_picks"][str(n)] = held_out_auc(h.score(head_columns(features, h, held.features)), held_measure,
                                                           rule.by_class, thresholds)
            except PreferenceError:  # too few of one class among the first n
                row["auc_by_picks"][str(n)] = None
        t = time.perf_counter()
        try:
            head = fit_study_head(features, train.features, marks, train.prompts, settings)
        except PreferenceError as exc:  # too few of one class to fit
            raise SystemExit(f"rule {name}: {exc}") from None
        row["fit_s"] = time.perf_counter() - t
        row["picks"] = {m: marks.count(m) for m in ("liked", "disliked", "neutral")}
        row["cv_auc"] = head.meta["cross_validation"]["auc"]
        row["feature"] = head.meta["feature"]
        if "feature_selection" in head.meta:
            row["feature_selection"] = head.meta["feature_selection"]["cross_validated_auc"]
        row["held_out_auc"] = held_out_auc(head.score(head_columns(features, head, held.features)), held_measure,
                                           rule.by_class, thresholds)
        print(f"[{name}] picks {row['picks']}, {row['feature']} features {row.get('feature_selection', '')}: "
              f"cross-validated AUC {row['cv_auc']:.3f}, held-out AUC {row['held_out_auc']:.3f}; "
              f"by picks {row['auc_by_picks']}", flush=True)
        if not args.skip_align:
            # held-out samples with the sampler the aligner trains with, base and finetuned alike
            eval_sampler = align_config("nabla", 1, args.sampling_steps, 1, 1).sampler
            base_figure, base_second, base_feats, base_critic = held_out_figures(model, rule, features, args.eval_samples,
                                                                                 eval_sampler, cache=base_samples)
            row["base"] = base_figure
            if base_second is not None:
                row["base_second"] = base_second
            row["base_preference_score"] = float(head.score(head_columns(features, head, base_feats)).mean())
            # a scale for FD: the base model against itself on other seeds (sampling noise alone)
            _, _, _, other_critic = held_out_figures(model, rule, features, args.eval_samples, eval_sampler, 3_000_000,
                                                     cache=base_samples)
            row["fd_base_other_seeds"] = frechet_distance(other_critic, base_critic)
            head_net = feature_net(head.meta["feature"]) if features.kind == AUTO else features
            runs = {"nabla on preference": ("nabla", PreferenceReward(head, head_net, args.mode), args.beta, args.lr),
                    "refl on preference": ("refl", PreferenceReward(head, head_net, args.mode), 1.0, tuned.lr_for("refl", name)),
                    "refl on the rule's measure": ("refl", rule.direct_reward(), 1.0, tuned.lr_for("refl", name))}
            runs = {k: v for k, v in runs.items() if v[0] in args.methods or k == "refl on the rule's measure"}
            for label, (method, reward, beta, lr) in runs.items():
                m = load_model("embedded")
                t = time.perf_counter()
                config = align_config(method, args.rounds, args.sampling_steps, beta, lr, args.trajectories, args.resolution,
                                      args.train_seed)
                objective = RenderedReward(m, reward, config.orbit, config.render, config.image_noise)
                aligner = Aligner(m, objective, list(rule.prompts), config)
                curve = [[0, base_figure, 0.0]]  # [round, rule figure, FD to base]: a reward-drift curve
                for r in range(1, args.rounds + 1):
                    aligner.train_step()
                    if r % args.eval_every == 0 or r == args.rounds:
                        figure, second, feats, crit = held_out_figures(m, rule, features, args.eval_samples, eval_sampler)
                        curve.append([r, figure, frechet_distance(crit, base_critic)])
                row[label] = {"figure": figure, "fd_to_base": curve[-1][2], "curve": curve,
                              "preference_score": float(head.score(head_columns(features, head, feats)).mean()), "seconds": time.perf_counter() - t,
                              "lr": lr, "beta": beta}
                if second is not None:
                    row[label]["second"] = second
                print(f"[{name}] {label}: {rule.unit}: {base_figure:.3f} -> {figure:.3f} (curve {curve}), "
                      f"FD to base {row[label]['fd_to_base']:.3f}, preference score {row['base_preference_score']:.3f} -> "
                      f"{row[label]['preference_score']:.3f} ({row[label]['seconds']:.0f} s)"
                      + ("" if second is None else f"; {rule.second.unit}: {base_second:.3f} -> {second:.3f}"), flush=True)
        results["rules"][name] = row
        write_json(args.out / "results.json", results)
    return write_outputs(results, args, argv)


def write_outputs(results: dict, args, argv: list[str], rebuilt_by: list[str] | None = None) -> int:
    """results.md (both tables) and preference_study.png into --out, and with --docs the block."""
    table = results_table(results) + "\n\n" + movement_table(results)
    write_bytes(args.out / "results.md", (table + "\n").encode())
    plot_path = write_plot(results, args.out / "preference_study.png")
    print(table)
    if args.docs is not None:
        write_docs(args.docs, table, plot_path, argv, rebuilt_by)
    return 0


def fd_at_measure(curve: list, level: float, sign: float) -> float | None:
    """FD to base at which a run's curve ([round, figure, FD] rows from the base) first reaches
    ``level`` in the liked direction (``sign`` +1: up), linear between measured rounds; None if never."""
    for (_, m0, f0), (_, m1, f1) in zip(curve, curve[1:]):
        if sign * m1 >= sign * level:
            return f0 if sign * m0 >= sign * level else f0 + (level - m0) / (m1 - m0) * (f1 - f0)
    return None


def movement_table(results: dict) -> str:
    """FD at an equal movement: for each rule, the FD at which each run had moved the measure by half
    and by all of the direct ReFL run's final movement (the liked way), read off the curves."""
    labels = [k for k in LABELS if any(k in r for r in results["rules"].values())]
    head = ["rule", "movement of the direct run"] + [f"{k}: FD at {f}" for k in labels for f in ("1/2", "all")]
    lines = ["FD to base at an equal movement of the rule's measure (interpolated between measured rounds; "
             "\"-\": not reached in the rounds run):", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    direct = "refl on the rule's measure"
    for name, r in results["rules"].items():
        if direct not in r:
            continue
        move = r[direct]["figure"] - r["base"]
        cells = [name, f"{move:+.3f}"]
        for k in labels:
            for frac in (0.5, 1.0):
                fd = fd_at_measure(r[k]["curve"], r["base"] + frac * move, 1.0 if move >= 0 else -1.0) if k in r else None
                cells.append("-" if fd is None else f"{fd:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


LABELS = ("nabla on preference", "refl on preference", "refl on the rule's measure")


def results_table(results: dict) -> str:
    """The study's markdown table; rules with a second figure (no-tori: the torus fraction beside the
    mean p(torus)) get it in a "2nd" column after each figure ("-" for the other rules)."""
    labels = [k for k in LABELS if any(k in r for r in results["rules"].values())]
    counts = sorted({int(n) for r in results["rules"].values() for n in r["auc_by_picks"]})
    seconds = any("second_unit" in r for r in results["rules"].values())
    fig_cols = (lambda name: (name, "2nd")) if seconds else (lambda name: (name,))
    head = (["rule", "picks (liked/disliked/neutral)", "features"] + [f"AUC, {n} picks" for n in counts]
            + [*fig_cols("base"), "FD base vs other seeds"] + [c for k in labels for c in (*fig_cols(k), "FD")])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]

    def figure_cells(fig: float, second) -> list[str]:
        return [f"{fig:.3f}"] + (["-" if second is None else f"{second:.3f}"] if seconds else [])

    for name, r in results["rules"].items():
        p = r["picks"]
        unit = r["unit"] + (f"; 2nd: {r['second_unit']}" if "second_unit" in r else "")
        cells = [f"{name}: {unit}", f"{p['liked']}/{p['disliked']}/{p['neutral']}", r.get("feature") or results.get("settings", {}).get("feature", "-")]
        cells += ["too few" if r["auc_by_picks"].get(str(n)) is None else f"{r['auc_by_picks'][str(n)]:.3f}" for n in counts]
        if "base" in r:
            cells += figure_cells(r["base"], r.get("base_second")) + [f"{r['fd_base_other_seeds']:.2f}"]
            for k in labels:
                if k in r:
                    cells += figure_cells(r[k]["figure"], r[k].get("second")) + [f"{r[k]['fd_to_base']:.2f}"]
                else:
                    cells += ["-"] * (len(fig_cols(k)) + 1)
        else:
            cells += ["-"] * (len(head) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plot(results: dict, path: Path) -> Path:
    """picks -> held-out AUC (one line per rule), and per rule its measure against FD to base at every
    measured round (one line per method, from the base at FD 0; round numbers beside the points)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rules = list(results["rules"])
    fig = Figure(figsize=(3.4 * (1 + len(rules)), 3.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 1 + len(rules), squeeze=False)[0]
    for name, r in results["rules"].items():
        pts = [(int(n), a) for n, a in r["auc_by_picks"].items() if a is not None]
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    axes[0].set(xlabel="picks", ylabel="held-out AUC", title="picks -> AUC", ylim=(0.4, 1.02))
    axes[0].axhline(0.85, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    for ax, (name, r) in zip(axes[1:], results["rules"].items()):
        for k in LABELS:
            if k in r:
                c = r[k]["curve"]
                (line,) = ax.plot([p[2] for p in c], [p[1] for p in c], marker="o", label=k)
                for rnd, fig_value, fd in c[1:]:
                    ax.annotate(str(rnd), (fd, fig_value), fontsize=6, color=line.get_color(),
                                xytext=(3, 3), textcoords="offset points")
        if "fd_base_other_seeds" in r:  # the sampling-noise scale of FD
            ax.axvline(r["fd_base_other_seeds"], color="grey", lw=0.8, ls=":", label="FD base vs other seeds")
        ax.set(title=name, xlabel="FD to base (critic features)")
        ax.set_ylabel(r["unit"], fontsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


BEGIN, END = "<!-- preference-study:begin -->", "<!-- preference-study:end -->"


def write_docs(doc: Path, table: str, plot: Path, argv: list[str], rebuilt_by: list[str] | None = None) -> None:
    """Replace the block between the study markers of ``doc`` with the table, the command and the plot
    (copied next to the doc as images/preference_study.png)."""
    import shutil

    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} block to write the study into")
    image = doc.parent / "images" / "preference_study.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(image, lambda tmp: shutil.copyfile(plot, tmp))
    command = "OMP_NUM_THREADS=1 python scripts/preference_demo.py " + " ".join(argv)
    if rebuilt_by is not None:
        command += "\n# tables and plot rebuilt from its results.json by:\npython scripts/preference_demo.py " + " ".join(rebuilt_by)
    block = (f"{BEGIN}\nWritten by the study script, command:\n\n```bash\n{command}\n```\n\n{table}\n\n"
             f"![picks -> AUC, and each rule's measure against FD to base](images/preference_study.png)\n{END}")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    atomic_write(doc, lambda tmp: Path(tmp).write_text(text[:start] + block + text[end:], encoding="utf-8"))


if __name__ == "__main__":
    raise SystemExit(main())
