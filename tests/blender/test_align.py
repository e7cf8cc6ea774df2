"""Align job: Scene settings -> worker params (palette, reference image, DNC), clear errors, and the
trained adapter landing in the adapters folder, selected for Generate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import bpy


@pytest.fixture
def s(registered, clean_scene):
    settings = bpy.context.scene.nabla_r2d3
    yield settings
    for name in ("reward", "align_prompts", "method", "renderer", "adapter", "adapter_name", "prompt"):
        settings.property_unset(name)
    settings.palette.clear()
    settings.reference_image = None


@pytest.fixture
def align(registered):
    return registered.blender.align


def test_palette_params(align, s, prefs, tmp_path):
    s.reward = "palette"
    for rgb in ((1.0, 0.5, 0.0), (0.1, 0.2, 0.9)):
        s.palette.add().color = rgb
    s.align_prompts = "a red cube; a blue torus;;"
    s.lora_rank, s.align_steps, s.beta, s.learning_rate = 4, 12, 5e3, 1e-3
    p = align.align_params(s, prefs, tmp_path)
    assert p["reward"] == "palette"
    colours = p["reward_options"]["palette"]["palette"]
    assert colours == [pytest.approx([1.0, 0.5, 0.0]), pytest.approx([0.1, 0.2, 0.9], abs=1e-6)]
    assert p["prompts"] == ["a red cube", "a blue torus"]
    assert (p["method"], p["lora_rank"], p["steps"], p["out_dir"]) == ("nabla", 4, 12, str(tmp_path))
    assert p["beta"] == pytest.approx(5e3) and p["lr"] == pytest.approx(1e-3)
    s.beta, s.learning_rate = 0.0, 0.0  # the panel's defaults: the engine picks per reward and method
    p = align.align_params(s, prefs, tmp_path)
    assert p["beta"] is None and p["lr"] is None
    s.align_prompts = ""
    assert align.align_params(s, prefs, tmp_path)["prompts"] == [s.prompt]


def test_reference_image_saved_or_used_from_disk(align, s, prefs, tmp_path):
    s.reward = "reference"
    img = bpy.data.images.new("painted", 16, 8)  # generated in Blender: no file on disk
    try:
        s.reference_image = img
        p = align.align_params(s, prefs, tmp_path)
        assert p["reward"] == "reference"
        saved = Path(p["reward_options"]["reference"]["image"])
        assert saved.parent == tmp_path and saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert img.source == "GENERATED" and img.file_format == "PNG"

        on_disk = bpy.data.images.load(str(saved))
        s.reference_image = on_disk
        p2 = align.align_params(s, prefs, tmp_path / "other")
        assert p2["reward_options"]["reference"]["image"] == str(saved.resolve())
        bpy.data.images.remove(on_disk)
    finally:
        s.reference_image = None
        bpy.data.images.remove(img)


@pytest.mark.parametrize("case, message", [
    ("empty_palette", "Add at least one palette colour"),
    ("no_reference", "Pick a reference image"),
    ("cycles_renderer", "needs the reward's gradient and Cycles renders have none"),
])
def test_settings_that_cannot_make_a_job(align, s, prefs, tmp_path, case, message):
    s.reward = {"empty_palette": "palette", "no_reference": "reference", "cycles_renderer": "dnc"}[case]
    if case == "cycles_renderer":
        s.renderer = "cycles"
    with pytest.raises(align.JobSetupError, match=message):
        align.align_params(s, prefs, tmp_path)


def test_cycles_renderer_makes_a_ddpo_job(align, s, prefs, tmp_path):
    s.reward, s.method, s.renderer = "dnc", "ddpo", "cycles"
    try:
        params = align.align_params(s, prefs, tmp_path)
    finally:
        s.property_unset("method")
        s.property_unset("renderer")
    assert (params["method"], params["renderer"]) == ("ddpo", "cycles")


def test_align_operator_reports_bad_settings_and_leaves_no_job_folder(s, prefs):
    s.reward = "palette"
    jobs = Path(prefs.cache_dir) / "jobs"
    before = sorted(jobs.iterdir()) if jobs.is_dir() else []
    with pytest.raises(RuntimeError, match="Add at least one palette colour"):
        bpy.ops.nabla_r2d3.align()
    assert (sorted(jobs.iterdir()) if jobs.is_dir() else []) == before


def _training_output(folder: Path) -> dict:
    """What engine.align.job.run_alignment leaves in out_dir, and its report (files relative)."""
    adapter = folder / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    for name in ("reward_curve", "before_after"):
        img = bpy.data.images.new(name, 8, 8)
        img.save(filepath=str(folder / f"{name}.png"), save_copy=True)
        bpy.data.images.remove(img)
    (folder / "log.jsonl").write_text("{}\n")
    report = {"reward": "dnc", "method": "nabla", "rounds": 3, "reward_before": {"mean": 0.5, "std": 0.1},
              "reward_after": {"mean": 0.75, "std": 0.1}, "files": {"adapter": "adapter", "log": "log.jsonl",
              "reward_curve": "reward_curve.png", "before_after": "before_after.png"}}
    (folder / "report.json").write_text(json.dumps(report))
    return report


def test_trained_adapter_is_saved_listed_and_selected(registered, align, s, prefs, tmp_path):
    s.reward = "dnc"
    s.align_prompts = "a red cube"
    out_dir = tmp_path / "job" / "out"
    params = align.align_params(s, prefs, out_dir)
    folder = registered.blender.paths.adapters_dir(prefs)
    existing = {a.name for a in registered.blender.paths.list_adapters(folder)}
    name = align.adapter_name_for(s, params, existing)
    assert name.startswith("dnc_nabla_a_red_cube")
    data = _training_output(out_dir)
    meta = {k: params[k] for k in ("reward", "method", "prompts", "beta")}
    applier = align.AlignApplier(data, prefs, bpy.context.scene.name, name, meta, out_dir)
    assert applier.step() is True
    summary = applier.finish(push_undo=False)

    assert name in summary and "0.5 -> 0.75" in summary and s.adapter == name
    saved = folder / name
    assert (saved / "adapter_config.json").is_file() and (saved / "adapter_model.safetensors").stat().st_size == 64
    info = json.loads((saved / "nabla_r2d3.json").read_text())
    assert info["reward"] == "dnc" and info["prompts"] == ["a red cube"]
    assert info["result"]["reward_after"] == 0.75
    for file_name in ("reward_curve.png", "before_after.png", "align_log.jsonl", "report.json"):
        assert (saved / file_name).is_file(), file_name
    state = bpy.context.window_manager.nabla_r2d3
    item = next(a for a in state.adapters if a.name == name)
    assert item.summary.startswith("dnc | nabla | a red cube")
    assert state.reward_curve == str(saved / "reward_curve.png")
    assert [(p.name, p.path) for p in state.previews][-1:] == [(f"before / after ({name})", str(saved / "before_after.png"))]
    assert info["files"]["before_after"] == "before_after.png"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temp folders left"
    # the same name again gets a suffix instead of overwriting
    assert align.adapter_name_for(s, params, {name}) == name + "_2"


def test_align_result_without_adapter_is_an_error(align, prefs):
    with pytest.raises(RuntimeError, match="no adapter folder"):
        align.AlignApplier({"log_path": "/x"}, prefs, "Scene", "n", {})


def test_previews_and_live_reward_curve_from_a_running_job(registered, s, tmp_path):
    jobs = registered.blender.jobs
    manager = jobs.JobManager()
    job = jobs.Job("align", {}, "Align test", None, make_applier=lambda data: None)
    job.id = "job1"
    manager.active = job
    state = bpy.context.window_manager.nabla_r2d3
    manager._handle({"type": "preview", "id": "job1", "path": str(tmp_path / "before.png"), "label": "before"})
    # the kind decides, not the label: a "curve" in an image's label stays an image
    manager._handle({"type": "preview", "id": "job1", "path": str(tmp_path / "c.png"), "kind": "image", "label": "curve 2"})
    manager._handle({"type": "preview", "id": "job1", "path": str(tmp_path / "curve.png"), "kind": "curve", "label": "r"})
    manager._handle({"type": "preview", "id": "other", "path": str(tmp_path / "x.png"), "label": "late"})
    manager._handle({"type": "progress", "id": "job1", "fraction": 0.5, "message": "step 10/20"})
    manager._sync_state()
    assert [(p.name, p.path) for p in state.previews] == [("before", str(tmp_path / "before.png")),
                                                          ("curve 2", str(tmp_path / "c.png"))]
    assert state.reward_curve == str(tmp_path / "curve.png")
    assert (state.status, state.progress, state.message) == ("STARTING", 0.5, "step 10/20")
    for i in range(jobs.MAX_PREVIEWS + 5):
        manager._handle({"type": "preview", "id": "job1", "path": f"/p{i}.png", "label": f"p{i}"})
    assert len(state.previews) == jobs.MAX_PREVIEWS and state.previews[-1].name == f"p{jobs.MAX_PREVIEWS + 4}"
    manager.active = None
    manager._sync_state()


def test_an_adapter_whose_held_out_reward_fell_is_saved_but_not_selected(registered, align, s, prefs, tmp_path):
    """Align once said "Saved adapter ... and selected it for Generate (reward -0.3037 -> -0.4766)":
    a worse model, silently put in use. Now the previous selection stays, and a popup says why."""
    s.reward = "dnc"
    s.align_prompts = "a red cube"
    s.adapter = "earlier_good_one"
    out_dir = tmp_path / "job" / "out"
    params = align.align_params(s, prefs, out_dir)
    data = _training_output(out_dir)
    data["reward_after"] = {"mean": 0.3, "std": 0.1}  # below the base model's 0.5
    folder = registered.blender.paths.adapters_dir(prefs)
    name = align.adapter_name_for(s, params, {a.name for a in registered.blender.paths.list_adapters(folder)})
    applier = align.AlignApplier(data, prefs, bpy.context.scene.name, name, {"reward": "dnc"}, out_dir)

    jobs = registered.blender.jobs
    manager = jobs.JobManager()
    popups = []
    manager._popup = lambda text, icon='ERROR': popups.append((text, icon))
    job = jobs.Job("align", params, f"Align '{name}'", None, lambda d: applier)
    manager.active, manager.applier = job, applier
    manager._apply_slice()

    assert job.outcome == "done" and s.adapter == "earlier_good_one"  # kept
    expected = (f"Saved adapter '{name}' but did not select it: the held-out reward fell (reward 0.5 -> 0.3). "
                f"Generate keeps adapter 'earlier_good_one'; load '{name}' from the Adapters panel to use it anyway")
    assert job.message == manager.last_info == expected  # the Jobs panel's report
    assert popups == [(expected, 'INFO')]
    assert json.loads((folder / name / "nabla_r2d3.json").read_text())["selected_for_generate"] is False
    assert job.applied["selected"] is False

    s.property_unset("adapter")  # with nothing selected before, the base model is what Generate keeps
    data["reward_after"] = {"mean": 0.49, "std": 0.1}
    applier = align.AlignApplier(data, prefs, bpy.context.scene.name, name + "_b", {"reward": "dnc"}, out_dir)
    assert applier.step() is True
    assert "Generate keeps the base model" in applier.finish(push_undo=False) and s.adapter == ""
