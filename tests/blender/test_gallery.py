"""The gallery (blender/gallery.py): seed modes, marks that survive a saved .blend and a new session,
importing chosen candidates, the Variations and Align to My Picks operators' jobs."""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bpy

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ("a red cube", "a blue torus", "a green cone")


def _write_job(folder: Path, prompts=PROMPTS, seed=3, lineages=None, sampler=None) -> Path:
    """A generate job folder as the worker writes it (manifest, npz meshes, gallery.json, thumbnails),
    made without the engine: these tests check the Blender side."""
    from bl_ext_pytest.user_default.nabla_r2d3.engine.generate.records import GeneratedAsset, GenerateResult

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gallery").mkdir()
    lineages = lineages or [[] for _ in prompts]
    assets, gallery = [], []
    for i, (prompt, lineage) in enumerate(zip(prompts, lineages)):
        suffix = "".join(f"_v{k}" for k, _ in lineage)
        stem = f"{prompt.replace(' ', '_')}_seed{seed + (0 if lineage else i)}{suffix}"
        s = seed + (0 if lineage else i)
        vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32) * (1 + i)
        faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.int32)
        np.savez(folder / f"{stem}.npz", vertices=vertices, faces=faces, colors=np.full((4, 3), 0.5, np.float32),
                 color_space=np.array("linear"))
        (folder / f"{stem}.glb").write_bytes(b"glTF")
        Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(folder / "gallery" / f"{stem}.png")
        name = stem.removeprefix("a_")
        assets.append(GeneratedAsset(prompt, s, name, {"npz": f"{stem}.npz", "glb": f"{stem}.glb"}, 4, 4))
        gallery.append({"name": name, "stem": stem, "thumbnail": f"gallery/{stem}.png",
                        "latent": f"gallery/{stem}.latent.safetensors", "lineage": lineage})
    result = GenerateResult(prompts=list(dict.fromkeys(prompts)), seed=seed, count=len(prompts), model="embedded",
                            sampler=sampler or {"steps": 6, "guidance": 3.0, "scheduler": "ddim", "eta": 1.0},
                            formats=["npz", "glb"], assets=assets, timings={})
    (folder / "manifest.json").write_text(json.dumps(result.to_json()))
    (folder / "gallery.json").write_text(json.dumps({"format": "nabla-gallery", "version": 1, "variation": None,
                                                     "assets": gallery}))
    return folder


@pytest.fixture
def gal(registered, clean_scene, prefs):
    s = bpy.context.scene.nabla_r2d3
    s.gallery.clear()
    s.gallery_jobs.clear()
    yield registered
    s = bpy.context.scene.nabla_r2d3
    s.gallery.clear()
    s.gallery_jobs.clear()
    for name in ("seed", "seed_mode", "count", "variation_count", "variation_strength", "gallery_first", "align_prompts"):
        s.property_unset(name)
    prefs.engine_python = ""


@pytest.fixture
def captured(gal, monkeypatch):
    """Jobs the operators submit, kept instead of run (their job folders removed afterwards)."""
    jobs = []

    def keep(op, context, job):
        jobs.append(job)
        return {'FINISHED'}

    for module in (gal.operators.generate, gal.operators.gallery, gal.operators.common):
        monkeypatch.setattr(module, "run_job", keep)
    yield jobs
    for job in jobs:
        shutil.rmtree(job.job_dir, ignore_errors=True)


def test_press_seeds_follow_each_mode(gal):
    press = gal.blender.gallery_seeds.press_seeds
    field, firsts = 0, []
    for _ in range(3):
        first, field = press("INCREMENT", field, 4)
        firsts.append(first)
    assert firsts == [0, 4, 8] and field == 12
    assert press("FIXED", 7, 4) == (7, 7)
    first, after = press("RANDOM", 7, 4, random.Random(1))
    assert first == after and 0 <= first <= 2**31 - 4
    assert press("INCREMENT", 2**31 - 3, 4) == (0, 4), "a batch past the 32-bit field wraps to 0"
    with pytest.raises(ValueError, match="seed mode"):
        press("SOMETIMES", 0, 1)


