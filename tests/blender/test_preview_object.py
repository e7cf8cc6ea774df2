"""An align job's live preview object: ``.npz`` preview messages create one object next to the 3D
cursor and swap its mesh (no orphan meshes); ``.png`` previews still go to the Previews panel; a bad
mesh file is an error line in the Jobs panel, not an exception; cancel and error remove the object.

Messages are fed to a :class:`JobManager` as the worker's client would deliver them; the mesh files
come from the engine's own writer (``engine.geometry.mesh.save_npz``), run in a subprocess because
Blender's process never imports torch."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bpy

ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from engine.geometry.mesh import Mesh, save_npz

    out = sys.argv[1]
    tetra = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32),
                 np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]),
                 np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]], np.float32))
    octa_v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    octa_f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    octa = Mesh(octa_v, octa_f, np.full((6, 3), 0.5, np.float32))
    save_npz(tetra, f"{out}/round_0005.npz")
    save_npz(octa, f"{out}/round_0010.npz")
    print(json.dumps({"tetra": tetra.vertices.tolist(), "octa": octa.vertices.tolist()}))
    """
)


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    """Two preview meshes as the worker writes them: a tetrahedron (4 vertices), an octahedron (6)."""
    folder = tmp_path_factory.mktemp("previews")
    done = subprocess.run([sys.executable, "-c", WRITER, str(folder)], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    verts = json.loads(done.stdout.splitlines()[-1])
    return {"tetra": folder / "round_0005.npz", "octa": folder / "round_0010.npz",
            "tetra_vertices": np.array(verts["tetra"], np.float32), "octa_vertices": np.array(verts["octa"], np.float32)}


def _previews():
    return [o for o in bpy.data.objects if "nabla_r2d3_preview_token" in o]


@pytest.fixture
def env(registered, clean_scene):
    """A JobManager with one running align job (id "job1") whose previews go next to the cursor."""
    jobs = registered.blender.jobs
    scene = clean_scene
    cursor = tuple(scene.cursor.location)
    scene.cursor.location = (1.0, 2.0, 3.0)
    manager = jobs.JobManager()
    job = jobs.Job("align", {}, "Align test", None, make_applier=lambda data: None)
    job.id = "job1"
    job.preview_object = registered.blender.preview_object.PreviewObject.for_scene(scene, "dnc_test")
    manager.active = job
    yield manager, job, bpy.context.window_manager.nabla_r2d3
    scene.cursor.location = cursor
    ids = _previews()
    ids += [m for m in bpy.data.meshes if m.users == 0]
    bpy.data.batch_remove(ids)


def _preview(manager, path, label="p"):
    manager._handle({"type": "preview", "id": "job1", "path": str(path), "label": label})


def _vertices(obj):
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def test_npz_previews_create_one_object_and_swap_its_mesh(env, meshes):
    manager, job, state = env
    _preview(manager, meshes["tetra"], "a red cube #0 after round 5")
    (obj,) = _previews()
    assert obj.name == "Nabla-R2D3 Preview dnc_test"
    assert [c.name for c in obj.users_collection] == ["Nabla-R2D3 Previews"]
    assert "Nabla-R2D3 Previews" in bpy.context.scene.collection.children
    assert tuple(obj.location) == pytest.approx((1.0 - 3.0, 2.0, 3.0))  # cursor + offset
    np.testing.assert_allclose(_vertices(obj), meshes["tetra_vertices"])
    assert len(obj.data.polygons) == 4
    assert obj.data.materials[0].get("nabla_r2d3_vertex_colour")  # the generated assets' material
    assert obj.data.color_attributes.active_color_name == "Color"
    assert (obj["nabla_r2d3_preview"], obj["nabla_r2d3_adapter"]) == ("a red cube #0 after round 5", "dnc_test")
    assert len(state.previews) == 0 and state.last_error == ""  # meshes are not thumbnails
    meshes_before = len(bpy.data.meshes)
    first_mesh = obj.data.name

    _preview(manager, meshes["octa"], "a red cube #0 after round 10")
    (obj,) = _previews()
    assert obj.name == "Nabla-R2D3 Preview dnc_test"
    np.testing.assert_allclose(_vertices(obj), meshes["octa_vertices"])
    assert (len(obj.data.vertices), len(obj.data.polygons)) == (6, 8)
    assert obj.data.name == "a red cube #0 after round 10" and obj["nabla_r2d3_preview"] == obj.data.name
    assert first_mesh not in bpy.data.meshes, "the replaced mesh is removed"
    assert len(bpy.data.meshes) == meshes_before
    assert [m.name for m in bpy.data.meshes if m.users == 0] == []

    # thumbnails still go to the Previews panel
    _preview(manager, Path(meshes["tetra"]).with_suffix(".png"), "a red cube #0 after round 10")
    assert [p.path for p in state.previews] == [str(Path(meshes["tetra"]).with_suffix(".png"))]
    # a finished job leaves the preview showing its last mesh
    manager._end(job, "done", "Saved adapter")
    assert [o.name for o in _previews()] == ["Nabla-R2D3 Preview dnc_test"]


def test_a_deleted_preview_object_is_made_again_and_a_foreign_one_is_left_alone(env, meshes):
    manager, job, _state = env
    _preview(manager, meshes["tetra"])
    bpy.data.objects.remove(_previews()[0])  # the user deletes it (or an undo takes it away)
    # a user object that takes the freed name is not ours: it must not be touched
    mine = bpy.data.objects.new("Nabla-R2D3 Preview dnc_test", None)
    try:
        _preview(manager, meshes["octa"])
        (obj,) = _previews()
        assert obj != mine and obj.name.startswith("Nabla-R2D3 Preview dnc_test.")
        assert len(obj.data.vertices) == 6 and mine.data is None and "nabla_r2d3_preview" not in mine
    finally:
        bpy.data.objects.remove(mine)


@pytest.mark.parametrize("ending", ["cancel", "error"])
def test_cancel_or_error_removes_the_preview_object(env, meshes, ending):
    manager, job, state = env
    _preview(manager, meshes["tetra"])
    mesh_name = _previews()[0].data.name
    if ending == "cancel":
        assert manager.cancel_active()  # no worker: ends at once
    else:
        manager._handle({"type": "error", "id": "job1", "message": "out of memory"})
    assert job.outcome == {"cancel": "cancelled", "error": "error"}[ending]
    assert _previews() == [] and mesh_name not in bpy.data.meshes
    assert "Nabla-R2D3 Previews" not in bpy.data.collections  # emptied, so removed
    _preview(manager, meshes["octa"])  # a late message of the ended job changes nothing
    assert _previews() == []


class _FakeClient:
    """What the manager reads from the worker's client: queued messages, alive."""

    def __init__(self, messages):
        self.messages, self.alive = list(messages), True

    def poll(self):
        out, self.messages = self.messages, []
        return out


@pytest.mark.parametrize("bad", ["missing", "wrong_arrays", "not_npz"])
def test_a_bad_preview_mesh_is_reported_and_the_job_goes_on(env, meshes, tmp_path, bad):
    manager, job, state = env
    _preview(manager, meshes["tetra"], "round 5")
    path = tmp_path / f"{bad}.npz"
    if bad == "wrong_arrays":
        np.savez(path, vertices=np.zeros((3, 2), np.float32), faces=np.zeros((1, 3), np.int32),
                 colors=np.zeros((3, 4), np.float32))
    elif bad == "not_npz":
        path.write_text("not a zip file")
    manager.client = _FakeClient([{"type": "preview", "id": "job1", "path": str(path), "label": "round 10"}])
    manager.tick()  # the timer: must not raise, must not end the job

    assert job.outcome == "" and manager.active is job
    assert state.last_error.startswith(f"Preview mesh {path.name} not shown:")
    (obj,) = _previews()  # the object keeps its last good mesh
    assert len(obj.data.vertices) == 4 and obj["nabla_r2d3_preview"] == "round 5"
    assert [m.name for m in bpy.data.meshes if m.users == 0] == []
    # the next good preview clears the error line
    manager.client = _FakeClient([{"type": "preview", "id": "job1", "path": str(meshes["octa"]), "label": "round 15"}])
    manager.tick()
    assert state.last_error == "" and len(_previews()[0].data.vertices) == 6
    manager.client = None


def test_a_job_without_a_target_previews_next_to_the_current_cursor(env, meshes):
    manager, job, _state = env
    job.preview_object = None
    _preview(manager, meshes["octa"])
    (obj,) = _previews()
    assert obj.name == "Nabla-R2D3 Preview" and tuple(obj.location) == pytest.approx((-2.0, 2.0, 3.0))


def test_align_job_targets_the_cursor_when_it_was_made(registered, clean_scene, prefs):
    s = clean_scene.nabla_r2d3
    cursor = tuple(clean_scene.cursor.location)
    s.reward, s.align_prompts = "dnc", "a red cube"
    clean_scene.cursor.location = (0.0, 5.0, 0.0)
    job = registered.blender.align.make_job(bpy.context, prefs)
    try:
        target = job.preview_object
        assert target.scene_name == clean_scene.name and target.location == pytest.approx((-3.0, 5.0, 0.0))
        assert target.name == "Nabla-R2D3 Preview " + job.label.split("'")[1]
    finally:
        shutil.rmtree(job.job_dir, ignore_errors=True)
        clean_scene.cursor.location = cursor
        for name in ("reward", "align_prompts"):
            s.property_unset(name)
