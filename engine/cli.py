"""Command line: ``python -m engine <command>``.

    vocabulary                      print the embedded model's grammar and every word
    generate --prompt P --out DIR   sample assets, write one mesh per asset and manifest.json
    demo --out DIR                  the main job: generate a set of assets, finetune the model on a
                                    built-in reward with Nabla-R2D3, regenerate the same seeds, and
                                    write meshes, Cycles before/after contact sheet, reward curve,
                                    adapter and manifest.json
    rewards                         list the rewards and their options
    align --reward R --out DIR      finetune a LoRA adapter toward a reward (nabla, ddpo, refl, draft)
    preferences fit --picks P --out DIR   learn the reward "preference" from liked/disliked picks

Exit codes: 0 success, 1 runtime failure (message on stderr), 2 bad input (prompt outside the
vocabulary, bad option, a number out of range or not finite, a device this torch does not offer, a
model folder that is missing or does not hold the model's weights, a non-empty ``generate --out``
without ``--overwrite``), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Bad input is rejected
before any model is loaded or file written. An interrupted ``align`` first writes a checkpoint of
its last completed round; the same command resumes from it.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .models import check_scheduler, model_spec, prompt_rules
from .models.errors import ModelLoadError
from .names import METHODS, MODELS, RENDERERS, SCHEDULERS
from .naming import slug
from .params import (MAX_ADAPTER_WEIGHT, MAX_COUNT, MAX_GUIDANCE, MAX_SAMPLING_STEPS, check_device, check_float, check_int,
                     check_threads)

# No colour words: the base model picks colours, and the demo's palette reward visibly tilts them.
DEMO_PROMPTS = ("a cube", "a sphere", "a cylinder", "a cone", "a torus", "a pyramid")


DEMO_ALIGN_ROUNDS = 30
# The demo's alignment settings: small renders keep a round near 8 s on 2 CPU cores; 4 of 20
# transitions per trajectory (4.5 s) gained no held-out reward in score units, 8 did (docs/alignment.md).
DEMO_ALIGN_EXTRA = {"render": {"resolution": 24, "samples": 24}, "subsample": 0.4}


# Measured on 2 cores: 2 torch threads gain at most ~20% when the machine is idle, and run 10-75x
# slower as soon as another process competes for a core (thread spin-waits); 1 is the safe default.
THREADS_HELP = "torch CPU threads (default 1; 0 = torch's default, all cores)"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where its help already says it or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False or action.default == [] \
                or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=_positive_int, default=20, help="sampling steps (default 20)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="ddim", help="sampling scheduler")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta (1 = fully stochastic)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="assets sampled together (memory against speed)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=MODELS, default="embedded", help="which model (default: the embedded one)")
    p.add_argument("--model-path", type=Path, help="folder of the model's weights (default: its bundled weights)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Nabla-R2D3 engine", formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    voc = sub.add_parser("vocabulary", help="print the prompts a model takes (the embedded model's grammar)",
                         formatter_class=_HelpFormatter)
    voc.add_argument("--model", choices=MODELS, default="embedded", help="which model's prompts")

    gen = sub.add_parser("generate", help="generate assets from a prompt", formatter_class=_HelpFormatter)
    gen.add_argument("--prompt", required=True, help="what to generate (see `vocabulary` for the embedded model's words)")
    gen.add_argument("--seed", type=int, default=0, help="first seed; asset i uses seed + i")
    gen.add_argument("--count", type=_positive_int, default=4, help="how many assets (seeds seed .. seed + count - 1)")
    gen.add_argument("--out", required=True, type=Path,
                     help="folder for the meshes and manifest.json; must be empty or new unless --overwrite")
    gen.add_argument("--overwrite", action="store_true",
                     help="replace the previous generate run in --out: the files its manifest.json lists are removed "
                          "(a folder holding anything else is still refused)")
    gen.add_argument("--format", choices=("glb", "ply", "obj", "3dgs"), action="append",
                     help="repeatable (default glb); 3dgs (splat models) also writes <name>.3dgs.ply, the Gaussians "
                          "as a 3D Gaussian Splatting PLY, beside the meshes (glb unless another mesh format is given)")
    gen.add_argument("--adapter", type=Path, help="a LoRA adapter folder written by `align`")
    gen.add_argument("--adapter-weight", type=float, default=1.0, help="blend weight of the adapter (default 1)")
    _add_model_options(gen)
    _add_sampling_options(gen)

    demo = sub.add_parser("demo", help="generate, align, regenerate; meshes, before/after sheet, report",
                          formatter_class=_HelpFormatter)
    demo.add_argument("--out", required=True, type=Path, help="output folder")
    demo.add_argument("--prompt", action="append", help=f"repeatable (default: {len(DEMO_PROMPTS)} prompts)")
    demo.add_argument("--seed", type=int, default=0, help="first seed of each prompt's assets")
    demo.add_argument("--count", type=_positive_int, default=1, help="assets per prompt")
    demo.add_argument("--resolution", type=_positive_int, default=192, help="Cycles image size in pixels")
    demo.add_argument("--samples", type=_positive_int, default=16, help="Cycles samples per pixel")
    demo.add_argument("--align-reward", default="palette", help="reward of the alignment stage (see `rewards`)")
    demo.add_argument("--align-option", action="append", default=None, metavar="REWARD.OPTION=VALUE",
                      help="reward option, repeatable (default: palette.palette=#ff8800, an orange palette)")
    demo.add_argument("--align-steps", type=int, default=DEMO_ALIGN_ROUNDS,
                      help=f"alignment rounds (default {DEMO_ALIGN_ROUNDS}; 0 skips alignment)")
    _add_sampling_options(demo)

    sub.add_parser("rewards", help="list the rewards and their options")

    al = sub.add_parser("align", help="finetune the model toward a reward with LoRA", formatter_class=_HelpFormatter)
    al.add_argument("--reward", required=True, help="a reward name or a weighted sum, e.g. '0.5*dnc + palette'")
    al.add_argument("--option", action="append", default=[], metavar="REWARD.OPTION=VALUE",
                    help="reward option, repeatable (e.g. palette.palette=#ff8800); see `rewards`")
    al.add_argument("--method", choices=METHODS, default="nabla", help="alignment method")
    al.add_argument("--renderer", choices=RENDERERS, default="volume",
                    help="what renders samples for the reward: the differentiable volume renderer, or Blender "
                         "Cycles on extracted meshes (needs the bpy module; ddpo only: Cycles gives no gradients)")
    al.add_argument("--cycles-samples", type=_positive_int, default=16, help="Cycles samples per pixel (--renderer cycles)")
    al.add_argument("--steps", type=_positive_int, default=30,
                    help="training rounds (default 30); a finished run in --out with fewer continues up to this many")
    al.add_argument("--checkpoint-every", type=_positive_int, default=10,
                    help="rounds between checkpoints (default 10; an interrupt also writes one); may change on resume")
    al.add_argument("--out", required=True, type=Path, help="output folder (resumed if it holds a checkpoint of this run)")
    al.add_argument("--prompt", action="append", help="training prompt, repeatable (default: 4 prompts)")
    al.add_argument("--eval-seeds", type=_positive_int, default=2, help="held-out seeds per prompt for before/after")
    al.add_argument("--beta", type=float, help="reward scale (default: per reward)")
    al.add_argument("--trust-region", type=float, help="lambda, the pull toward the previous policy (default: the method's)")
    al.add_argument("--lr", type=float, help="learning rate (default: the model's tuned one for the method and reward)")
    al.add_argument("--rank", type=_positive_int, help="LoRA rank (default: the aligner's)")
    al.add_argument("--trajectories", type=_positive_int, help="trajectories sampled per round (default: the aligner's)")
    al.add_argument("--views", type=_positive_int, default=4, help="rendered views per asset for the reward")
    al.add_argument("--resolution", type=_positive_int, default=32, help="reward render size in pixels")
    al.add_argument("--sampling-steps", type=_positive_int, default=20, help="sampler steps of each trajectory")
    al.add_argument("--seed", type=int, default=0, help="seed of the training rounds' random choices")
    al.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    al.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    al.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    _add_model_options(al)
    from .preferences_cli import add_parser as add_preferences_parser

    add_preferences_parser(sub)
    return parser


def _check_sampling(args) -> None:
    """The sampling options within the worker's bounds (engine.params), so NaN or an absurd value is
    one line and exit 2 here rather than an empty mesh or a traceback minutes later."""
    check_int("--steps", args.steps, 1, MAX_SAMPLING_STEPS)
    check_float("--guidance", args.guidance, 0.0, MAX_GUIDANCE, nullable=True)
    check_float("--eta", args.eta, 0.0, 1.0)
    check_device(args.device)


def _setup(args):
    import torch

    from .models import load_model
    from .sampling.sampler import SamplerConfig

    check_threads("--threads", args.threads)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(getattr(args, "model", "embedded"), getattr(args, "model_path", None), device=args.device)
    sampler = SamplerConfig(steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, eta=args.eta).for_model(model)
    return model, sampler, time.perf_counter() - t0


class _Progress:
    """One redrawn line on a terminal; a line per 10% when stderr is a log file or pipe."""

    def __init__(self) -> None:
        self.last = -1.0

    def __call__(self, fraction: float, message: str) -> None:
        if fraction <= 0.0:  # start-of-job notices ("resuming from round N of M") keep their own line
            start = "\r" if sys.stderr.isatty() else ""
            print(f"{start}[  0.0%] {message}", file=sys.stderr, flush=True)
            self.last = max(self.last, 0.0)
        elif sys.stderr.isatty():
            print(f"\r[{fraction * 100:5.1f}%] {message:<60}", end="", file=sys.stderr, flush=True)
        elif fraction >= self.last + 0.1 or (fraction >= 1.0 > self.last):
            self.last = fraction
            print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def _mesh_formats(formats: list[str] | None) -> list[str]:
    """The mesh formats of ``--format``: those given, else glb (``--format 3dgs`` alone adds a GLB)."""
    return [f for f in formats or [] if f != "3dgs"] or ["glb"]


def _write_assets(assets, out: Path, formats: list[str]) -> list[dict]:
    """Per asset: the mesh in each mesh format, and with "3dgs" its Gaussians as ``<stem>.3dgs.ply``
    (not ``<stem>.ply``, the mesh PLY's name; viewers and add-ons look for the ``.ply`` suffix)."""
    from .geometry.mesh import asset_name, save_mesh
    from .geometry.splat_ply import SUFFIX, write_3dgs_ply

    mesh_formats = _mesh_formats(formats)
    records = []
    for asset in assets:
        files = {}
        stem = f"{slug(asset.prompt)}_seed{asset.seed}"
        for fmt in mesh_formats:
            files[fmt] = save_mesh(asset.mesh, out / f"{stem}.{fmt}", name=asset_name(asset.prompt, asset.seed)).name
        record = {"prompt": asset.prompt, "seed": asset.seed, "file": files[mesh_formats[0]], "files": files,
                  "vertices": int(len(asset.mesh.vertices)), "faces": int(len(asset.mesh.faces))}
        if "3dgs" in formats:
            if asset.splats is None:
                raise RuntimeError("--format 3dgs: the generate job kept no Gaussians for this asset")
            files["3dgs"] = write_3dgs_ply(out / f"{stem}{SUFFIX}", asset.splats).name
            record["gaussians"] = int(asset.splats.means.shape[1])
        records.append(record)
    return records


def _previous_run_files(out: Path, overwrite: bool) -> list[Path]:
    """The files of the previous ``generate`` run in ``out`` that ``--overwrite`` removes (its
    manifest.json and the files it lists); [] for a new or empty folder. Otherwise a ValueError
    (exit 2, before anything is loaded or written): a non-empty folder without ``--overwrite``, or
    one holding files no manifest lists (never deleted: ``--out`` may point at the wrong folder)."""
    import json

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    present = sorted(p for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return []
    if not overwrite:
        raise ValueError(f"--out {out} is not empty ({len(present)} entries, e.g. {present[0].name}); choose a new folder, "
                         "or pass --overwrite to replace the previous generate run there")
    listed = {"manifest.json"}
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        for asset in manifest.get("assets", []):
            listed.update(n for n in [asset.get("file"), *dict(asset.get("files") or {}).values()] if isinstance(n, str))
    except (OSError, ValueError, AttributeError, TypeError):
        listed = set()  # no readable manifest: nothing is known to be generate's
    others = [p for p in present if p.name not in listed or not p.is_file()]  # only out's own entries are ever removed
    if others:
        names = ", ".join(p.name for p in others[:5]) + (", ..." if len(others) > 5 else "")
        raise ValueError(f"--overwrite replaces only a previous generate run, and {out} holds {len(others)} entries its "
                         f"manifest.json does not list ({names}); remove them or choose a new folder")
    return present


def cmd_generate(args) -> int:
    from dataclasses import asdict

    from .fileio import write_json
    from .pipeline import generate

    prompt_rules(args.model).validate([args.prompt])  # before anything is loaded or written
    check_scheduler(args.model, args.scheduler)
    formats = args.format or ["glb"]
    representation = model_spec(args.model).representation
    if "3dgs" in formats and representation != "splats":
        raise ValueError(f"--format 3dgs writes Gaussian splats; model {args.model!r} makes {representation}s "
                         "(use a splat model such as diffsplat)")
    prompt = args.prompt
    check_int("--count", args.count, 1, MAX_COUNT)
    check_float("--adapter-weight", args.adapter_weight, 0.0, MAX_ADAPTER_WEIGHT)
    _check_sampling(args)
    previous = _previous_run_files(args.out, args.overwrite)
    model, sampler, load_s = _setup(args)
    if args.adapter is not None:
        from .align.lora import load_adapter

        load_adapter(model, args.adapter, args.adapter_weight)
    seeds = [args.seed + i for i in range(args.count)]
    result = generate(model, [args.prompt] * args.count, seeds, sampler, args.batch_size, progress=_Progress(),
                      keep_splats="3dgs" in formats)
    print(file=sys.stderr)
    if previous:  # only now, with the new assets in hand: a failed run leaves the previous one whole
        for path in previous:
            path.unlink(missing_ok=True)
        print(f"--overwrite: removed the previous run's {len(previous)} files from {args.out}", file=sys.stderr)
    t0 = time.perf_counter()
    records = _write_assets(result.assets, args.out, formats)
    export_s = time.perf_counter() - t0
    t = result.timings
    manifest = {
        "prompt": args.prompt,
        "normalized_prompt": prompt,
        "model": model.name,
        "seed": args.seed,
        "count": args.count,
        "sampler": asdict(sampler),
        "adapter": None if args.adapter is None else {"path": str(args.adapter), "weight": args.adapter_weight},
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
    from .rewards.registry import build_reward_expression, parse_option_assignments

    prompt_list = args.prompt or list(DEMO_PROMPTS)
    prompt_rules("embedded").validate(prompt_list)  # the demo runs the embedded model
    align_options = parse_option_assignments(args.align_option if args.align_option is not None else ["palette.palette=#ff8800"])
    if args.align_steps < 0:
        raise ValueError("--align-steps must be >= 0")
    if args.align_steps:
        build_reward_expression(args.align_reward, align_options)  # bad reward: exit 2 before any work
    _check_sampling(args)
    model, sampler, load_s = _setup(args)
    prompts = [p for p in prompt_list for _ in range(args.count)]
    seeds = [args.seed + i for _ in prompt_list for i in range(args.count)]
    cams = orbit_cameras(OrbitConfig(views=1, azimuth_offset=35.0, elevation=25.0))
    cycles = CyclesConfig(resolution=args.resolution, samples=args.samples)
    timings = {"load_s": round(load_s, 3)}

    def generate_and_render(folder: str, stage: str):
        result = generate(model, prompts, seeds, sampler, args.batch_size, progress=_Progress())
        print(file=sys.stderr)
        records = _write_assets(result.assets, args.out / folder, ["glb"])
        for r in records:
            r["file"] = f"{folder}/{r['file']}"
        t0 = time.perf_counter()
        renders = render_meshes_cycles([a.mesh for a in result.assets], cams, cycles)
        timings[f"{stage}_sample_s"] = round(result.timings.sample_s, 3)
        timings[f"{stage}_mesh_s"] = round(result.timings.mesh_s, 3)
        timings[f"{stage}_cycles_s"] = round(time.perf_counter() - t0, 3)
        return records, [r[0] for r in renders.rgb]

    print("generating with the base model", file=sys.stderr)
    base_records, base_images = generate_and_render("base", "base")
    labels = [f"{p} #{s}" for p, s in zip(prompts, seeds)]
    manifest = {"model": model.name, "sampler": asdict(sampler), "assets": base_records, "contact_sheet": "contact_sheet.png"}
    images, sheet_labels = base_images, labels
    if args.align_steps:
        from .align.job import run_alignment

        print(f"aligning with Nabla-R2D3 on '{args.align_reward}' for {args.align_steps} rounds", file=sys.stderr)
        t0 = time.perf_counter()
        report = run_alignment(
            {"out_dir": str(args.out / "align"), "reward": args.align_reward, "reward_options": align_options,
             "method": "nabla", "steps": args.align_steps, "prompts": sorted(set(prompts)), "eval_seeds": 2,
             "seed": args.seed, "resume": False, "extra": DEMO_ALIGN_EXTRA},
            progress=_Progress(), model=model)
        print(file=sys.stderr)
        timings["align_s"] = round(time.perf_counter() - t0, 3)
        print("regenerating the same seeds with the finetuned model", file=sys.stderr)
        aligned_records, aligned_images = generate_and_render("aligned", "aligned")
        manifest["aligned_assets"] = aligned_records
        manifest["alignment"] = {
            "reward": report["reward"], "method": report["method"], "rounds": report["rounds"],
            "reward_before": report["reward_before"], "reward_after": report["reward_after"],
            "seconds_per_round": report["seconds_per_round"], "adapter": "align/adapter",
            "reward_curve": "align/reward_curve.png", "report": "align/report.json",
        }
        images = base_images + aligned_images
        sheet_labels = [f"base: {l}" for l in labels] + [f"aligned: {l}" for l in labels]
    sheet = contact_sheet(images, sheet_labels, columns=len(base_images) if args.align_steps else min(4, len(labels)))
    save_png(sheet, args.out / "contact_sheet.png")
    manifest["timings"] = timings
    write_json(args.out / "manifest.json", manifest)
    done = f"wrote {len(base_records)} base meshes"
    if args.align_steps:
        a = manifest["alignment"]
        done += (f", {len(base_records)} aligned meshes (held-out reward {a['reward_before']['mean']:.3f} -> "
                 f"{a['reward_after']['mean']:.3f})")
    print(f"{done} and contact_sheet.png to {args.out}")
    return 0


def cmd_align(args) -> int:
    import torch

    from .align.job import AlignJob, run_alignment
    from .align.trainer import init_distributed, shutdown_distributed
    from .rewards.registry import build_reward_expression, parse_option_assignments

    prompts = args.prompt or None
    prompt_rules(args.model).validate(prompts or [])
    options = parse_option_assignments(args.option)
    build_reward_expression(args.reward, options)  # bad reward or option: exit 2 before any work
    check_threads("--threads", args.threads)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    params = {"out_dir": str(args.out), "reward": args.reward, "reward_options": options, "method": args.method,
              "steps": args.steps, "eval_seeds": args.eval_seeds, "seed": args.seed, "device": args.device,
              "resume": not args.no_resume, "beta": args.beta, "trust_region": args.trust_region, "lr": args.lr,
              "lora_rank": args.rank, "trajectories": args.trajectories,
              "renderer": args.renderer, "cycles_samples": args.cycles_samples,
              "model": args.model, "model_path": None if args.model_path is None else str(args.model_path.expanduser().resolve()),
              "extra": {"orbit": {"views": args.views, "random_azimuth": True, "elevation_jitter": 5.0},
                        "render": {"resolution": args.resolution, "samples": args.resolution},
                        "sampler": {"steps": args.sampling_steps}, "checkpoint_every": args.checkpoint_every}}
    if prompts:
        params["prompts"] = prompts
    AlignJob.from_params(params).config()  # a bad number or device: exit 2 before joining a process group
    rank, _ = init_distributed(args.device)  # several processes under torchrun (DDP); a no-op otherwise
    # SIGTERM (a scheduler's or `kill`'s stop) ends the run like Ctrl-C: the trainer writes a checkpoint
    # of the last completed round before the process exits.
    import threading

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        report = run_alignment(params, progress=_Progress() if rank == 0 else None)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous_handler)
        shutdown_distributed()
    if rank != 0:
        return 0
    print(file=sys.stderr)
    before, after = report["reward_before"], report["reward_after"]
    print(f"{report['method']} on {report['reward']}: held-out reward {before['mean']:.4f} ± {before['std']:.4f} -> "
          f"{after['mean']:.4f} ± {after['std']:.4f} ({report['seconds_per_round']:.1f} s per round); wrote {args.out}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program runs: everything that saves work on Ctrl-C does so here too."""


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "vocabulary":
            print(prompt_rules(args.model).vocabulary() or f"{args.model} takes open text: any description")
            return 0
        if args.command == "rewards":
            from .rewards.registry import format_reward_list

            print(format_reward_list())
            return 0
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "align":
            return cmd_align(args)
        if args.command == "preferences":
            from .preferences_cli import run as run_preferences

            return run_preferences(args)
        return cmd_demo(args)
    except (ValueError, ModelLoadError) as exc:  # a missing or wrong model folder is bad input too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        notes = "".join(f"; {n}" for n in getattr(exc, "__notes__", ()))  # e.g. where align's checkpoint is
        print(f"\n{'terminated' if isinstance(exc, Terminated) else 'interrupted'}{notes}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except (RuntimeError, OSError) as exc:  # missing weights, Cycles unavailable, unwritable --out, ...
        print(f"error: {exc}", file=sys.stderr)
        return 1
