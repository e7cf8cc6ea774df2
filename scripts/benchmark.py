"""Print the engine's latency figures on this machine (not a test; nothing is asserted).

    .venv/bin/python scripts/benchmark.py [--threads 2] [--repeats 3]

Measures: generation (20 DDIM steps, guidance, batch of 8, mesh extraction included) per asset;
the differentiable renderer forward and forward+backward (to the latent, through the decoder)
for 4 views at 64^2 and 128^2; Cycles (CPU, 16 samples) per view at 128^2.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.models import load_model  # noqa: E402
from engine.pipeline import generate  # noqa: E402
from engine.render import OrbitConfig, VolumeRenderConfig, orbit_cameras, render  # noqa: E402
from engine.sampling.sampler import SamplerConfig, sample  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cycles", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("embedded")
    prompts = ["a red cube", "an orange sphere", "a yellow cylinder", "a green cone", "a blue torus", "a purple pyramid", "a white cube", "a black sphere"]
    rows = []

    gen = timed(lambda: generate(model, prompts, list(range(8)), SamplerConfig(steps=20)), args.repeats)
    rows.append(("generation, 20 steps, batch 8, incl. meshes (per asset)", gen / 8))
    res = generate(model, prompts, list(range(8)), SamplerConfig(steps=20))
    rows.append(("  of which sampling (per asset)", res.timings.sample_s / 8))
    rows.append(("  of which decode + marching cubes (per asset)", res.timings.mesh_s / 8))

    latent = sample(model, ["a red cube"], [0], SamplerConfig(steps=20)).latents
    cams = orbit_cameras(OrbitConfig(views=4))
    for resolution in (64, 128):
        cfg = VolumeRenderConfig(resolution=resolution)

        def forward():
            with torch.no_grad():
                render(model.decode(latent), cams, cfg)

        def backward():
            z = latent.clone().requires_grad_(True)
            out = render(model.decode(z), cams, cfg)
            (out.rgb.mean() + out.depth.mean() + out.normal.mean()).backward()

        rows.append((f"volume renderer 4 views {resolution}^2 forward (decode included)", timed(forward, args.repeats)))
        rows.append((f"volume renderer 4 views {resolution}^2 forward+backward to latent", timed(backward, args.repeats)))

    if not args.skip_cycles:
        from engine.render.cycles import CyclesConfig, render_meshes_cycles

        mesh = res.assets[0].mesh
        t = timed(lambda: render_meshes_cycles([mesh], cams, CyclesConfig(resolution=128, samples=16)), args.repeats)
        rows.append(("Cycles CPU 128^2 16 spp (per view)", t / 4))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    width = max(len(r[0]) for r in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
