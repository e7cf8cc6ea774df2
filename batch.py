# SPDX-License-Identifier: GPL-3.0-or-later
"""Batch mode: generate assets unattended; save a .blend, GLBs, Cycles renders and a JSON log.

    blender -b --python <extension folder>/batch.py -- --prompt "a red cube" --count 4 --out /tmp/batch
    .venv/bin/python batch.py -- --prompt "a red cube" --prompt "a blue torus" --count 2 --out out/batch

The second form uses Blender as a Python module (the ``bpy`` wheel). Either way the add-on's own
operator runs each job synchronously (``bpy.ops.nabla_r2d3.generate``), so the batch sees exactly
what an artist gets. Written under ``--out``:

* ``scene.blend``: the imported assets, one collection per prompt, a camera and a sun;
* ``assets/<NN>_<prompt>/``: each prompt's generate job folder as the engine wrote it: per asset
  ``<prompt>_seed<N>.glb`` (glTF, vertex colours in ``COLOR_0``) and ``.npz``, and ``manifest.json``
  (the one generate manifest schema, engine/generate/records.py);
* ``renders/<NN>_<prompt>_seed<N>.png`` and ``renders/overview.png``: Cycles renders (``--no-render`` skips);
* ``batch_log.json``: arguments, per prompt the objects, its generate manifest, GLBs, vertex counts,
  renders, timings or the error.

Exit code 0 when every prompt succeeded, 1 when one failed (the others still run), 2 for bad
arguments. Arguments are checked before anything is written, with the engine's own checks
(``engine/params.py``, the chosen model's prompt rules) and the Generate panel's limits, so a bad
prompt, a number out of range or a broken ``--engine-python`` exits 2 with one message and no files.
When no .blend was opened, the startup scene's objects are removed first.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shutil
import sys
import time
import types
from pathlib import Path

import bpy

HERE = Path(__file__).resolve().parent
BATCH_PACKAGE = "nabla_r2d3_batch.nabla_r2d3"  # name this folder gets when the add-on is not enabled


def _load_names():
    """engine/names.py by path (this script runs before the add-on is loaded as a package)."""
    spec = importlib.util.spec_from_file_location("nabla_r2d3_batch_names", HERE / "engine" / "names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NAMES = _load_names()


def parse_args(argv: list[str]) -> argparse.Namespace:
    argv = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(prog="batch.py", description="Nabla-R2D3 batch generation")
    p.add_argument("--prompt", action="append", default=[], help="repeatable")
    p.add_argument("--prompts-file", type=Path, help="a text file with one prompt per line")
    p.add_argument("--count", type=int, default=4, help="assets per prompt (default 4)")
    p.add_argument("--seed", type=int, default=0, help="first seed; asset i of a prompt uses seed + i")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--scheduler", choices=NAMES.SCHEDULERS, default="ddim")
    p.add_argument("--guidance", type=float, help="classifier-free guidance (default: the model's)")
    p.add_argument("--adapter", type=Path, help="a LoRA adapter folder to generate with")
    p.add_argument("--adapter-weight", type=float, default=1.0)
    p.add_argument("--engine-python", help="Python with torch that runs the engine (default: as in the preferences)")
    p.add_argument("--device", type=str.lower, choices=("auto", "cpu", "cuda", "mps"),
                   help="compute device of the engine, spelt as for the CLI (default: as in the preferences)")
    p.add_argument("--model", choices=NAMES.MODELS, help="which model (default: as in the preferences)")
    p.add_argument("--model-path", type=Path, help="folder of the model's weights (default: its bundled weights)")
    p.add_argument("--spacing", type=float, default=2.5, help="grid spacing in Blender units")
    p.add_argument("--render", action=argparse.BooleanOptionalAction, default=True, help="Cycles renders (default on)")
    p.add_argument("--resolution", type=int, default=256, help="render size in pixels")
    p.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args(argv)
    if args.prompts_file:
        try:
            args.prompt += [ln.strip() for ln in args.prompts_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as exc:
            p.error(f"cannot read --prompts-file: {exc}")
        except UnicodeDecodeError as exc:
            p.error(f"--prompts-file {args.prompts_file} is not UTF-8 text (byte {exc.start}): save it as UTF-8")
    if not args.prompt:
        p.error("give at least one --prompt (or --prompts-file)")
    for name, low in (("count", 1), ("steps", 1), ("seed", 0), ("resolution", 8), ("samples", 1)):
        if getattr(args, name) < low:
            p.error(f"--{name} must be >= {low}")
    if args.count > 64:
        p.error("--count must be <= 64 (run the prompt again with another --seed for more)")
    if args.adapter and not (args.adapter / "adapter_config.json").is_file():
        p.error(f"--adapter {args.adapter} is not an adapter folder (no adapter_config.json)")
    if args.engine_python:
        python = Path(args.engine_python).expanduser()
        if not python.exists():
            p.error(f"--engine-python {python} does not exist")
        if python.is_dir():
            p.error(f"--engine-python {python} is a folder; give the Python interpreter in it (e.g. .venv/bin/python)")
        if not os.access(python, os.X_OK):
            p.error(f"--engine-python {python} is not executable")
        args.engine_python = str(python)
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} is a file; give a folder")
    args.out = args.out.resolve()
    return args


def check_against_addon(args, addon, prefs, settings) -> None:
    """Refuse (ValueError, one line) what only the add-on can judge, before anything is written:
    the numbers against the Generate panel's own limits (read off its properties, so the two cannot
    drift apart) with the engine's checks, every prompt against the chosen model's prompt rules and
    sampler, and the engine Python. ``prefs`` already carry ``--model``/``--engine-python``."""
    params = importlib.import_module(f"{addon.__name__}.engine.params")
    models = importlib.import_module(f"{addon.__name__}.engine.models")
    rna = settings.bl_rna.properties
    for name, check, value in (("count", params.check_int, args.count), ("steps", params.check_int, args.steps),
                               ("adapter_weight", params.check_float, args.adapter_weight),
                               ("spacing", params.check_float, args.spacing)):
        check(f"--{name.replace('_', '-')}", value, rna[name].hard_min, rna[name].hard_max)
    params.check_float("--guidance", args.guidance, rna["guidance"].hard_min, rna["guidance"].hard_max, nullable=True)
    model = addon.blender.generate.model_kind(prefs)
    models.check_scheduler(model, args.scheduler)
    models.prompt_rules(model).validate(args.prompt)
    if args.engine_python:
        ok, detail = addon.blender.engine_python.check_python(args.engine_python)
        if not ok:
            raise ValueError(f"--engine-python {args.engine_python} cannot run the engine: {detail}")


# -- the add-on -----------------------------------------------------------------------------------
def load_addon():
    """The add-on module and whether this script registered it (and must unregister it)."""
    for name in bpy.context.preferences.addons.keys():
        mod = sys.modules.get(name)
        if name.rpartition(".")[2] == "nabla_r2d3" and mod is not None and hasattr(mod, "blender"):
            # Enabled in this Blender (maybe another copy of it): use it; a second copy's classes
            # would clash with its own.
            if Path(mod.__file__).resolve().parent != HERE:
                print(f"batch: using the enabled add-on {name} ({Path(mod.__file__).parent})", file=sys.stderr)
            return mod, False
    parent = BATCH_PACKAGE.rpartition(".")[0]
    if parent not in sys.modules:
        pkg = types.ModuleType(parent)
        pkg.__path__ = []
        sys.modules[parent] = pkg
    spec = importlib.util.spec_from_file_location(BATCH_PACKAGE, HERE / "__init__.py", submodule_search_locations=[str(HERE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[BATCH_PACKAGE] = module
    spec.loader.exec_module(module)
    module.register()
    return module, True


def preferences_entry(addon):
    entry = bpy.context.preferences.addons.get(addon.__package__)
    if entry is None:
        entry = bpy.context.preferences.addons.new()
        entry.module = addon.__package__
    return entry


# -- rendering ------------------------------------------------------------------------------------
def setup_render(scene, args) -> tuple:
    """Cycles on the CPU, Standard view transform, a grey world and a sun; returns (camera, sun)."""
    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x = r.resolution_y = args.resolution
    r.resolution_percentage = 100
    r.film_transparent = False
    r.image_settings.file_format = "PNG"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = False
    scene.view_settings.view_transform = "Standard"
    if scene.world is None:
        scene.world = bpy.data.worlds.new("Nabla-R2D3 Batch World")
    world = scene.world
    if world.node_tree is None:
        world.use_nodes = True
    bg = next((n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground"), None)
    if bg is not None:
        bg.inputs["Color"].default_value = (0.18, 0.18, 0.2, 1.0)
        bg.inputs["Strength"].default_value = 1.0
    cam = bpy.data.objects.new("Nabla-R2D3 Camera", bpy.data.cameras.new("Nabla-R2D3 Camera"))
    sun = bpy.data.objects.new("Nabla-R2D3 Sun", bpy.data.lights.new("Nabla-R2D3 Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
    for obj in (cam, sun):
        scene.collection.objects.link(obj)
    scene.camera = cam
    return cam, sun


def frame(cam, objects, margin: float = 1.15) -> None:
    """Aim ``cam`` at the objects' bounding sphere from the front-right, above (a 3/4 view)."""
    from mathutils import Vector

    corners = [o.matrix_world @ Vector(c) for o in objects for c in o.bound_box]
    lo = Vector(tuple(min(c[i] for c in corners) for i in range(3)))
    hi = Vector(tuple(max(c[i] for c in corners) for i in range(3)))
    center, radius = (lo + hi) / 2, max((hi - lo).length / 2, 1e-3)
    fov = cam.data.angle
    distance = margin * radius / math.sin(fov / 2)
    direction = Vector((1.0, -1.4, 0.9)).normalized()
    cam.location = center + direction * distance
    cam.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    cam.data.clip_end = distance + 4 * radius


