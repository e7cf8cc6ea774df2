"""Generate end to end through bpy.ops with the real engine worker (python -m engine.worker): the
synchronous path of background Blender, the timer-driven path of the UI, cancel, crash, bad input."""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bpy

from engine.generate.records import GenerateResult

FAST = dict(steps=4)  # few sampling steps: these tests check plumbing, not quality


@pytest.fixture
def gen(registered, clean_scene, prefs):
    bpy.context.scene.nabla_r2d3.steps = FAST["steps"]
    yield registered
    s = bpy.context.scene.nabla_r2d3  # fetched again: an undo in the test frees the old reference
    s.property_unset("steps")
    s.property_unset("count")
    prefs.engine_python = ""
    jobs = registered.blender.jobs
    jobs.MANAGER.shutdown() if jobs.MANAGER.busy else None


def _nabla_objects():
    return sorted((o for o in bpy.data.objects if "nabla_r2d3_prompt" in o), key=lambda o: o.name)


def _job_dirs(prefs) -> list[Path]:
    root = Path(prefs.cache_dir) / "jobs"
    return sorted(root.iterdir()) if root.is_dir() else []


def _drive(manager, until, timeout=120.0):
    """Stand in for Blender's event loop: call the timer callback at the interval it asks for."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        interval = manager.tick()
        time.sleep(min(interval or 0.05, 0.05))


def test_generate_in_background_returns_with_the_objects_in_the_scene(gen, prefs):
    assert bpy.app.background
    bpy.context.scene.cursor.location = (10.0, 0.0, 0.0)
    try:
        assert bpy.ops.nabla_r2d3.generate(prompt="a red cube", count=3, seed=7) == {"FINISHED"}
    finally:
        bpy.context.scene.cursor.location = (0.0, 0.0, 0.0)
    objs = _nabla_objects()
    assert [o.name for o in objs] == [f"a red cube (seed {s})" for s in (7, 8, 9)]
    coll = bpy.data.collections["Nabla-R2D3 a red cube"]
    assert set(coll.objects) == set(objs) and coll.name in bpy.context.scene.collection.children

    job = gen.blender.jobs.MANAGER.finished[-1]
    assert job.outcome == "done" and job.applied["objects"] == [o.name for o in objs]
    result = GenerateResult.from_json(job.result)  # the one generate schema, with out_dir
    assert result.formats == ["npz", "glb"] and Path(result.out_dir).is_dir()
    for obj, record in zip(objs, result.assets):
        glb_path = str(record.path("glb", result.out_dir))
        with np.load(record.path("npz", result.out_dir)) as data:
            assert len(obj.data.vertices) == len(data["vertices"]) > 100
            assert len(obj.data.polygons) == len(data["faces"])
            assert str(data["color_space"]) == "linear"
            linear = data["colors"][:, :3]
        assert Path(glb_path).is_file() and obj["nabla_r2d3_glb"] == glb_path
        attr = obj.data.color_attributes["Color"]
        colours = np.empty(len(attr.data) * 4, np.float32)
        attr.data.foreach_get("color", colours)  # scene-linear view of the attribute
        np.testing.assert_allclose(colours.reshape(-1, 4)[:, :3], linear, atol=0.01)
        mean = linear.mean(0)
        assert mean[0] > mean[1] and mean[0] > mean[2], f"a red cube is not red: {mean}"
        assert obj.data.materials[0].node_tree.nodes["Color Attribute"].layer_name == "Color"
    xs = sorted(round(o.location.x, 3) for o in objs)
    assert xs[0] == 10.0, "the grid starts at the 3D cursor"
    assert bpy.context.window_manager.nabla_r2d3.status == "IDLE"
    assert "Added 3 assets" in bpy.context.window_manager.nabla_r2d3.last_info


def test_generate_from_the_ui_is_timer_driven_and_undoable(gen, prefs, monkeypatch):
    jobs = gen.blender.jobs
    monkeypatch.setattr(jobs, "run_synchronously", lambda: False)
    manager = jobs.MANAGER
    bpy.ops.ed.undo_push(message="before generate")
    before = {o.name for o in bpy.data.objects}
    state = bpy.context.window_manager.nabla_r2d3

    assert bpy.ops.nabla_r2d3.generate(prompt="a blue torus", count=2, seed=0) == {"FINISHED"}
    assert bpy.app.timers.is_registered(manager.timer_function), "the job runs from a timer"
    assert not _nabla_objects(), "the operator returns before the job is done"
    assert manager.busy
    manager.tick_durations.clear()
    seen = set()

    def done():
        seen.add(state.status)
        return not manager.busy

    _drive(manager, done)
    bpy.app.timers.unregister(manager.timer_function)
    assert "RUNNING" in seen or "STARTING" in seen
    assert [o.name for o in _nabla_objects()] == ["a blue torus (seed 0)", "a blue torus (seed 1)"]
    assert state.status == "IDLE" and state.progress == 0.0 and state.last_error == ""
    # longest main-thread stall while the job ran (generous bound: this machine is shared)
    assert max(manager.tick_durations) < 0.25, max(manager.tick_durations)

    bpy.ops.ed.undo()  # the timer pushed an undo step after importing
    assert {o.name for o in bpy.data.objects} == before
    bpy.ops.ed.redo()
    assert len(_nabla_objects()) == 2


def test_cancel_mid_job_leaves_no_files_and_resets_the_ui(gen, prefs, monkeypatch):
    jobs = gen.blender.jobs
    monkeypatch.setattr(jobs, "run_synchronously", lambda: False)
    manager = jobs.MANAGER
    state = bpy.context.window_manager.nabla_r2d3
    dirs_before = _job_dirs(prefs)
    bpy.context.scene.nabla_r2d3.steps = 200
    assert bpy.ops.nabla_r2d3.generate(prompt="a green cone", count=8, seed=0) == {"FINISHED"}
    _drive(manager, lambda: state.status == "RUNNING" and "step" in state.message)  # sampling
    (job_dir,) = set(_job_dirs(prefs)) - set(dirs_before)

    t0 = time.monotonic()
    assert bpy.ops.nabla_r2d3.cancel_job() == {"FINISHED"}
    assert state.status == "CANCELLING"
    _drive(manager, lambda: not manager.busy, timeout=30)
    took = time.monotonic() - t0
    bpy.app.timers.unregister(manager.timer_function)

    assert took < jobs.CANCEL_GRACE_S + 1.0, took
    assert manager.finished[-1].outcome == "cancelled"
    assert not job_dir.exists(), "the cancelled job's folder is removed"
    assert _job_dirs(prefs) == dirs_before, "no partial files anywhere in the cache"
    assert not _nabla_objects() and not [c for c in bpy.data.collections if c.name.startswith("Nabla-R2D3")]
    assert (state.status, state.progress, state.message, state.job_label) == ("IDLE", 0.0, "", "")
    assert manager.client is not None and manager.client.alive, "cancelling a job keeps the engine loaded"


def test_bad_prompt_is_refused_with_the_vocabulary_and_nothing_is_left(gen, prefs):
    dirs_before = _job_dirs(prefs)
    with pytest.raises(RuntimeError, match="'elephant' is not in the vocabulary"):
        bpy.ops.nabla_r2d3.generate(prompt="a purple elephant", count=1)
    assert not _nabla_objects() and _job_dirs(prefs) == dirs_before
    assert "elephant" in bpy.context.window_manager.nabla_r2d3.last_error


def test_missing_engine_python_is_a_clear_error(gen, prefs):
    prefs.engine_python = "/nonexistent/bin/python"
    with pytest.raises(RuntimeError, match="Engine Python '/nonexistent/bin/python' does not exist"):
        bpy.ops.nabla_r2d3.generate(prompt="a red cube", count=1)
    assert not _nabla_objects()


def test_worker_env_is_offline_unless_blender_allows_online_access(gen, prefs, monkeypatch):
    engine_python = gen.blender.engine_python
    assert bpy.app.online_access is False
    env = engine_python.worker_env(prefs, "/usr/bin/python3")
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(engine_python.ADDON_ROOT)


def test_generate_params_follow_the_settings(gen, prefs):
    generate = gen.blender.generate
    s = bpy.context.scene.nabla_r2d3
    req = generate.GenerateRequest.from_settings(s, prompt="a torus", count=2, seed=3)
    params = generate.generate_params(req, prefs, Path("/tmp/out"))
    assert params == {"prompt": "a torus", "count": 2, "seed": 3, "steps": 4, "scheduler": "ddim", "out_dir": "/tmp/out",
                      "formats": ["npz", "glb"],  # the arrays the object is built from, the GLB it links to
                      "device": "auto"}  # Automatic: the engine picks CUDA, then MPS, then CPU
    s.use_guidance, s.guidance = True, 4.5
    prefs.device = "CPU"
    try:
        params = generate.generate_params(generate.GenerateRequest.from_settings(s), prefs, Path("/tmp/out"))
        assert params["guidance"] == 4.5 and params["device"] == "cpu" and params["prompt"] == s.prompt
        s.adapter = "missing"
        with pytest.raises(generate.JobSetupError, match="Adapter 'missing' is not in"):
            generate.generate_params(generate.GenerateRequest.from_settings(s), prefs, Path("/tmp/out"))
        s.adapter = ""
        with pytest.raises(TypeError):  # Shap-E's sampler: the embedded model's menu does not offer it
            s.scheduler = "heun"
        # and a request that names it anyway (a script, batch mode) is refused before any job starts
        heun = dataclasses.replace(generate.GenerateRequest.from_settings(s), scheduler="heun")
        with pytest.raises(generate.JobSetupError, match="model 'embedded' samples with ddim, ddpm, dpmsolver-sde, "
                                                          "not 'heun': choose another Sampler"):
            generate.generate_params(heun, prefs, Path("/tmp/out"))
    finally:
        for name in ("use_guidance", "guidance", "adapter"):
            s.property_unset(name)
        prefs.property_unset("device")


def test_a_worker_crash_becomes_an_error_and_the_scene_is_untouched(gen, prefs, monkeypatch):
    jobs = gen.blender.jobs
    monkeypatch.setattr(jobs, "run_synchronously", lambda: False)
    manager = jobs.MANAGER
    state = bpy.context.window_manager.nabla_r2d3
    dirs_before = _job_dirs(prefs)
    bpy.context.scene.nabla_r2d3.steps = 200
    assert bpy.ops.nabla_r2d3.generate(prompt="a white sphere", count=8, seed=0) == {"FINISHED"}
    _drive(manager, lambda: state.status == "RUNNING" and "step" in state.message)  # sampling
    os.kill(manager.client.info["pid"], signal.SIGKILL)  # as the kernel's out-of-memory killer would
    _drive(manager, lambda: not manager.busy, timeout=30)
    bpy.app.timers.unregister(manager.timer_function)

    assert manager.finished[-1].outcome == "error"
    assert "crashed" in state.last_error and "SIGKILL" in state.last_error
    assert state.status == "IDLE" and not _nabla_objects() and _job_dirs(prefs) == dirs_before
    # the next job starts a fresh engine
    monkeypatch.setattr(jobs, "run_synchronously", lambda: True)
    bpy.context.scene.nabla_r2d3.steps = 4
    assert bpy.ops.nabla_r2d3.generate(prompt="a white sphere", count=1) == {"FINISHED"}
    assert len(_nabla_objects()) == 1 and state.last_error == ""


def test_adapter_and_blend_weight_reach_the_params(gen, prefs):
    generate = gen.blender.generate
    s = bpy.context.scene.nabla_r2d3
    folder = gen.blender.paths.adapters_dir(prefs) / "warm"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    s.adapter = "warm"
    try:
        params = generate.generate_params(generate.GenerateRequest.from_settings(s), prefs, Path("/tmp/out"))
        assert params["adapter"] == str(folder) and "adapter_weight" not in params
        s.adapter_weight = 0.5
        params = generate.generate_params(generate.GenerateRequest.from_settings(s), prefs, Path("/tmp/out"))
        assert params["adapter_weight"] == 0.5
    finally:
        s.property_unset("adapter")
        s.property_unset("adapter_weight")


def test_check_engine_operator(gen, prefs, tmp_path):
    assert bpy.ops.nabla_r2d3.check_engine() == {"FINISHED"}  # this venv's Python has torch
    no_torch = tmp_path / "python"
    # the same interpreter without site-packages (-S) and ignoring PYTHONPATH (-I): a Python without torch
    no_torch.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    no_torch.chmod(0o755)
    prefs.engine_python = str(no_torch)
    with pytest.raises(RuntimeError, match="cannot import torch"):
        bpy.ops.nabla_r2d3.check_engine()


def test_esc_in_the_watcher_cancels_running_and_queued_jobs(gen, prefs):
    jobs = gen.blender.jobs
    watcher = gen.operators.jobs.NABLA_R2D3_OT_watch_jobs
    manager = jobs.MANAGER
    queued = []
    for i in range(2):
        job_dir = gen.blender.paths.new_job_dir(prefs, "generate")
        queued.append(jobs.Job("generate", {}, f"job {i}", job_dir, make_applier=lambda data: None))
        manager.queue.append(queued[-1])
    fake_self = type("Op", (), {"report": lambda self, *a: None})()
    key = type("Event", (), {"type": "A", "value": "PRESS"})()
    esc = type("Event", (), {"type": "ESC", "value": "PRESS"})()
    assert watcher.modal(fake_self, bpy.context, key) == {"PASS_THROUGH"}
    assert manager.busy
    assert watcher.modal(fake_self, bpy.context, esc) == {"FINISHED"}
    assert not manager.busy and [j.outcome for j in queued] == ["cancelled", "cancelled"]
    assert not any(j.job_dir.exists() for j in queued)


def test_without_keep_engine_loaded_the_worker_exits_when_idle(gen, prefs, monkeypatch):
    jobs = gen.blender.jobs
    monkeypatch.setattr(jobs, "run_synchronously", lambda: False)
    manager = jobs.MANAGER
    prefs.keep_engine_loaded = False
    try:
        assert bpy.ops.nabla_r2d3.generate(prompt="a yellow cylinder", count=1) == {"FINISHED"}
        _drive(manager, lambda: not manager.busy)
        client = manager.client
        assert client is not None and manager.tick() is None, "idle: the timer ends itself"
        bpy.app.timers.unregister(manager.timer_function)
        assert manager.client is None
        deadline = time.monotonic() + 15
        while client.alive and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not client.alive, "the worker process exited (its memory is freed)"
        assert len(_nabla_objects()) == 1
    finally:
        prefs.property_unset("keep_engine_loaded")


def _fake_venv(root: Path) -> Path:
    """A venv over this interpreter's base Python, with an empty site-packages: no torch."""
    base = os.path.realpath(sys.executable)
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(base)
    (root / "pyvenv.cfg").write_text(f"home = {os.path.dirname(base)}\ninclude-system-site-packages = false\n")
    site = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    site.mkdir(parents=True)
    return site


