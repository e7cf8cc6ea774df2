"""Time the Gaussian-splat rasteriser: forward, and forward + backward, for 4 orbit views.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_splats.py   # CPU (one thread), then CUDA if present
    .venv/bin/python scripts/benchmark_splats.py --device cuda        # torch and gsplat backends only

Scenes are random but shaped like DiffSplat's output: N Gaussians on a bumpy closed surface inside
[-1, 1]^3 (``--scene shell``; ``--scene cube`` fills the cube uniformly, a much deeper worst case),
scales log-uniform in [0.002, 0.04] world units (a few pixels each), random rotations, opacities
uniform in [0.05, 1], colours RGB. Cameras: 4 views at azimuth 0/90/180/270, elevation 20, radius 3,
fov 40. The loss for the backward pass is a fixed random weighting of colours and alphas.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.render.cameras import OrbitConfig, orbit_cameras  # noqa: E402
from engine.render.splat_render import camera_matrices  # noqa: E402
from engine.render.splats import rasterize  # noqa: E402


def make_scene(n: int, scene: str, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    if scene == "cube":
        means = torch.rand(n, 3, generator=generator) * 2 - 1
    else:  # a bumpy sphere of radius ~0.75 with a little thickness
        direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
        bumps = 0.1 * torch.sin(4 * direction[:, 0]) * torch.cos(3 * direction[:, 1]) + 0.05 * torch.sin(5 * direction[:, 2])
        radius = 0.75 + bumps + 0.01 * torch.randn(n, generator=generator)
        means = direction * radius[:, None]
    quats = torch.randn(n, 4, generator=generator)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.002), math.log(0.04), generator=generator))
    opacities = 0.05 + 0.95 * torch.rand(n, generator=generator)
    colors = torch.rand(n, 3, generator=generator)
    return means, quats, scales, opacities, colors


def time_once(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu


def bench(n: int, res: int, device: str, backend: str, scene: str, repeats: int):
    g = torch.Generator().manual_seed(n + res)
    params = [t.to(device) for t in make_scene(n, scene, g)]
    viewmats, ks = camera_matrices(orbit_cameras(OrbitConfig(views=4, elevation=20.0, radius=3.0, fov=40.0)), res)
    viewmats, ks = viewmats.to(device), ks.to(device)
    weights = torch.rand(4, res, res, 4, generator=g).to(device)

    def forward():
        with torch.no_grad():
            return rasterize(*params, viewmats, ks, res, res, backend=backend)

    def forward_backward():
        leaves = [p.clone().requires_grad_(True) for p in params]
        colors, alphas, _ = rasterize(*leaves, viewmats, ks, res, res, backend=backend)
        ((colors * weights[..., :3]).sum() + (alphas * weights[..., 3:]).sum()).backward()

    drawn = forward()[2].get("n_drawn", -1)
    fwd = min(time_once(forward) for _ in range(repeats))
    fwd_bwd = min(time_once(forward_backward) for _ in range(repeats))
    return fwd, fwd_bwd, drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: the CPU, then CUDA where available")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--scene", default="shell", choices=("shell", "cube"))
    parser.add_argument("--sizes", default="16384,65536,262144", help="Gaussian counts, comma-separated")
    parser.add_argument("--resolutions", default="128,256", help="image sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timed runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    devices = {"cpu": ["cpu"], "cuda": ["cuda"], "auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])}
    for device in devices[args.device]:
        table(device, args)
    if args.device == "auto" and not torch.cuda.is_available():
        print("# no CUDA device: CUDA rows skipped")


def table(device: str, args: argparse.Namespace) -> None:
    backends = ("torch",) if device == "cpu" else ("torch", "gsplat")
    device_name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"# {device_name}; torch {torch.__version__}; scene {args.scene}; 4 views")
    # wall seconds, and (on CPU) the process's CPU seconds, which other jobs on the machine disturb less
    print("| backend | resolution | Gaussians | drawn pairs | forward s (CPU s) | forward+backward s (CPU s) |")
    print("|---|---|---|---|---|---|")
    for res in map(int, args.resolutions.split(",")):
        for n in map(int, args.sizes.split(",")):
            for backend in backends:
                fwd, fwd_bwd, drawn = bench(n, res, device, backend, args.scene, args.repeats)
                cells = [f"{wall:.3f}" + (f" ({cpu:.3f})" if device == "cpu" else "") for wall, cpu in (fwd, fwd_bwd)]
                print(f"| {backend} | 4 x {res}^2 | {n} | {drawn if drawn >= 0 else '-'} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
