"""The job cache: age and size limits applied when a job is submitted, the Clear Cache button, and
the folders neither may remove (running or queued jobs, GLBs objects name, previews shown)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import bpy


@pytest.fixture
def cache(registered, clean_scene, prefs):
    root = Path(prefs.cache_dir) / "jobs"
    yield registered.blender.cache, root
    prefs.property_unset("cache_max_gb")
    prefs.property_unset("cache_max_days")
    for obj in [o for o in bpy.data.objects if o.name.startswith("cache-test")]:
        bpy.data.objects.remove(obj)


def _job(root: Path, name: str, mb: float, age_days: float) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "asset.glb").write_bytes(b"\0" * int(mb * 1e6))
    when = time.time() - age_days * 86400
    os.utime(folder, (when, when))
    return folder


def test_limits_remove_old_then_oldest_but_never_what_is_in_use(cache, prefs):
    mod, root = cache
    old = _job(root, "generate-old", 1, 40)
    referenced_old = _job(root, "generate-ref", 1, 50)
    mid, new = _job(root, "generate-mid", 3, 5), _job(root, "generate-new", 3, 1)
    obj = bpy.data.objects.new("cache-test", None)
    obj["nabla_r2d3_glb"] = str(referenced_old / "asset.glb")
    bpy.context.scene.collection.objects.link(obj)
    used = mod.folders_in_use(root)
    assert referenced_old in used and old not in used

    result = mod.prune(root, used, mod.CacheLimits(max_bytes=int(4e6), max_age_s=30 * 86400))
    # old: over the age limit; mid: the oldest left while 7 MB > 4 MB; new fits; the referenced stays
    assert sorted(p.name for p in result.removed) == ["generate-mid", "generate-old"]
    assert referenced_old.is_dir() and new.is_dir() and not old.exists() and not mid.exists()
    assert result.kept_in_use == 1 and result.freed_bytes == 4_000_000


def test_submitting_a_job_prunes_with_the_preference_limits(cache, prefs, registered):
    mod, root = cache
    jobs = registered.blender.jobs
    stale = _job(root, "generate-stale", 0.1, 10)
    prefs.cache_max_days = 7
    manager = jobs.JobManager(client_factory=lambda *a, **k: None)
    manager._ensure_timer = lambda: None  # nothing runs: only the submit's bookkeeping is tested
    queued_dir = _job(root, "generate-queued", 0.1, 20)  # older than the limit, but it is the new job's
    manager.submit(jobs.Job("generate", {}, "queued", queued_dir, make_applier=lambda data: None))
    assert not stale.exists() and queued_dir.is_dir()


def test_clear_cache_operator_keeps_folders_in_use(cache, prefs):
    mod, root = cache
    shown, free = _job(root, "align-shown", 0.2, 0), _job(root, "generate-free", 0.2, 0)
    state = bpy.context.window_manager.nabla_r2d3
    item = state.previews.add()
    item.name, item.path = "round 3", str(shown / "asset.glb")
    assert bpy.ops.nabla_r2d3.clear_cache() == {"FINISHED"}
    assert shown.is_dir() and not free.exists()
    state.previews.clear()
    assert bpy.ops.nabla_r2d3.clear_cache() == {"FINISHED"}
    assert not shown.exists()
    assert bpy.ops.nabla_r2d3.clear_cache() == {"FINISHED"}  # an empty (or missing) cache is fine