def render_to(scene, path: Path) -> None:
    scene.render.filepath = str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = bpy.ops.render.render(write_still=True, scene=scene.name)
    if "FINISHED" not in result or not path.is_file():
        raise RuntimeError(f"Cycles did not write {path}")


def render_assets(scene, records: list[dict], out: Path, args) -> None:
    objects = [bpy.data.objects[name] for rec in records if rec.get("ok") for name in rec["objects"]]
    if not objects:
        return
    cam, _ = setup_render(scene, args)
    saved = {o.name: o.hide_render for o in objects}
    try:
        for rec in records:
            for asset in rec.get("assets", []):
                obj = bpy.data.objects[asset["object"]]
                for other in objects:
                    other.hide_render = other is not obj
                frame(cam, [obj])
                t0 = time.perf_counter()
                glb = Path(asset["glb"])  # assets/<NN>_<prompt>/<stem>.glb: NN keeps a repeated prompt's renders apart
                path = out / "renders" / f"{glb.parent.name.split('_')[0]}_{glb.stem}.png"
                render_to(scene, path)
                asset["render"] = str(path.relative_to(out))
                asset["render_s"] = round(time.perf_counter() - t0, 3)
        for o in objects:
            o.hide_render = False
        frame(cam, objects, margin=1.05)
        render_to(scene, out / "renders" / "overview.png")
    finally:
        for name, hidden in saved.items():
            bpy.data.objects[name].hide_render = hidden