@pytest.mark.parametrize("mode", ["INCREMENT", "FIXED", "RANDOM"])
def test_generate_presses_use_the_seed_mode(captured, mode):
    s = bpy.context.scene.nabla_r2d3
    s.seed_mode, s.seed, s.count = mode, 5, 3
    seen = []
    for _ in range(3):
        assert bpy.ops.nabla_r2d3.generate() == {"FINISHED"}
        seen.append((captured[-1].params["seed"], s.seed))
    if mode == "INCREMENT":
        assert seen == [(5, 8), (8, 11), (11, 14)], "each press continues where the last ended"
    elif mode == "FIXED":
        assert seen == [(5, 5)] * 3
    else:
        assert all(first == field for first, field in seen) and len({f for f, _ in seen}) == 3
    assert all(job.params["gallery"] is True for job in captured), "Generate asks for thumbnails and latents"
    bpy.ops.nabla_r2d3.generate(seed=40)  # a script's own seed: used as given, the field stays
    assert captured[-1].params["seed"] == 40 and s.seed == seen[-1][1]


@pytest.mark.parametrize("review", [True, False])
def test_a_generate_result_lands_in_the_gallery_and_in_the_scene_unless_reviewed(captured, review):
    s = bpy.context.scene.nabla_r2d3
    s.gallery_first = review
    bpy.ops.nabla_r2d3.generate(prompt="a red cube", count=3)
    job = captured[-1]
    folder = _write_job(Path(job.params["out_dir"]))
    data = {**json.loads((folder / "manifest.json").read_text()), "out_dir": str(folder)}
    applier = job.make_applier(data)
    while not applier.step():
        pass
    summary = applier.finish(push_undo=False)
    assert [i.prompt for i in s.gallery] == list(PROMPTS) and s.gallery_jobs[-1].name == str(folder.resolve())
    objects = [o for o in bpy.data.objects if o.get("nabla_r2d3_job") == str(folder.resolve())]
    if review:
        assert "3 candidates in the Gallery" in summary and not objects and not any(i.object_name for i in s.gallery)
    else:
        assert len(objects) == 3 and [i.object_name for i in s.gallery] == [o.name for o in applier.inner.importer.objects]
        assert {o["nabla_r2d3_asset"] for o in objects} == {i.stem for i in s.gallery}


def test_marks_reach_the_job_folder_objects_and_a_reloaded_file(gal, tmp_path, loader_source):
    from bl_ext_pytest.user_default.nabla_r2d3.engine import picks

    folder = _write_job(tmp_path / "job")
    scene = bpy.context.scene
    s = scene.nabla_r2d3
    assert bpy.ops.nabla_r2d3.gallery_open(directory=str(folder)) == {"FINISHED"}
    assert [i.prompt for i in s.gallery] == list(PROMPTS) and all(Path(i.thumbnail).is_file() for i in s.gallery)
    for index, mark in ((0, "liked"), (1, "disliked"), (2, "neutral"), (2, "neutral")):  # the second neutral clears
        assert bpy.ops.nabla_r2d3.gallery_mark(index=index, mark=mark) == {"FINISHED"}
    assert [i.mark for i in s.gallery] == ["liked", "disliked", "NONE"]
    entries = picks.load(folder / "picks.json")
    assert [(e["prompt"], e["seed"], e["mark"]) for e in entries] == [("a red cube", 3, "liked"), ("a blue torus", 4, "disliked")]
    assert entries[0]["manifest"] == "manifest.json" and entries[0]["latent"].startswith("gallery/")
    preference = pytest.importorskip("bl_ext_pytest.user_default.nabla_r2d3.engine.rewards.preference")
    assert [p.mark for p in preference.load_picks(folder / "picks.json")] == ["liked", "disliked"], "the fit reads it"

    s.gallery[2].chosen = True
    assert bpy.ops.nabla_r2d3.gallery_import(which='LIKED') == {"FINISHED"}
    assert bpy.ops.nabla_r2d3.gallery_import(which='CHOSEN') == {"FINISHED"}
    cube, cone = bpy.data.objects[s.gallery[0].object_name], bpy.data.objects[s.gallery[2].object_name]
    assert (cube.name, cube["nabla_r2d3_seed"], cube["nabla_r2d3_mark"]) == ("a red cube (seed 3)", 3, "liked")
    assert "nabla_r2d3_mark" not in cone and cone["nabla_r2d3_asset"] == "a_green_cone_seed5"
    bpy.ops.nabla_r2d3.gallery_mark(index=2, mark="disliked")  # marking after import reaches the object
    assert cone["nabla_r2d3_mark"] == "disliked"
    assert bpy.ops.nabla_r2d3.gallery_import(which='CHOSEN') == {"CANCELLED"}, "nothing ticked any more"

    blend = tmp_path / "marked.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    probe = loader_source + textwrap.dedent(
        f"""
        import bpy, json, pathlib
        addon = load_addon(pathlib.Path({str(ROOT)!r}))
        addon.register()
        bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
        s = bpy.context.scene.nabla_r2d3
        out = {{"items": [[i.name, i.mark, i.object_name] for i in s.gallery],
               "objects": {{o.name: o.get("nabla_r2d3_mark") for o in bpy.data.objects if "nabla_r2d3_asset" in o}},
               "jobs": [j.name for j in s.gallery_jobs]}}
        # a new session that knows only the job folder: a fresh scene opens it
        scene = bpy.data.scenes.new("fresh")
        addon.blender.gallery.load_job(scene, {str(folder)!r})
        out["fresh"] = [i.mark for i in scene.nabla_r2d3.gallery]
        print("JSON" + json.dumps(out))
        """
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("JSON")), None)
    assert line is not None, run.stderr[-3000:]
    out = json.loads(line[4:])
    assert [m for _, m, _ in out["items"]] == ["liked", "disliked", "disliked"]
    assert out["objects"] == {"a red cube (seed 3)": "liked", "a green cone (seed 5)": "disliked"}
    assert out["jobs"] == [str(folder.resolve())]
    assert out["fresh"] == ["liked", "disliked", "disliked"]


