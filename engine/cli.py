"""Command line: ``python -m engine <command>``.

    vocabulary                      print the embedded model's grammar and every word
    generate --prompt P --out DIR   sample assets, write one mesh per asset and manifest.json
                                    (--preview: also preview.png, a contact sheet of them)
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

from .models import model_spec, prompt_rules
from .models.errors import ModelLoadError
from .names import METHODS, MODELS, RENDERERS, SCHEDULERS
from .generate.records import FORMATS, MANIFEST_NAME
from .params import (MAX_GUIDANCE, MAX_SAMPLING_STEPS, check_device, check_float, check_int,
                     check_threads)

# The embedded model's examples, one per shape with no colour words: the base model picks colours,
# and the demo's palette reward visibly tilts them.
DEMO_PROMPTS = model_spec("embedded").example_prompts


# 45 rounds of 4 trajectories: about 6 minutes on one thread. At 30 the held-out gain was -0.335 ->
# -0.263 to -0.281 depending on float summation order (two code versions, same seeds); 45 gave -0.188
# (README, "Main job").
DEMO_ALIGN_ROUNDS = 45
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
    gen.add_argument("--prompt", help="what to generate (see `vocabulary` for the embedded model's words); "
                     "required unless --variations-of")
    gen.add_argument("--seed", type=int, default=0, help="first seed; asset i uses seed + i")
    gen.add_argument("--count", type=_positive_int, default=4, help="how many assets (seeds seed .. seed + count - 1)")
    gen.add_argument("--out", required=True, type=Path,
                     help="folder for the meshes and manifest.json; must be empty or new unless --overwrite")
    gen.add_argument("--overwrite", action="store_true",
                     help="replace the previous generate run in --out: the files its manifest.json lists are removed "
                          "(a folder holding anything else is still refused)")
    gen.add_argument("--format", choices=FORMATS, action="append",
                     help="repeatable (default glb); npz: the arrays the Blender add-on imports; 3dgs (splat models) also writes <name>.3dgs.ply, the Gaussians "
                          "as a 3D Gaussian Splatting PLY, beside the meshes (glb unless another mesh format is given)")
    gen.add_argument("--adapter", type=Path, help="a LoRA adapter folder written by `align`")
    gen.add_argument("--adapter-weight", type=float, default=1.0, help="blend weight of the adapter (default 1)")
    gen.add_argument("--preview", action="store_true",
                     help="also write preview.png, a contact sheet of the assets (listed in manifest.json)")
    gen.add_argument("--preview-renderer", choices=("auto", "cycles", "volume"), default="auto",
                     help="what renders the preview: auto is Cycles where the bpy module imports, else the "
                          "model's differentiable renderer")
    gen.add_argument("--preview-resolution", type=_positive_int, default=128, help="preview tile size in pixels")
    gen.add_argument("--gallery", action="store_true",
                     help="also write each asset's thumbnail and latent and gallery.json (docs/gallery.md)")
    gen.add_argument("--variations-of", metavar="MANIFEST_ENTRY",
                     help="make --count variations of one asset, MANIFEST#NAME or MANIFEST#INDEX (e.g. "
                          "out/cubes/manifest.json#0): its prompt, seed, model, adapter and sampler come from that "
                          "manifest (docs/gallery.md)")
    gen.add_argument("--strength", type=float, help="with --variations-of: how far variations move, 0..1")
    gen.add_argument("--variation-start", type=_positive_int, default=1,
                     help="with --variations-of: the first variation's index (other indices, other variations)")
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


def cmd_generate(args) -> int:
    """``generate``: the shared generate job (engine/generate/job.py) with the CLI's options."""
    from .generate.job import GenerateJob, cli_names, run_generate

    check_threads("--threads", args.threads)
    params = {"prompt": args.prompt, "out_dir": str(args.out), "count": args.count, "seed": args.seed,
              "steps": args.steps, "guidance": args.guidance, "scheduler": args.scheduler, "eta": args.eta,
              "adapter_weight": args.adapter_weight, "batch_size": args.batch_size, "device": args.device,
              "model": args.model, "formats": args.format or ["glb"], "overwrite": args.overwrite,
              "preview": args.preview, "preview_renderer": args.preview_renderer,
              "preview_resolution": args.preview_resolution}
    if args.adapter is not None:
        params["adapter"] = str(args.adapter)
    if args.model_path is not None:
        params["model_path"] = str(args.model_path)
    if args.gallery:
        params["gallery"] = True
    if args.variations_of is not None:  # prompt, seed, model, adapter and sampler from the varied asset's manifest
        from .variation_assets import variation_params

        if args.prompt is not None or args.adapter is not None:
            raise ValueError("--variations-of takes the prompt and adapter from the asset's manifest: drop --prompt/--adapter")
        params.update(variation_params(args.variations_of, args.strength, args.variation_start))
    elif args.prompt is None:
        raise ValueError("generate needs --prompt (or --variations-of MANIFEST#NAME)")
    elif args.strength is not None:
        raise ValueError("--strength needs --variations-of")
    job = GenerateJob.from_params(params, names=cli_names)  # bad input: exit 2 before anything is loaded or written
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    replaced = len(_previous_files(job))
    result = run_generate(job, progress=_Progress())
    print(file=sys.stderr)
    if replaced:
        print(f"--overwrite: removed the previous run's {replaced} files from {args.out}", file=sys.stderr)
    sheet = f" and {result.preview.file}" if result.preview is not None else ""
    print(f"wrote {len(result.assets)} assets{sheet} to {args.out} ({result.timings['per_asset_s']} s per asset)")
    return 0


