"""Measure the embedded model on every colour x shape prompt with the geometric judge.

    .venv/bin/python scripts/evaluate_embedded.py [--seeds 4] [--out docs/embedded_model_eval.md]

Generates ``--seeds`` assets for each of the 48 colour x shape prompts (20 DDIM steps, the CLI's
default guidance), judges shape and colour of each exported mesh with ``engine.geometry.evaluate``
(pure geometry, no network), prints and writes the accuracies and both confusion matrices.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.data.grammar import COLOURS, all_colour_shape_prompts  # noqa: E402
from engine.fileio import write_bytes  # noqa: E402
from engine.geometry.evaluate import confusion_matrix, evaluate, format_confusion_matrix  # noqa: E402
from engine.models import load_model  # noqa: E402
from engine.pipeline import generate  # noqa: E402
from engine.sampling.sampler import SamplerConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=1000, help="held out: training never sees sampler seeds")
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's default_guidance")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the report as Markdown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model("embedded")
    prompts = [p.text for p in all_colour_shape_prompts() for _ in range(args.seeds)]
    seeds = [args.first_seed + i for _ in all_colour_shape_prompts() for i in range(args.seeds)]
    sampler = SamplerConfig(steps=args.steps, guidance=args.guidance, eta=args.eta).for_model(model)
    t0 = time.perf_counter()
    result = generate(model, prompts, seeds, sampler)
    gen_s = time.perf_counter() - t0
    reports = [evaluate(a.mesh, a.prompt) for a in result.assets]
    shapes = confusion_matrix((r.prompt.shape, r.shape) for r in reports)
    colours = confusion_matrix(((r.prompt.colour, r.colour) for r in reports), labels=tuple(COLOURS))
    lines = [
        "# Embedded model: prompt fidelity",
        "",
        f"Command: `.venv/bin/python scripts/evaluate_embedded.py --seeds {args.seeds}` "
        f"({len(reports)} assets: 48 colour x shape prompts x {args.seeds} seeds from {args.first_seed}; "
        f"{args.steps} DDIM steps, guidance {sampler.guidance}).",
        "",
        f"- shape accuracy: **{shapes.accuracy * 100:.1f}%** ({shapes.correct}/{shapes.total})",
        f"- colour accuracy: **{colours.accuracy * 100:.1f}%** ({colours.correct}/{colours.total})",
        f"- both right: {sum(r.ok for r in reports)}/{len(reports)}",
        f"- generation incl. mesh extraction: {gen_s / len(reports):.3f} s per asset (batch 8)",
        "",
        "Shape confusion (rows: prompted, columns: judged)",
        "",
        format_confusion_matrix(shapes),
        "",
        "Colour confusion (rows: prompted, columns: judged)",
        "",
        format_confusion_matrix(colours),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_bytes(args.out, text.encode())


if __name__ == "__main__":
    main()