def test_variations_operator_builds_the_right_job(captured, tmp_path):
    folder = _write_job(tmp_path / "job", sampler={"steps": 7, "guidance": 2.5, "scheduler": "dpmsolver-sde", "eta": 1.0})
    scene = bpy.context.scene
    s = scene.nabla_r2d3
    gal_module = bpy.ops.nabla_r2d3
    gal_module.gallery_open(directory=str(folder))
    gal_module.gallery_import(which='ALL')
    s.variation_strength, s.variation_count = 0.25, 3
    cube = bpy.data.objects[s.gallery[0].object_name]
    bpy.context.view_layer.objects.active = cube
    assert gal_module.variations() == {"FINISHED"}
    job = captured[-1]
    p = job.params
    assert job.kind == "generate" and p["out_dir"] == str(job.job_dir) and job.job_dir.is_dir()
    assert (p["prompt"], p["seed"], p["count"]) == ("a red cube", 3, 3)
    assert (p["variation_strength"], p["variation_start"], p["variation_parent"]) == (0.25, 1, [])
    assert (p["steps"], p["guidance"], p["scheduler"]) == (7, 2.5, "dpmsolver-sde"), "the original's sampler settings"
    assert p["gallery"] is True and "adapter" not in p

    # a candidate that is itself variation 2 of the torus: its lineage is the parent, indices continue
    varied = _write_job(tmp_path / "varied", prompts=("a blue torus",) * 2, seed=4, lineages=[[[2, 0.5]], [[3, 0.5]]])
    gal_module.gallery_open(directory=str(varied))
    assert [i.name for i in s.gallery] == ["blue_torus_seed4_v2", "blue_torus_seed4_v3"]
    assert gal_module.variations(index=0) == {"FINISHED"}
    p = captured[-1].params
    assert (p["prompt"], p["seed"], p["variation_parent"], p["variation_start"]) == ("a blue torus", 4, [[2, 0.5]], 1)
    assert gal_module.variations(index=1) == {"FINISHED"}
    assert captured[-1].params["variation_parent"] == [[3, 0.5]]

    # variations of the torus itself: indices 2 and 3 are taken in the gallery, so they start at 4
    bpy.context.view_layer.objects.active = bpy.data.objects["a blue torus (seed 4)"]
    gal_module.variations()
    assert (captured[-1].params["variation_parent"], captured[-1].params["variation_start"]) == ([], 4)

    bpy.context.view_layer.objects.active = None
    with pytest.raises(RuntimeError, match="Select an object made by Nabla-R2D3"):
        gal_module.variations()