def _previous_files(job) -> list:
    from .generate.job import previous_run_files

    return previous_run_files(job.out_dir, job.overwrite, "--out", "--overwrite")


def cmd_demo(args) -> int:
    """``demo``: the shared generate job (engine/generate/job.py) into ``base/``, alignment into
    ``align/``, the generate job again with the finetuned model into ``aligned/``; the Cycles tiles of
    both in one ``contact_sheet.png`` and a ``manifest.json`` that points at the three. A rerun into
    the same ``--out`` replaces the previous demo's generate runs; one with ``--align-steps 0`` removes
    its ``aligned/`` (both only when those folders hold nothing but their manifests' files)."""
    from .fileio import write_json
    from .generate.job import GenerateJob, cli_names, previous_run_files, remove_previous_run, run_generate
    from .imaging import contact_sheet, save_png
    from .rewards.registry import build_reward_expression, parse_option_assignments

    prompt_list = args.prompt or list(DEMO_PROMPTS)
    align_options = parse_option_assignments(args.align_option if args.align_option is not None else ["palette.palette=#ff8800"])
    if args.align_steps < 0:
        raise ValueError("--align-steps must be >= 0")
    if args.align_steps:
        build_reward_expression(args.align_reward, align_options)  # bad reward: exit 2 before any work
    _check_sampling(args)
    rerun = "a demo rerun"  # the demo's implicit --overwrite, as its refusals name it

    def job(folder: str, adapter: Path | None = None) -> GenerateJob:
        # overwrite: a rerun of the demo into the same --out replaces its previous generate runs (and
        # still refuses a folder holding files they did not write)
        params = {"prompts": prompt_list, "count": args.count, "seed": args.seed, "out_dir": str(args.out / folder),
                  "steps": args.steps, "guidance": args.guidance, "scheduler": args.scheduler, "eta": args.eta,
                  "batch_size": args.batch_size, "device": args.device, "model": "embedded", "overwrite": True,
                  "preview": True, "preview_renderer": "cycles", "preview_resolution": args.resolution,
                  "preview_samples": args.samples}
        if adapter is not None:
            params["adapter"] = str(adapter)
        return GenerateJob.from_params(params, names=lambda field: rerun if field == "overwrite" else cli_names(field))

    base_job = job("base")  # every prompt and number checked before the model loads
    if args.align_steps:
        job("aligned")  # its folder too: refused now, not after the alignment
    else:  # a previous demo's aligned/ goes (so no stale results stay beside this run's): refused now, not later
        previous_run_files(args.out / "aligned", True, "--out", rerun)
    model, _sampler, load_s = _setup(args)
    timings = {"load_s": round(load_s, 3)}
    print("generating with the base model", file=sys.stderr)
    base_tiles: list = []
    base = run_generate(base_job, model=model, progress=_Progress(), tiles=base_tiles)
    print(file=sys.stderr)
    timings["base_s"] = base.timings["total_s"]
    if not args.align_steps:
        remove_previous_run(args.out / "aligned", "--out", rerun)
    labels = [f"{a.prompt} #{a.seed}" for a in base.assets]
    manifest = {"format": "nabla-r2d3-demo", "version": 1, "base": f"base/{MANIFEST_NAME}", "aligned": None,
                "alignment": None, "contact_sheet": "contact_sheet.png"}
    images, sheet_labels = base_tiles, labels
    if args.align_steps:
        from .align.job import run_alignment

        print(f"aligning with Nabla-R2D3 on '{args.align_reward}' for {args.align_steps} rounds", file=sys.stderr)
        t0 = time.perf_counter()
        report = run_alignment(
            {"out_dir": str(args.out / "align"), "reward": args.align_reward, "reward_options": align_options,
             "method": "nabla", "steps": args.align_steps, "prompts": sorted(set(prompt_list)), "eval_seeds": 2,
             "seed": args.seed, "resume": False, "extra": DEMO_ALIGN_EXTRA},
            progress=_Progress(), model=model)
        print(file=sys.stderr)
        timings["align_s"] = round(time.perf_counter() - t0, 3)
        print("regenerating the same seeds with the finetuned model", file=sys.stderr)
        aligned_tiles: list = []
        # the model holds the trained adapter now; the manifest names the adapter folder it came from
        aligned = run_generate(job("aligned", args.out / "align" / "adapter"), model=model, progress=_Progress(),
                               tiles=aligned_tiles)
        print(file=sys.stderr)
        timings["aligned_s"] = aligned.timings["total_s"]
        manifest["aligned"] = f"aligned/{MANIFEST_NAME}"
        manifest["alignment"] = {
            "reward": report["reward"], "method": report["method"], "rounds": report["rounds"],
            "reward_before": report["reward_before"], "reward_after": report["reward_after"],
            "seconds_per_round": report["seconds_per_round"], "adapter": "align/adapter",
            "reward_curve": "align/reward_curve.png", "before_after": f"align/{report['files']['before_after']}",
            "report": "align/report.json",
        }
        images = base_tiles + aligned_tiles
        sheet_labels = [f"base: {l}" for l in labels] + [f"aligned: {l}" for l in labels]
    columns = len(base_tiles) if args.align_steps else min(4, len(labels))
    title = f"Base model (embedded), Cycles {args.resolution} px"
    if args.align_steps:
        a = manifest["alignment"]
        title = (f"Base model (top) and finetuned with {a['method']} on {a['reward']} for {a['rounds']} rounds "
                 f"(bottom): the same seeds, Cycles {args.resolution} px; held-out reward "
                 f"{a['reward_before']['mean']:.3f} -> {a['reward_after']['mean']:.3f}")
    save_png(contact_sheet(images, labels=sheet_labels, columns=columns, title=title), args.out / "contact_sheet.png")
    manifest["timings"] = timings
    write_json(args.out / "manifest.json", manifest)
    done = f"wrote {len(base.assets)} base meshes"
    if args.align_steps:
        a = manifest["alignment"]
        done += (f", {len(base.assets)} aligned meshes (held-out reward {a['reward_before']['mean']:.3f} -> "
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
