"""Command line: ``python -m engine <command>``.

    vocabulary                      print the embedded model's grammar and every word
    generate --prompt P --out DIR   sample assets, write one mesh per asset and manifest.json
    demo --out DIR                  generate a set of assets, render them with Cycles, write the
                                    meshes, a contact sheet PNG and manifest.json

Exit codes: 0 success, 1 runtime failure (message on stderr), 2 bad input (prompt outside the
vocabulary, bad option), 130 interrupted. Bad input is rejected before any file is written.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from .data.grammar import PromptError, parse_prompt, vocabulary_text

DEMO_PROMPTS = (
    "a red cube",
    "an orange sphere",
    "a yellow cylinder",
    "a green cone",
    "a blue torus",
    "a purple pyramid",
    "a tall white cylinder",
    "a small black cube",
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=_positive_int, default=20, help="sampling steps (default 20)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--scheduler", choices=("ddim", "ddpm", "dpmsolver-sde"), default="ddim")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta (1 = fully stochastic)")
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Nabla-R2D3 engine")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("vocabulary", help="print the embedded model's grammar")

    gen = sub.add_parser("generate", help="generate assets from a prompt")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--seed", type=int, default=0, help="first seed; asset i uses seed + i")
    gen.add_argument("--count", type=_positive_int, default=4)
    gen.add_argument("--out", required=True, type=Path)
    gen.add_argument("--format", choices=("glb", "ply", "obj"), action="append", help="repeatable (default glb)")
    _add_sampling_options(gen)

    demo = sub.add_parser("demo", help="generate, render with Cycles, write meshes and a contact sheet")
    demo.add_argument("--out", required=True, type=Path)
    demo.add_argument("--prompt", action="append", help=f"repeatable (default: {len(DEMO_PROMPTS)} prompts)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--count", type=_positive_int, default=1, help="assets per prompt")
    demo.add_argument("--resolution", type=_positive_int, default=192, help="Cycles image size in pixels")
    demo.add_argument("--samples", type=_positive_int, default=16, help="Cycles samples per pixel")
    _add_sampling_options(demo)
    return parser


def _slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")


def _setup(args):
    import torch

    from .models import load_model
    from .sampling.sampler import SamplerConfig

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model("embedded", device=args.device)
    sampler = SamplerConfig(steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, eta=args.eta).for_model(model)
    return model, sampler, time.perf_counter() - t0


class _Progress:
    """One redrawn line on a terminal; a line per 10% when stderr is a log file or pipe."""

    def __init__(self) -> None:
        self.last = -1.0

    def __call__(self, fraction: float, message: str) -> None:
        if sys.stderr.isatty():
            print(f"\r[{fraction * 100:5.1f}%] {message:<60}", end="", file=sys.stderr, flush=True)
        elif fraction >= self.last + 0.1 or (fraction >= 1.0 > self.last):
            self.last = fraction
            print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def _write_assets(assets, out: Path, formats: list[str]) -> list[dict]:
    from .geometry.mesh import save_mesh

    records = []
    for asset in assets:
        files = {}
        for fmt in formats:
            path = save_mesh(asset.mesh, out / f"{_slug(asset.prompt)}_seed{asset.seed}.{fmt}")
            files[fmt] = path.name
        records.append(
            {
                "prompt": asset.prompt,
                "seed": asset.seed,
                "file": files[formats[0]],
                "files": files,
                "vertices": int(len(asset.mesh.vertices)),
                "faces": int(len(asset.mesh.faces)),
            }
        )
    return records


def cmd_generate(args) -> int:
    from dataclasses import asdict

    from .fileio import write_json
    from .pipeline import generate

    prompt = parse_prompt(args.prompt).text  # validate before anything is loaded or written
    model, sampler, load_s = _setup(args)
    seeds = [args.seed + i for i in range(args.count)]
    result = generate(model, [args.prompt] * args.count, seeds, sampler, args.batch_size, progress=_Progress())
    print(file=sys.stderr)
    t0 = time.perf_counter()
    records = _write_assets(result.assets, args.out, args.format or ["glb"])
    export_s = time.perf_counter() - t0
    t = result.timings
    manifest = {
        "prompt": args.prompt,
        "normalized_prompt": prompt,
        "model": model.name,
        "seed": args.seed,
        "count": args.count,
        "sampler": asdict(sampler),
        "assets": records,
        "timings": {
            "load_s": round(load_s, 3),
            "sample_s": round(t.sample_s, 3),
            "mesh_s": round(t.mesh_s, 3),
            "export_s": round(export_s, 3),
            "per_asset_s": round((t.total_s + export_s) / args.count, 3),
        },
    }
    write_json(args.out / "manifest.json", manifest)
    print(f"wrote {len(records)} assets to {args.out} ({manifest['timings']['per_asset_s']} s per asset)")
    return 0


def cmd_demo(args) -> int:
    from dataclasses import asdict

    from .fileio import write_json
    from .imaging import contact_sheet, save_png
    from .pipeline import generate
    from .render.cameras import OrbitConfig, orbit_cameras
    from .render.cycles import CyclesConfig, render_meshes_cycles

    prompt_list = args.prompt or list(DEMO_PROMPTS)
    for p in prompt_list:
        parse_prompt(p)
    model, sampler, load_s = _setup(args)
    prompts = [p for p in prompt_list for _ in range(args.count)]
    seeds = [args.seed + i for _ in prompt_list for i in range(args.count)]
    result = generate(model, prompts, seeds, sampler, args.batch_size, progress=_Progress())
    print(file=sys.stderr)
    records = _write_assets(result.assets, args.out, ["glb"])
    t0 = time.perf_counter()
    cams = orbit_cameras(OrbitConfig(views=1, azimuth_offset=35.0, elevation=25.0))
    renders = render_meshes_cycles([a.mesh for a in result.assets], cams, CyclesConfig(resolution=args.resolution, samples=args.samples))
    render_s = time.perf_counter() - t0
    labels = [f"{a.prompt} #{a.seed}" for a in result.assets]
    sheet = contact_sheet([r[0] for r in renders.rgb], labels, columns=min(4, len(labels)))
    save_png(sheet, args.out / "contact_sheet.png")
    write_json(
        args.out / "manifest.json",
        {
            "model": model.name,
            "sampler": asdict(sampler),
            "assets": records,
            "contact_sheet": "contact_sheet.png",
            "timings": {
                "load_s": round(load_s, 3),
                "sample_s": round(result.timings.sample_s, 3),
                "mesh_s": round(result.timings.mesh_s, 3),
                "cycles_s": round(render_s, 3),
            },
        },
    )
    print(f"wrote {len(records)} meshes and contact_sheet.png to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "vocabulary":
            print(vocabulary_text())
            return 0
        if args.command == "generate":
            return cmd_generate(args)
        return cmd_demo(args)
    except PromptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:  # missing weights, Cycles unavailable, unwritable --out, ...
        print(f"error: {exc}", file=sys.stderr)
        return 1