def _mark_all(folder: Path, marks: list[str]) -> None:
    bpy.ops.nabla_r2d3.gallery_open(directory=str(folder))
    for i, mark in enumerate(marks):
        bpy.ops.nabla_r2d3.gallery_mark(index=i, mark=mark)


def test_align_to_my_picks_refuses_too_few_with_the_engines_message(captured, tmp_path):
    preference = pytest.importorskip("bl_ext_pytest.user_default.nabla_r2d3.engine.rewards.preference")
    _mark_all(_write_job(tmp_path / "a"), ["liked", "liked", "disliked"])
    _mark_all(_write_job(tmp_path / "b", seed=10), ["liked", "neutral", "neutral"])
    with pytest.raises(preference.PreferenceError) as expected:
        preference.check_pick_counts(["liked"] * 3 + ["disliked"] + ["neutral"] * 2)
    message = str(expected.value)
    with pytest.raises(RuntimeError) as refused:
        bpy.ops.nabla_r2d3.align_to_picks()
    assert message[1:] in str(refused.value) and "3 liked, 1 disliked, 2 neutral" in str(refused.value)
    assert not captured


def test_align_to_my_picks_builds_the_right_align_job(captured, tmp_path):
    s = bpy.context.scene.nabla_r2d3
    a = _write_job(tmp_path / "a")
    b = _write_job(tmp_path / "b", seed=10)
    c = _write_job(tmp_path / "c", prompts=("a red cube", "a red cube", "a green cone"), seed=20)
    _mark_all(a, ["liked", "disliked", "liked"])
    _mark_all(b, ["liked", "disliked", "disliked"])
    _mark_all(c, ["liked", "disliked", "neutral"])
    assert bpy.ops.nabla_r2d3.align_to_picks() == {"FINISHED"}
    job = captured[-1]
    p = job.params
    assert job.kind == "align" and p["reward"] == "preference" and p["out_dir"] == str(job.job_dir / "out")
    assert p["method"] == s.method and p["steps"] == s.align_steps
    assert p["prompts"] == ["a red cube", "a blue torus", "a green cone"], "the picked prompts, in order"
    from bl_ext_pytest.user_default.nabla_r2d3.engine import picks

    entries = picks.load(p["fit_preference"]["picks"])
    assert picks.counts(entries) == {"liked": 4, "disliked": 4, "neutral": 1}
    assert all(Path(e["manifest"]).is_absolute() and Path(e["latent"]).is_absolute() for e in entries)
    s.align_prompts = "a cube; a torus"
    bpy.ops.nabla_r2d3.align_to_picks()
    assert captured[-1].params["prompts"] == ["a cube", "a torus"], "the panel's prompts win"


def test_generate_to_gallery_then_variations_with_the_engine(gal, prefs):
    """The real worker: thumbnails and latents arrive, a variation job's candidates replace the gallery."""
    s = bpy.context.scene.nabla_r2d3
    s.steps, s.gallery_first, s.seed_mode, s.seed = 4, True, "INCREMENT", 2
    try:
        assert bpy.ops.nabla_r2d3.generate(prompt="a red cube", count=2) == {"FINISHED"}
        assert [i.name for i in s.gallery] == ["red_cube_seed2", "red_cube_seed3"] and s.seed == 4
        assert not [o for o in bpy.data.objects if "nabla_r2d3_prompt" in o], "reviewed, not imported"
        assert all(Path(i.thumbnail).is_file() for i in s.gallery)
        bpy.ops.nabla_r2d3.gallery_mark(index=1, mark="liked")
        s.variation_count, s.variation_strength = 2, 0.4
        assert bpy.ops.nabla_r2d3.variations(index=1) == {"FINISHED"}
        assert [i.name for i in s.gallery] == ["red_cube_seed3_v1", "red_cube_seed3_v2"]
        assert [json.loads(i.lineage) for i in s.gallery] == [[[1, 0.4]], [[2, 0.4]]]
        bpy.ops.nabla_r2d3.gallery_mark(index=0, mark="disliked")
        assert bpy.ops.nabla_r2d3.gallery_import(which='ALL') == {"FINISHED"}
        obj = bpy.data.objects["a red cube (seed 3 variation 1)"]
        assert obj["nabla_r2d3_mark"] == "disliked" and obj["nabla_r2d3_lineage"] == "[[1, 0.4]]"
        assert len(s.gallery_jobs) == 2
    finally:
        s.property_unset("steps")