# -- main -----------------------------------------------------------------------------------------
def run(args) -> int:
    t_start = time.perf_counter()
    out = args.out
    addon, registered_here = load_addon()
    entry = preferences_entry(addon)
    prefs = entry.preferences
    saved_prefs = {k: getattr(prefs, k) for k in ("cache_dir", "adapters_dir", "engine_python", "device", "model_source",
                                                  "model_kind", "model_path")}
    jobs_dir = out / ".jobs"
    prefs.cache_dir = str(jobs_dir)  # meshes land here, GLBs are copied out, the rest is removed
    if args.engine_python:
        prefs.engine_python = args.engine_python
    if args.device:
        prefs.device = args.device.upper()
    if args.model_path:
        prefs.model_source, prefs.model_path = "LOCAL", str(args.model_path.expanduser().resolve())
        prefs.model_kind = args.model or prefs.model_kind
    elif args.model:
        prefs.model_source, prefs.model_kind = ("EMBEDDED", args.model) if args.model == "embedded" else ("LOCAL", args.model)
    scene = bpy.context.scene
    try:
        check_against_addon(args, addon, prefs, scene.nabla_r2d3)
    except ValueError as exc:
        print(f"batch.py: error: {exc}", file=sys.stderr)
        for k, v in saved_prefs.items():
            setattr(prefs, k, v)
        if registered_here:
            addon.unregister()
            bpy.context.preferences.addons.remove(entry)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if not bpy.data.filepath:  # the startup file: start from an empty scene
        bpy.data.batch_remove([o for o in scene.objects])
    s = scene.nabla_r2d3
    s.steps, s.scheduler, s.spacing = args.steps, args.scheduler, args.spacing
    s.use_guidance = args.guidance is not None
    if args.guidance is not None:
        s.guidance = args.guidance
    if args.adapter:
        prefs.adapters_dir = str(args.adapter.resolve().parent)
        s.adapter, s.adapter_weight = args.adapter.resolve().name, args.adapter_weight

    log = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "blender": bpy.app.version_string, "prompts": []}
    manager = addon.blender.jobs.MANAGER
    records = importlib.import_module(f"{addon.__name__}.engine.generate.records")  # the add-on's own copy
    naming = importlib.import_module(f"{addon.__name__}.engine.naming")
    cols = max(1, math.ceil(math.sqrt(args.count)))
    y = 0.0
    try:
        for prompt in args.prompt:
            rec = {"prompt": prompt, "ok": False}
            log["prompts"].append(rec)
            scene.cursor.location = (0.0, y, 0.0)
            t0 = time.perf_counter()
            try:
                bpy.ops.nabla_r2d3.generate(prompt=prompt, count=args.count, seed=args.seed)
            except RuntimeError as exc:
                rec["error"] = str(exc).removeprefix("Error: ").strip()
                print(f"batch: {prompt!r} failed: {rec['error']}", file=sys.stderr)
                continue
            job = manager.finished[-1]
            # The generate job's whole folder (its files and manifest.json, the one generate schema) is
            # kept under assets/, numbered in prompt order: two prompts may share a file-name slug.
            result = records.GenerateResult.from_json(job.result)
            folder = out / "assets" / f"{len(log['prompts']):02d}_{naming.slug(prompt)}"
            folder.parent.mkdir(exist_ok=True)
            shutil.copytree(result.out_dir, folder)
            rec.update(ok=True, seconds=round(time.perf_counter() - t0, 3), collection=job.applied["collection"],
                       objects=job.applied["objects"], timings=result.timings,
                       manifest=str((folder / records.MANIFEST_NAME).relative_to(out)), assets=[])
            for name, asset in zip(job.applied["objects"], result.assets):
                glb = asset.path("glb", folder)
                obj = bpy.data.objects[name]
                obj["nabla_r2d3_glb"] = str(glb)
                rec["assets"].append({"object": name, "seed": asset.seed, "glb": str(glb.relative_to(out)),
                                      "vertices": len(obj.data.vertices), "faces": len(obj.data.polygons)})
            y -= (math.ceil(args.count / cols) + 0.5) * args.spacing
            print(f"batch: {prompt!r}: {len(rec['objects'])} assets in {rec['seconds']} s", file=sys.stderr)
        if args.render:
            t0 = time.perf_counter()
            render_assets(scene, log["prompts"], out, args)
            log["render_s"] = round(time.perf_counter() - t0, 3)
        blend = out / "scene.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True, check_existing=False)
        log["blend"] = blend.name
    finally:
        shutil.rmtree(jobs_dir, ignore_errors=True)
        for k, v in saved_prefs.items():
            setattr(prefs, k, v)
        if registered_here:
            addon.unregister()
            bpy.context.preferences.addons.remove(entry)
    log["total_s"] = round(time.perf_counter() - t_start, 3)
    log["ok"] = all(rec["ok"] for rec in log["prompts"])
    # The engine's writer (the add-on's own copy): strict JSON, atomic, and the umask's mode
    # (tempfile.mkstemp made it 0600).
    importlib.import_module(f"{addon.__name__}.engine.fileio").write_json(out / "batch_log.json", log)
    print(f"batch: wrote {out} ({'all ok' if log['ok'] else 'with failures'}) in {log['total_s']} s", file=sys.stderr)
    return 0 if log["ok"] else 1


def main() -> int:
    try:
        args = parse_args(sys.argv)
    except SystemExit as exc:  # argparse: usage errors exit 2 with the message printed
        return int(exc.code or 0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
