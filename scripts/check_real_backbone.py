"""Check the engine on a real backbone's weights and a CUDA GPU: generate, then align for a few rounds.

    python scripts/check_real_backbone.py                       # Shap-E from the Hugging Face cache
    python scripts/check_real_backbone.py --model-path DIR      # a folder from ShapEPipeline.save_pretrained
    python scripts/check_real_backbone.py --model diffsplat --model-path DIR   # scripts/convert_diffsplat.py's folder
    python scripts/check_real_backbone.py --method refl --reward "0.5*dnc + palette" --option palette.palette=red

Prints the card, load time, seconds per asset for generation (native Heun and the aligner's DDIM),
vertex counts, the alignment's reward per round and its seconds per round, and peak GPU memory; the
meshes, the alignment report and its adapter go to --out. Sampling and the reward run under bf16
autocast (the aligner's ``mixed_precision="auto"`` on CUDA); LoRA weights and the optimizer stay fp32.

It skips, with exit status 0 and a line saying why, when there is no CUDA GPU or no weights (nothing
is downloaded: `hf download openai/shap-e --local-dir DIR`, or for DiffSplat
`python scripts/convert_diffsplat.py --out DIR`, on a connected machine first). Generation samples with
each model's own sampler (Shap-E: Heun, 64 steps; DiffSplat: SDE-DPM-Solver++, 20 steps) and with DDIM.
The project's own machines have neither, so these figures are the user's to measure.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("shap-e", "diffsplat"), default="shap-e")
    parser.add_argument("--model-path", type=Path, default=None, help="the weights' folder (Shap-E's default: the HF cache)")
    parser.add_argument("--out", type=Path, default=Path("out/check_real_backbone"))
    parser.add_argument("--prompt", action="append", default=None, help="repeatable (default: two chairs and a car)")
    parser.add_argument("--generate-steps", type=int, default=None,
                        help="steps of the model's own sampler (default: Shap-E's Heun 64, DiffSplat's 20)")
    parser.add_argument("--method", default="nabla")
    parser.add_argument("--reward", default="dnc")
    parser.add_argument("--option", action="append", default=[], metavar="REWARD.OPTION=VALUE")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--sampling-steps", type=int, default=20, help="steps of the DDIM samples and trajectories")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu runs the same path in fp32 as a smoke test")
    args = parser.parse_args(argv)

    import contextlib

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"skipped: no CUDA GPU here (this check measures {args.model} on a GPU)")
        return 0
    cuda = args.device == "cuda"
    from engine.models import load_model
    from engine.models.errors import ModelLoadError

    prompts = args.prompt or ["a wooden chair", "an office chair", "a red sports car"]
    device = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name(device) if cuda else args.device}, torch {torch.__version__}")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peak() -> str:
        return f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if cuda else "fp32 on CPU"

    def reset_peak() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)

    t0 = time.perf_counter()
    try:
        model = load_model(args.model, args.model_path, device=device)
    except (ModelLoadError, ValueError) as exc:
        print(f"skipped: {exc}")
        return 0
    sync()
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s; latent {tuple(model.latent_shape)}, "
          f"denoiser {sum(p.numel() for p in model.denoiser.parameters()) / 1e6:.0f} M parameters")

    from engine.geometry.mesh import asset_name, save_mesh
    from engine.pipeline import generate
    from engine.sampling.sampler import SamplerConfig

    args.out.mkdir(parents=True, exist_ok=True)
    own, own_steps = {"shap-e": ("heun", 64), "diffsplat": ("dpmsolver-sde", 20)}[args.model]
    for scheduler, steps in ((own, args.generate_steps or own_steps), ("ddim", args.sampling_steps)):
        reset_peak()
        sync()
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
            result = generate(model, prompts, list(range(len(prompts))), SamplerConfig(steps=steps, scheduler=scheduler))
        sync()
        for asset in result.assets:
            name = asset_name(asset.prompt, asset.seed)
            save_mesh(asset.mesh, args.out / f"{scheduler}_{name}.glb", name=name)
        n = len(prompts)
        # Meshing reads the latents back to the CPU, so queued sampling kernels end inside mesh_s on CUDA.
        print(f"generate ({scheduler}, {steps} steps): {result.timings.sample_s / n:.2f} s/asset sampling, "
              f"{result.timings.mesh_s / n:.2f} s/asset meshing; vertices {[len(a.mesh.vertices) for a in result.assets]}; "
              f"{peak()}")

    from engine.align.job import run_alignment
    from engine.rewards.registry import parse_option_assignments

    reset_peak()
    params = {"out_dir": str(args.out / f"align_{args.method}"), "model": args.model,
              "model_path": None if args.model_path is None else str(args.model_path.expanduser().resolve()),
              "method": args.method, "reward": args.reward, "reward_options": parse_option_assignments(args.option),
              "steps": args.rounds, "trajectories": args.trajectories, "prompts": prompts, "eval_seeds": 1,
              "device": args.device, "resume": False, "preview_every": 0,
              "extra": {"sampler": {"steps": args.sampling_steps}}}
    report = run_alignment(params, progress=lambda f, m: print(f"  [{100 * f:5.1f}%] {m}", flush=True), model=model)
    print(f"align ({args.method} on {args.reward}, {args.rounds} rounds x {args.trajectories} trajectories): "
          f"{peak()}")
    print(json.dumps({k: report[k] for k in report if k in ("reward_before", "reward_after", "seconds_per_round")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