def test_engine_python_check_follows_the_venv_not_its_base_interpreter(gen, prefs, tmp_path, monkeypatch):
    engine_python = gen.blender.engine_python
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the worker's PYTHONPATH would hide the venv's own
    with_torch, without = _fake_venv(tmp_path / "a"), _fake_venv(tmp_path / "b")
    ours = next(p for p in sys.path if p.endswith("site-packages") and (Path(p) / "torch").is_dir())
    (with_torch / "ours.pth").write_text(ours + "\n")

    prefs.engine_python = str(tmp_path / "a" / "bin" / "python")
    assert engine_python.resolve(prefs) == prefs.engine_python
    # Same base interpreter file, another environment: its own check, not venv a's cached success.
    prefs.engine_python = str(tmp_path / "b" / "bin" / "python")
    with pytest.raises(engine_python.EnginePythonError, match="cannot import torch.*press Check Engine Python"):
        engine_python.resolve(prefs)
    assert engine_python.status_icon(prefs) == "ERROR"
    # The user installs torch into venv b: the next job start sees it without pressing anything.
    (without / "ours.pth").write_text(ours + "\n")
    assert engine_python.resolve(prefs) == prefs.engine_python
    assert engine_python.status_icon(prefs) == "CHECKMARK"


def test_local_folder_model_source_sends_the_model_and_its_folder(gen, prefs, tmp_path):
    generate = gen.blender.generate
    req = generate.GenerateRequest.from_settings(bpy.context.scene.nabla_r2d3)
    try:
        prefs.model_source = "LOCAL"
        with pytest.raises(generate.JobSetupError, match="no Model Folder is set"):
            generate.generate_params(req, prefs, tmp_path / "out")
        prefs.model_path = str(tmp_path / "missing")
        with pytest.raises(generate.JobSetupError, match="is not a folder"):
            generate.generate_params(req, prefs, tmp_path / "out")
        prefs.model_path = str(tmp_path)
        params = generate.generate_params(req, prefs, tmp_path / "out")
        assert (params["model"], params["model_path"]) == ("embedded", str(tmp_path))
    finally:
        prefs.property_unset("model_source")
        prefs.property_unset("model_path")
    assert "model" not in generate.generate_params(req, prefs, tmp_path / "out")  # embedded: the bundled weights


