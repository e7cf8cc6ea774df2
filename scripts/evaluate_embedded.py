"""Measure the embedded model on every colour x shape prompt with the geometric judge.

    .venv/bin/python scripts/evaluate_embedded.py [--seeds 4] [--out docs/embedded_model_eval.md]
    .venv/bin/python scripts/evaluate_embedded.py --first-seed 5000 --guidance 2 3 4 5 6 8 12   # a sweep
    .venv/bin/python scripts/evaluate_embedded.py --open-shape --seeds 48 --out docs/embedded_open_shape.md

Generates ``--seeds`` assets for each of the 48 colour x shape prompts (20 DDIM steps, the model's
default guidance unless ``--guidance`` says otherwise), judges shape and colour of each exported
mesh with ``engine.models.embedded.shape_judge`` (pure geometry, no network) and counts meshes with floaters
(more than one connected component). One guidance value: prints (and writes) accuracies and both
confusion matrices. Several: prints one row per value. Tune on seeds other than the held-out
default (``--first-seed 5000``), then report on the default seeds. ``--open-shape``: the prompts
that leave the shape open ("an object", "a red object", ...) instead; which shapes the judge reads
and how often the colour is right.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.confusion import UNKNOWN, confusion_matrix, format_confusion_matrix  # noqa: E402
from engine.fileio import write_bytes  # noqa: E402
from engine.models.embedded.grammar import COLOURS, SHAPES, Prompt, all_colour_shape_prompts, parse_prompt  # noqa: E402
from engine.models.embedded.shape_judge import judge  # noqa: E402
from engine.models import load_model, model_spec  # noqa: E402
from engine.pipeline import generate  # noqa: E402
from engine.sampling.sampler import SamplerConfig  # noqa: E402


def measure(model, args, guidance: float | None) -> dict:
    """Generate and judge the 48 x ``args.seeds`` assets at ``guidance``; accuracies, matrices, floaters."""
    prompts = [p.text for p in all_colour_shape_prompts() for _ in range(args.seeds)]
    seeds = [args.first_seed + i for _ in all_colour_shape_prompts() for i in range(args.seeds)]
    sampler = SamplerConfig(steps=args.steps, guidance=guidance, scheduler=args.scheduler, eta=args.eta).for_model(model)
    t0 = time.perf_counter()
    result = generate(model, prompts, seeds, sampler)
    gen_s = time.perf_counter() - t0
    reports = [judge(a.mesh, a.prompt) for a in result.assets]
    floaters = sum(len(a.mesh.to_trimesh().split(only_watertight=False)) > 1 for a in result.assets if not a.mesh.is_empty)
    return {
        "guidance": sampler.guidance, "reports": reports, "seconds_per_asset": gen_s / len(reports), "floaters": floaters,
        "shapes": confusion_matrix(((r.prompt.shape, r.shape) for r in reports), labels=SHAPES),
        "colours": confusion_matrix(((r.prompt.colour, r.colour) for r in reports), labels=tuple(COLOURS)),
    }


def report(m: dict, args) -> str:
    shapes, colours, reports = m["shapes"], m["colours"], m["reports"]
    return "\n".join([
        "# Embedded model: prompt fidelity",
        "",
        f"Command: `.venv/bin/python scripts/evaluate_embedded.py --seeds {args.seeds}"
        f"{'' if args.scheduler == 'ddim' else ' --scheduler ' + args.scheduler}` "
        f"({len(reports)} assets: 48 colour x shape prompts x {args.seeds} seeds from {args.first_seed}; "
        f"{args.steps} {args.scheduler} steps, guidance {m['guidance']:g}).",
        "",
        f"- shape accuracy: **{shapes.accuracy * 100:.1f}%** ({shapes.correct}/{shapes.total})",
        f"- colour accuracy: **{colours.accuracy * 100:.1f}%** ({colours.correct}/{colours.total})",
        f"- both right: {sum(r.ok for r in reports)}/{len(reports)}",
        f"- meshes with floaters (more than one connected component): {m['floaters']}/{len(reports)}",
        f"- generation incl. mesh extraction: {m['seconds_per_asset']:.3f} s per asset (batch 8)",
        "",
        "Shape confusion (rows: prompted, columns: judged)",
        "",
        format_confusion_matrix(shapes),
        "",
        "Colour confusion (rows: prompted, columns: judged)",
        "",
        format_confusion_matrix(colours),
        "",
    ])


def open_shape_table(model, args) -> str:
    """Shapes the judge reads in ``args.seeds`` samples of each open-shape prompt, and colour accuracy."""
    prompts = [Prompt(None).text] + [Prompt(None, c).text for c in COLOURS]
    sampler = SamplerConfig(steps=args.steps, guidance=args.guidance[0], scheduler=args.scheduler, eta=args.eta).for_model(model)
    seeds = [args.first_seed + i for i in range(args.seeds)]
    lines = [f"Open-shape prompts: `.venv/bin/python scripts/evaluate_embedded.py --open-shape --seeds {args.seeds}"
             f"{'' if args.first_seed == 1000 else f' --first-seed {args.first_seed}'}` ({args.seeds} samples per prompt, "
             f"seeds from {args.first_seed}; {args.steps} {args.scheduler} steps, guidance {sampler.guidance:g}). "
             "Shapes as the geometric judge reads the meshes.", "",
             "| prompt | " + " | ".join(SHAPES) + " | unknown | colour right |", "|---" + "|---:" * (len(SHAPES) + 2) + "|"]
    for prompt in prompts:
        reports = [judge(a.mesh, a.prompt) for a in generate(model, [prompt] * len(seeds), seeds, sampler).assets]
        counts = [sum(r.shape == s for r in reports) for s in (*SHAPES, UNKNOWN)]
        colour = "-" if parse_prompt(prompt).colour is None else f"{sum(r.colour_ok for r in reports)}/{len(reports)}"
        lines.append(f"| {prompt} | " + " | ".join(map(str, counts)) + f" | {colour} |")
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def sweep_table(rows: list[dict], args) -> str:
    n = 48 * args.seeds
    values = " ".join(f"{r['guidance']:g}" for r in rows)
    lines = [f"Guidance sweep: `.venv/bin/python scripts/evaluate_embedded.py --seeds {args.seeds} --first-seed {args.first_seed} "
             f"--guidance {values}` ({n} assets per value)", "",
             "| guidance | shape | colour | both | floaters |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        both = sum(x.ok for x in r["reports"])
        lines.append(f"| {r['guidance']:g} | {r['shapes'].accuracy * 100:.1f}% | {r['colours'].accuracy * 100:.1f}% "
                     f"| {both / n * 100:.1f}% | {r['floaters']}/{n} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=1000, help="held out: training never sees sampler seeds")
    parser.add_argument("--guidance", type=float, nargs="+", default=[None],
                        help="one value or several (a sweep); default: the model's default_guidance")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--scheduler", choices=model_spec("embedded").schedulers, default="ddim")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the report as Markdown")
    parser.add_argument("--open-shape", action="store_true", help="measure the prompts that leave the shape open instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model("embedded")
    if args.open_shape:
        text = open_shape_table(model, args)
        if args.out:
            write_bytes(args.out, ("# Embedded model: prompts that leave the shape open\n\n" + text).encode())
        return
    rows = [measure(model, args, g) for g in args.guidance]
    text = report(rows[0], args) if len(rows) == 1 else sweep_table(rows, args)
    print(text)
    if args.out:
        write_bytes(args.out, text.encode())


if __name__ == "__main__":
    main()