def _recording():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_recording_layout", Path(__file__).with_name("test_panels.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gallery_panel_shows_thumbnails_marks_and_imports(gal, tmp_path):
    rec = _recording()
    panel = gal.panels.gallery.VIEW3D_PT_nabla_r2d3_gallery
    assert "Generate (or open a job folder)" in rec.labels(rec.draw(panel))
    bpy.ops.nabla_r2d3.gallery_open(directory=str(_write_job(tmp_path / "job")))
    bpy.ops.nabla_r2d3.gallery_mark(index=1, mark="disliked")
    log = rec.draw(panel)
    icons = [e[1] for e in log if e[0] == "template_icon"]
    assert len(icons) == 3, "one thumbnail per candidate"
    marks = [e[2] for e in log if e[0] == "operator_props" and e[1] == "nabla_r2d3.gallery_mark"]
    assert [(m["index"], m["mark"]) for m in marks] == [(i, m) for i in range(3) for m in ("liked", "disliked", "neutral")]
    assert "1 disliked" in rec.labels(log)
    ops = rec.operators(log)
    assert ops.count("nabla_r2d3.gallery_import") == 3 and ops.count("nabla_r2d3.variations") == 4
    assert {"chosen", "variation_strength", "variation_count"} <= rec.props(log)
    assert "nabla_r2d3.align_to_picks" in rec.operators(rec.draw(gal.panels.align.VIEW3D_PT_nabla_r2d3_align))
    assert {"seed_mode", "gallery_first"} <= rec.props(rec.draw(gal.panels.generate.VIEW3D_PT_nabla_r2d3_generate))


def test_align_to_my_picks_with_the_engine_fits_then_aligns(gal, prefs):
    """The real worker: marks of generated candidates -> preference fitted in the align job -> adapter,
    selected for Generate exactly when the held-out preference score did not fall."""
    s = bpy.context.scene.nabla_r2d3
    s.steps, s.gallery_first, s.align_steps = 4, True, 1
    try:
        bpy.ops.nabla_r2d3.generate(prompt="a red cube", count=4, seed=0)
        bpy.ops.nabla_r2d3.generate(prompt="a blue torus", count=4, seed=0)
        s.align_prompts = "a red cube"
        for prompt, mark in (("a red cube", "liked"), ("a blue torus", "disliked")):
            bpy.ops.nabla_r2d3.gallery_open(directory=[j.name for j in s.gallery_jobs if "generate" in j.name][
                0 if mark == "liked" else 1])
            for i in range(4):
                bpy.ops.nabla_r2d3.gallery_mark(index=i, mark=mark)
        assert bpy.ops.nabla_r2d3.align_to_picks() == {"FINISHED"}
        job = gal.blender.jobs.MANAGER.finished[-1]
        assert job.outcome == "done", job.message
        report = job.result
        assert report["reward"] == "preference" and report["preference"]["picks"]["liked"] == 4
        assert (Path(job.params["out_dir"]) / "preference" / "preference.safetensors").is_file()
        rose = report["reward_after"]["mean"] >= report["reward_before"]["mean"]
        assert job.applied["selected"] == rose and (s.adapter == job.applied["adapter"]) == rose
    finally:
        for name in ("steps", "align_steps", "adapter"):
            s.property_unset(name)


def test_the_cache_keeps_the_gallerys_job_folders(gal, prefs, tmp_path):
    cache = gal.blender.cache
    root = Path(prefs.cache_dir) / "jobs"
    folder = _write_job(root / "generate-20200101-000000-abcdef")
    other = _write_job(root / "generate-20200101-000001-abcdef")
    try:
        bpy.ops.nabla_r2d3.gallery_open(directory=str(folder))
        bpy.ops.nabla_r2d3.gallery_mark(index=0, mark="liked")
        used = cache.folders_in_use(root)
        assert folder in used and other not in used
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(other, ignore_errors=True)