def test_local_folder_generate_runs_the_worker_on_that_folder(gen, prefs, tmp_path):
    """The Local-folder source end to end: the worker loads the weights from the folder set in the
    preferences, and the assets arrive in the scene."""
    import shutil

    from engine.models.embedded.model import WEIGHTS_DIR

    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    prefs.model_source, prefs.model_path = "LOCAL", str(copy)
    s = bpy.context.scene.nabla_r2d3
    s.prompt, s.count = "a green cone", 1
    try:
        assert bpy.ops.nabla_r2d3.generate() == {"FINISHED"}
        objs = _nabla_objects()
        assert [o["nabla_r2d3_prompt"] for o in objs] == ["a green cone"] and len(objs[0].data.vertices) > 0
        for f in copy.iterdir():  # the weights came from the folder: with them gone the next job says so
            f.unlink()
        with pytest.raises(RuntimeError, match="embedded model weights not found"):
            bpy.ops.nabla_r2d3.generate()
    finally:
        prefs.property_unset("model_source")
        prefs.property_unset("model_path")
        s.property_unset("prompt")


def test_a_shap_e_folder_generates_open_vocabulary_assets_into_the_scene(gen, prefs, tiny_shap_e):
    """The Local-folder source with the Shap-E kind: an open prompt (no grammar) reaches the worker,
    which loads Shap-E from the folder; the assets arrive in the scene."""
    prefs.model_source, prefs.model_kind, prefs.model_path = "LOCAL", "shap-e", str(tiny_shap_e)
    s = bpy.context.scene.nabla_r2d3
    s.prompt, s.count, s.steps = "a wooden chair with armrests", 1, 2
    try:
        assert bpy.ops.nabla_r2d3.generate() == {"FINISHED"}
        objs = _nabla_objects()
        assert [o["nabla_r2d3_prompt"] for o in objs] == ["a wooden chair with armrests"]
        assert len(objs[0].data.vertices) > 0
    finally:
        for name in ("model_source", "model_kind", "model_path"):
            prefs.property_unset(name)
        for name in ("prompt", "count", "steps"):
            s.property_unset(name)


def test_a_diffsplat_folder_generates_assets_into_the_scene(gen, prefs, tiny_diffsplat):
    """The Local-folder source with the DiffSplat kind: the worker loads DiffSplat from the folder,
    meshes its splats, and the assets arrive in the scene."""
    prefs.model_source, prefs.model_kind, prefs.model_path = "LOCAL", "diffsplat", str(tiny_diffsplat)
    s = bpy.context.scene.nabla_r2d3
    s.prompt, s.count, s.steps = "a wooden chair with armrests", 2, 2
    try:
        assert bpy.ops.nabla_r2d3.generate() == {"FINISHED"}
        objs = _nabla_objects()
        assert [o["nabla_r2d3_prompt"] for o in objs] == ["a wooden chair with armrests"] * 2
        assert all(len(o.data.vertices) > 0 for o in objs)
    finally:
        for name in ("model_source", "model_kind", "model_path"):
            prefs.property_unset(name)
        for name in ("prompt", "count", "steps"):
            s.property_unset(name)
