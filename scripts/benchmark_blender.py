"""Benchmark the Blender layer with the bpy module and the real engine worker.

    .venv/bin/python scripts/benchmark_blender.py [--count 4] [--steps 20] [--repeats 3]

Prints, for the UI path (the Generate operator queues the job, a timer callback polls the worker and
imports the result; here a loop stands in for Blender's event loop and calls the timer callback at
the interval it asks for, as Blender does):

* time from pressing Generate to the objects in the scene, for ``--count`` assets: first press
  (cold: the worker process starts, imports torch, loads the model) and later presses (warm);
* the longest main-thread stall while a job runs (the longest timer callback) and the 99th
  percentile, over all warm runs;
* import time per asset (npz -> mesh object with colour attribute and material), and per 1000
  vertices;
* the background path (``bpy.app.background``: the operator runs the job to its end).
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "bl_ext_bench.user_default.nabla_r2d3"


def load_addon():
    for name in ("bl_ext_bench", "bl_ext_bench.user_default"):
        mod = types.ModuleType(name)
        mod.__path__ = []
        sys.modules[name] = mod
    spec = importlib.util.spec_from_file_location(PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def press_generate_ui(addon, prompt: str, count: int, seed: int) -> tuple[float, list[float], float]:
    """Seconds from the operator call to the objects in the scene; the timer callback durations;
    the engine's own total seconds for the job (sampling, meshes, export) as the worker measured it."""
    manager = addon.blender.jobs.MANAGER
    n_before = len(bpy.data.objects)
    manager.tick_durations.clear()
    t0 = time.perf_counter()
    assert bpy.ops.nabla_r2d3.generate(prompt=prompt, count=count, seed=seed) == {"FINISHED"}
    op_s = time.perf_counter() - t0
    while manager.busy:
        interval = manager.tick()
        if interval:
            time.sleep(interval)
    elapsed = time.perf_counter() - t0
    bpy.app.timers.unregister(manager.timer_function)
    job = manager.finished[-1]
    if job.outcome != "done":
        raise SystemExit(f"job failed: {job.message}")
    assert len(bpy.data.objects) == n_before + count
    return elapsed, [op_s, *manager.tick_durations], job.result["timings"]["total_s"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt", default="a red cube")
    args = p.parse_args()

    addon = load_addon()
    addon.register()
    entry = bpy.context.preferences.addons.new()
    entry.module = PACKAGE
    tmp = Path(tempfile.mkdtemp(prefix="nabla_bench_"))
    entry.preferences.cache_dir = str(tmp / "cache")
    entry.preferences.adapters_dir = str(tmp / "adapters")
    bpy.context.scene.nabla_r2d3.steps = args.steps
    jobs = addon.blender.jobs
    jobs.run_synchronously = lambda: False  # the UI path: queue + timer
    try:
        cold, cold_ticks, cold_engine = press_generate_ui(addon, args.prompt, args.count, 0)
        warm, ticks, overhead = [], [], []
        for r in range(args.repeats):
            t, d, engine_s = press_generate_ui(addon, args.prompt, args.count, 100 * (r + 1))
            warm.append(t)
            ticks += d
            overhead.append(t - engine_s)
        engine_timings = jobs.MANAGER.finished[-1].result["timings"]

        # import alone: the last job's meshes, imported again
        data = jobs.MANAGER.finished[-1].result
        si = addon.blender.scene_import
        per_asset, verts = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            imp = si.import_assets(bpy.context.scene, si.AssetSpec.from_result(data), "bench import")
            per_asset.append((time.perf_counter() - t0) / len(data["assets"]))
            verts = [len(o.data.vertices) for o in imp.objects]
            imp.discard()

        jobs.run_synchronously = lambda: True
        t0 = time.perf_counter()
        assert bpy.ops.nabla_r2d3.generate(prompt=args.prompt, count=args.count, seed=999) == {"FINISHED"}
        background = time.perf_counter() - t0
        background_engine = jobs.MANAGER.finished[-1].result["timings"]["total_s"]
    finally:
        addon.unregister()
        bpy.context.preferences.addons.remove(entry)
        shutil.rmtree(tmp, ignore_errors=True)

    ticks_sorted = sorted(ticks)
    p99 = ticks_sorted[min(len(ticks_sorted) - 1, int(0.99 * len(ticks_sorted)))]
    mean_verts = statistics.mean(verts)
    print(f"Blender layer benchmark: {args.count} x {args.prompt!r}, {args.steps} steps, bpy {bpy.app.version_string}")
    print(f"  Generate -> objects in scene, first press (worker start)  {cold:7.2f} s"
          f"   (engine job {cold_engine:.2f} s, the rest: worker start + import {cold - cold_engine:.2f} s)")
    print(f"  Generate -> objects in scene, warm (median of {args.repeats})       {statistics.median(warm):7.2f} s"
          f"   (runs: {', '.join(f'{t:.2f}' for t in warm)})")
    print(f"    Blender-side overhead (elapsed - engine job), median  {statistics.median(overhead):7.3f} s"
          f"   (runs: {', '.join(f'{t:.3f}' for t in overhead)})")
    print(f"    engine's own timings in the last run: {engine_timings}")
    print(f"  longest main-thread stall while a job runs (warm)    {max(ticks) * 1000:7.1f} ms"
          f"   (p99 {p99 * 1000:.1f} ms, {len(ticks)} timer calls; operator call itself included)")
    print(f"  longest main-thread stall, first press               {max(cold_ticks) * 1000:7.1f} ms")
    print(f"  import per asset (npz -> object, median)             {statistics.median(per_asset) * 1000:7.1f} ms"
          f"   ({mean_verts:.0f} vertices on average: {statistics.median(per_asset) * 1e6 / mean_verts:.2f} ms per 1000)")
    print(f"  background path (operator returns with the objects)  {background:7.2f} s"
          f"   (engine job {background_engine:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
