"""Measure splat -> mesh methods on splat shapes with known surfaces: Chamfer distance and seconds.

    OMP_NUM_THREADS=1 python scripts/measure_splat_meshes.py [--counts 16384 262144] [--threads 1]

For a sphere (radius 0.6) and a cube (half-size 0.5) covered by flat, DiffSplat-like Gaussians
(engine/geometry/splat_shapes.py; 0.5 % of them moved off the surface as floaters), every method
in ``METHODS`` below meshes the splats (timed after a warm-up call: wall-clock, and this process's CPU time, which a busy machine
inflates less); the mesh is compared with the analytic surface
(``chamfer_distance``: symmetric mean distance, 95th percentile mesh -> surface, colour error).
Prints a Markdown table (docs/rendering.md, "Meshes from splats").
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = {
    "density 128^3 (default)": dict(method="density", resolution=128),
    "density 192^3": dict(method="density", resolution=192),
    "density 128^3, no offset correction": dict(method="density", resolution=128, correct_offset=False),
    "tsdf 128^3, 8 views x 128^2": dict(method="tsdf", resolution=128, views=8, image_resolution=128),
    "tsdf 128^3, 32 views x 192^2": dict(method="tsdf", resolution=128, views=32, image_resolution=192),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[16384, 262144], help="Gaussians per asset")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=100_000, help="surface samples for the Chamfer distance")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD")
    args = parser.parse_args(argv)

    import torch

    from engine.geometry.splat_mesh import SplatMeshConfig, splats_to_meshes
    from engine.geometry.splat_shapes import SplatShapeConfig, chamfer_distance, splat_cube, splat_sphere

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print()
    warm = splat_sphere(config=SplatShapeConfig(count=2048))
    for label in args.methods:  # first calls import scipy/skimage and warm torch up: not the method's cost
        splats_to_meshes(warm.splats, config=SplatMeshConfig(**{**METHODS[label], "resolution": 32}))
    print("| shape | Gaussians | method | Chamfer | p95 mesh->surface | colour MAE | vertices | wall s | CPU s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for count in args.counts:
        for name, build in (("sphere r=0.6", splat_sphere), ("cube a=0.5", splat_cube)):
            shape = build(config=SplatShapeConfig(count=count, floaters=count // 200))
            for label in args.methods:
                t0, c0 = time.perf_counter(), time.process_time()
                (mesh,) = splats_to_meshes(shape.splats, config=SplatMeshConfig(**METHODS[label]))
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                e = chamfer_distance(mesh, shape, samples=args.samples)
                print(f"| {name} | {count} | {label} | {e.chamfer:.4f} | {e.to_surface_p95:.4f} | {e.colour_mae:.4f} "
                      f"| {len(mesh.vertices)} | {seconds:.1f} | {cpu:.1f} |", flush=True)


if __name__ == "__main__":
    main()
