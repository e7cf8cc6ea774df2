"""The worker's jobs called in-process: parameter validation, progress, the align and adapter hooks."""
import json
import os
import struct
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import trimesh

from engine.models.embedded.grammar import COLOURS, SHAPES, PromptError
from engine.geometry.mesh import Mesh, save_npz, srgb_to_linear
from engine.sampling.sampler import Cancelled
from engine.generate import job as generate_job_module
from engine.worker import jobs
from engine.worker.jobs import JobContext, ModelCache, generate_job
from engine.worker.protocol import BadInput


def sink():
    sent = []
    return sent, sent.append


def test_generate_params_defaults(tmp_path):
    p = generate_job({"prompt": "a red cube", "out_dir": str(tmp_path / "new")})
    assert (p.count, p.seed, p.steps, p.guidance, p.scheduler, p.adapter) == (1, 0, 20, None, "ddim", None)
    assert generate_job({"prompt": "a red cube", "out_dir": str(tmp_path), "guidance": None}).guidance is None
    assert generate_job({"prompt": "a red cube", "out_dir": str(tmp_path), "steps": 4.0}).steps == 4


def test_prompt_outside_vocabulary_lists_the_vocabulary(tmp_path):
    with pytest.raises(PromptError) as info:
        generate_job({"prompt": "a shiny cube", "out_dir": str(tmp_path / "o")})
    assert "'shiny' is not in the vocabulary" in str(info.value)
    assert all(w in str(info.value) for w in (*COLOURS, *SHAPES))


@pytest.mark.parametrize(
    "change, words",
    [
        ({"out_dir": "relative/dir"}, "absolute"),
        ({"count": 0}, "count must be in 1..256"),
        ({"count": True}, "count must be an integer"),
        ({"steps": 4.5}, "steps must be an integer"),
        ({"guidance": "high"}, "guidance must be a finite number"),
        ({"eta": 2.0}, "eta must be in"),
        ({"eta": None}, "eta must be a finite number"),
        ({"scheduler": "euler"}, "scheduler must be one of ddim, ddpm, dpmsolver-sde"),
        ({"scheduler": "heun"}, "model 'embedded' samples with ddim, ddpm, dpmsolver-sde, not 'heun'"),
        ({"adapter": "/no/such/adapter.safetensors"}, "existing adapter"),
        ({"stpes": 4}, "unknown parameter(s) stpes"),
        ({"prompt": 3}, "prompt must be a string"),
    ],
)
def test_bad_generate_params_are_refused(tmp_path, change, words):
    params = {"prompt": "a red cube", "out_dir": str(tmp_path / "o"), **change}
    with pytest.raises(BadInput) as info:
        generate_job(params)
    assert words in str(info.value)


def test_missing_out_dir_and_non_empty_out_dir_are_refused(tmp_path):
    with pytest.raises(BadInput, match="missing parameter"):
        generate_job({"prompt": "a red cube"})
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(BadInput, match="is not empty"):
        generate_job({"prompt": "a red cube", "out_dir": str(tmp_path)})


def test_progress_is_clamped_monotone_and_throttled():
    sent, send = sink()
    ctx = JobContext("j", send, min_interval=3600.0)
    ctx.progress(0.2, "a")
    ctx.progress(0.5, "throttled")
    ctx.progress(0.1, "throttled too")
    ctx.progress(1.5, "done")
    assert [(m["fraction"], m["message"]) for m in sent] == [(0.2, "a"), (1.0, "done")]
    sent.clear()
    ctx = JobContext("j", send, min_interval=0.0)
    for f in (0.3, 0.1, float("nan"), 0.6):
        ctx.progress(f)
    assert [m["fraction"] for m in sent] == [0.3, 0.3, 0.6]  # never goes down; NaN dropped


def test_check_cancel_raises_the_engine_cancelled():
    flag = {"on": False}
    ctx = JobContext("j", lambda m: None, lambda: flag["on"])
    ctx.check_cancel()
    flag["on"] = True
    with pytest.raises(Cancelled):
        ctx.check_cancel()


def test_npz_for_blender_holds_z_up_vertices_int32_faces_and_linear_rgba(tmp_path):
    rng = np.random.default_rng(0)
    mesh = Mesh(rng.normal(size=(5, 3)), [[0, 1, 2], [2, 3, 4]], rng.uniform(size=(5, 3)))
    save_npz(mesh, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        assert f["vertices"].dtype == np.float32 and np.array_equal(f["vertices"], mesh.vertices)
        assert f["faces"].dtype == np.int32 and f["faces"].tolist() == [[0, 1, 2], [2, 3, 4]]
        assert f["colors"].dtype == np.float32 and f["colors"].shape == (5, 4)
        np.testing.assert_allclose(f["colors"][:, :3], srgb_to_linear(mesh.colors), atol=1e-6)
        assert np.all(f["colors"][:, 3] == 1.0) and str(f["color_space"]) == "linear"


def use_align(monkeypatch, module, **submodules):
    """Make ``engine.align`` (and ``engine.align.<name>``) the given stand-ins; None: not importable."""
    import engine

    monkeypatch.setitem(sys.modules, "engine.align", module)
    for name in ("job", "lora"):
        monkeypatch.setitem(sys.modules, f"engine.align.{name}", submodules.get(name))
        if module is not None and name in submodules:
            setattr(module, name, submodules[name])
    if module is None:
        monkeypatch.delattr(engine, "align", raising=False)
    else:
        monkeypatch.setattr(engine, "align", module, raising=False)


def fake_module(name, **attrs):
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so submodule imports look in sys.modules
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def test_align_job_forwards_params_progress_previews_and_cancel(monkeypatch, tmp_path):
    calls = {}

    def run_alignment(params, progress, should_cancel, preview):
        calls["params"], calls["cancel_seen"] = params, should_cancel()
        progress(0.5, "half")
        preview(tmp_path / "p.png", "step 1")
        preview(tmp_path / "p.npz", "step 1")
        preview(tmp_path / "reward_curve.png", "reward curve after round 1")
        return {"adapter_path": "/x"}

    use_align(monkeypatch, fake_module("engine.align", run_alignment=run_alignment))
    sent, send = sink()
    data = jobs.run_align({"prompt": "a red cube"}, JobContext("j", send, lambda: True, min_interval=0.0))
    assert data == {"adapter_path": "/x"}
    assert calls == {"params": {"prompt": "a red cube"}, "cancel_seen": True}
    assert sent == [
        {"type": "progress", "id": "j", "fraction": 0.5, "message": "half"},
        {"type": "preview", "id": "j", "path": str(tmp_path / "p.png"), "kind": "image", "label": "step 1"},
        {"type": "preview", "id": "j", "path": str(tmp_path / "p.npz"), "kind": "mesh", "label": "step 1"},
        # the curve says so: the Blender layer no longer looks for "curve" in the label
        {"type": "preview", "id": "j", "path": str(tmp_path / "reward_curve.png"), "kind": "curve",
         "label": "reward curve after round 1"},
    ]


def test_align_value_error_is_bad_input_only_before_work_starts(monkeypatch):
    def refuse(params, progress, should_cancel, preview):
        raise ValueError("unknown alignment parameter(s) stpes")

    def fail_later(params, progress, should_cancel, preview):
        progress(0.1, "training")
        raise ValueError("a numerical problem in round 3")

    use_align(monkeypatch, fake_module("engine.align", run_alignment=refuse))
    with pytest.raises(BadInput, match="stpes"):
        jobs.run_align({"stpes": 1}, JobContext("j", lambda m: None))
    use_align(monkeypatch, fake_module("engine.align", run_alignment=fail_later))
    with pytest.raises(ValueError, match="round 3") as info:
        jobs.run_align({}, JobContext("j", lambda m: None))
    assert not isinstance(info.value, BadInput)  # reported as runtime


def test_unusable_adapter_is_bad_input(monkeypatch, tmp_path):
    def load_adapter(model, path, weight=1.0):
        raise ValueError(f"adapter {path} was trained for model 'other'")  # AdapterError is a ValueError

    use_align(monkeypatch, fake_module("engine.align"), lora=fake_module("engine.align.lora", load_adapter=load_adapter))
    with pytest.raises(BadInput, match="trained for model 'other'"):
        ModelCache().get("cpu", tmp_path)


def test_model_is_cached_and_reloaded_when_the_adapter_changes(monkeypatch, tmp_path):
    applied = []

    def load_adapter(model, path, weight=1.0):
        applied.append((model, path, weight))
        return {"r": 8}  # the adapter's config; the model is changed in place

    use_align(monkeypatch, fake_module("engine.align"), lora=fake_module("engine.align.lora", load_adapter=load_adapter))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"v1")

    cache = ModelCache()
    base, _ = cache.get("cpu", None)
    assert cache.get("cpu", None) == (base, 0.0)  # cached: no load time
    adapted, load_s = cache.get("cpu", adapter)
    assert adapted is not base and load_s > 0 and applied == [(adapted, str(adapter), 1.0)]
    assert hasattr(adapted, "denoiser")  # the model itself, not what load_adapter returned
    assert cache.get("cpu", adapter) == (adapted, 0.0)
    os.utime(adapter / "adapter_model.safetensors", ns=(0, 10**9))  # retrained in place: loaded again
    again, _ = cache.get("cpu", adapter)
    assert again is not adapted and len(applied) == 2
    half, _ = cache.get("cpu", adapter, 0.5)
    assert half is not again and applied[-1] == (half, str(adapter), 0.5)
    assert cache.get("cpu", None)[0] is not half  # back to the base: a fresh model without adapter


def test_adapter_weight_needs_an_adapter(tmp_path):
    with pytest.raises(BadInput, match="adapter_weight needs an adapter"):
        generate_job({"prompt": "a red cube", "out_dir": str(tmp_path / "o"), "adapter_weight": 0.5})
    p = generate_job({"prompt": "a red cube", "out_dir": str(tmp_path / "o"), "adapter": str(tmp_path), "adapter_weight": 0.5})
    assert (p.adapter, p.adapter_weight) == (tmp_path, 0.5)


def test_count_is_bounded_by_the_one_limit_the_cli_shares(tmp_path, capsys):
    from engine import cli, params

    base = {"prompt": "a red cube", "out_dir": str(tmp_path / "w")}
    assert generate_job({**base, "count": params.MAX_COUNT}).count == params.MAX_COUNT == 256
    with pytest.raises(BadInput, match="256"):
        generate_job({**base, "count": params.MAX_COUNT + 1})
    assert cli.main(["generate", "--prompt", "a red cube", "--count", "257", "--out", str(tmp_path / "c")]) == 2
    assert "256" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_unavailable_device_is_bad_input_naming_the_offered_devices(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU build of torch
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    expected = f"device 'cuda' is not available: this torch ({torch.__version__}) offers auto, cpu"
    with pytest.raises(BadInput) as info:
        generate_job({"prompt": "a red cube", "out_dir": str(tmp_path / "o"), "device": "cuda"})
    assert str(info.value) == expected
    with pytest.raises(BadInput) as info:  # the real alignment job: refused before any work
        jobs.run_align({"out_dir": str(tmp_path / "a"), "reward": "dnc", "device": "cuda"}, JobContext("j", lambda m: None))
    assert str(info.value) == expected
    assert list(tmp_path.iterdir()) == []


def test_align_refuses_a_relative_out_dir_as_generate_does(monkeypatch, tmp_path):
    called = []
    use_align(monkeypatch, fake_module("engine.align", run_alignment=lambda *a: called.append(a) or {}))
    for kind in (jobs.run_align, jobs.run_generate):
        with pytest.raises(BadInput, match="out_dir must be an absolute path, got 'relative/dir'"):
            kind({"prompt": "a red cube", "out_dir": "relative/dir"}, JobContext("j", lambda m: None))
    assert called == []
    monkeypatch.setenv("HOME", str(tmp_path))
    jobs.run_align({"out_dir": "~/run"}, JobContext("j", lambda m: None))
    assert called[0][0] == {"out_dir": str(tmp_path / "run")}  # expanded: never a folder named "~" in the cwd


@pytest.mark.parametrize(
    "change, words",
    [
        ({"steps": "3"}, "steps must be an integer, got '3'"),
        ({"beta": "high"}, "beta must be a finite number, got 'high'"),
        ({"lora_rank": 2.5}, "lora_rank must be an integer, got 2.5"),
        ({"prompts": [3]}, "prompts[] must be a non-empty string, got 3"),
        ({"extra": {"subsample": "x"}}, "extra.subsample must be a finite number, got 'x'"),
        ({"extra": []}, "extra must be an object of AlignConfig fields"),
    ],
)
def test_wrong_typed_align_params_are_bad_input_naming_the_field(tmp_path, change, words):
    params = {"out_dir": str(tmp_path / "a"), "reward": "dnc", **change}
    with pytest.raises(BadInput) as info:
        jobs.run_align(params, JobContext("j", lambda m: None))
    assert words in str(info.value)
    assert list(tmp_path.iterdir()) == []


def age(path, seconds):
    """Set the mtime of ``path`` and of everything directly in it to ``seconds`` ago (children first:
    creating or touching a child updates the folder's mtime)."""
    then = time.time() - seconds
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            os.utime(child, (then, then), follow_symlinks=False)
    os.utime(path, (then, then), follow_symlinks=False)


def staging_folder(parent, name, files=("a_red_cube_seed0.npz",)):
    folder = parent / name
    folder.mkdir()
    for f in files:
        (folder / f).write_bytes(b"half-written mesh")
    return folder


def test_stale_staging_folders_of_killed_jobs_are_removed_and_nothing_else(tmp_path):
    stale = staging_folder(tmp_path, ".old_job.partial-0123abcd")
    age(stale, 2 * generate_job_module.STAGING_STALE_AFTER_S)
    live = staging_folder(tmp_path, ".running_job.partial-89abcdef")  # another worker exporting now
    age(live, 60)
    # a live export that has been writing one big file for a long time: its file's mtime is recent
    long_write = staging_folder(tmp_path, ".slow_job.partial-00ff00ff")
    age(long_write, 2 * generate_job_module.STAGING_STALE_AFTER_S)
    os.utime(long_write / "a_red_cube_seed0.npz")
    keep = {}
    for name in (".cache", ".old_job.partial-0123ABCD", ".old_job.partial-0123abc", ".partial-0123abcd",
                 "old_job.partial-0123abcd", ".old_job.partial-0123abcd.bak"):  # not the pattern
        keep[name] = staging_folder(tmp_path, name)
        age(keep[name], 2 * generate_job_module.STAGING_STALE_AFTER_S)
    target = staging_folder(tmp_path, "precious")
    age(target, 2 * generate_job_module.STAGING_STALE_AFTER_S)
    link = tmp_path / ".linked.partial-deadbeef"
    link.symlink_to(target, target_is_directory=True)  # never followed
    plain_file = tmp_path / ".file.partial-cafef00d"
    plain_file.write_bytes(b"not a folder")
    age(plain_file, 2 * generate_job_module.STAGING_STALE_AFTER_S)

    assert generate_job_module.remove_stale_staging(tmp_path) == [stale]
    assert not stale.exists()
    for folder in (live, long_write, *keep.values(), target):
        assert (folder / "a_red_cube_seed0.npz").is_file(), folder.name
    assert link.is_symlink() and plain_file.is_file()
    assert generate_job_module.remove_stale_staging(tmp_path / "missing") == []  # never raises


def test_next_generate_job_removes_a_killed_jobs_staging_folder(tmp_path):
    """A SIGKILL during export left ``.<name>.partial-<hex>``; the next job cleans it and succeeds."""
    stale = staging_folder(tmp_path, ".assets.partial-1a2b3c4d", ["a_red_cube_seed0.npz", ".a_red_cube_seed0.glb.x.tmp"])
    age(stale, 2 * generate_job_module.STAGING_STALE_AFTER_S)
    unrelated = staging_folder(tmp_path, ".blender_cache")
    age(unrelated, 2 * generate_job_module.STAGING_STALE_AFTER_S)
    out = tmp_path / "assets"  # the same out_dir as the killed job: it never got renamed into place
    data = jobs.run_generate({"prompt": "a red cube", "seed": 7, "steps": 2, "out_dir": str(out)},
                             JobContext("j", lambda m: None))
    assert not stale.exists() and (unrelated / "a_red_cube_seed0.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".blender_cache", "assets"]  # no staging left
    assert sorted(p.name for p in out.iterdir()) == ["a_red_cube_seed7.glb", "a_red_cube_seed7.npz", "manifest.json"]
    assert data["out_dir"] == str(out) and data["assets"][0]["files"] == {"npz": "a_red_cube_seed7.npz",
                                                                         "glb": "a_red_cube_seed7.glb"}
    # the GLB's node and mesh are named after the asset (they were "geometry_0"), with normals
    scene = trimesh.load(out / "a_red_cube_seed7.glb")
    assert list(scene.geometry) == ["red_cube_seed7"] and scene.graph.nodes_geometry == ["red_cube_seed7"]
    raw = (out / "a_red_cube_seed7.glb").read_bytes()
    gltf = json.loads(raw[20:20 + struct.unpack_from("<I", raw, 12)[0]])  # the JSON chunk
    assert {"NORMAL", "COLOR_0"} <= set(gltf["meshes"][0]["primitives"][0]["attributes"])


def test_model_choice_is_checked_and_keys_the_cache(tmp_path):
    base = {"prompt": "a red cube", "out_dir": str(tmp_path / "out")}
    with pytest.raises(BadInput, match="unknown model 'shap-f'; choose one of embedded"):
        generate_job({**base, "model": "shap-f"})
    with pytest.raises(BadInput, match="model_path 'rel/dir' must be an absolute path to a folder"):
        generate_job({**base, "model_path": "rel/dir"})
    p = generate_job({**base, "model_path": str(tmp_path)})
    assert (p.model, p.model_path) == ("embedded", tmp_path)

    import shutil

    from engine.models.embedded.model import WEIGHTS_DIR

    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    cache = ModelCache()
    bundled, _ = cache.get("cpu", None)
    from_folder, load_s = cache.get("cpu", None, path=copy)
    assert from_folder is not bundled and load_s > 0  # another folder: another model
    assert cache.get("cpu", None, path=copy) == (from_folder, 0.0)


def test_a_shap_e_folder_runs_a_generate_job_and_keys_the_cache(tmp_path, tiny_shap_e):
    from engine.models.shap_e.model import ShapEModel

    cache = ModelCache()
    shap_e, load_s = cache.get("cpu", None, name="shap-e", path=tiny_shap_e)
    assert isinstance(shap_e, ShapEModel) and load_s > 0
    embedded, _ = cache.get("cpu", None)
    assert not isinstance(embedded, ShapEModel)  # another model: another entry

    out = tmp_path / "out"
    data = jobs.run_generate({"prompt": "a wooden chair", "seed": 3, "count": 2, "steps": 2, "scheduler": "heun",
                              "out_dir": str(out), "model": "shap-e", "model_path": str(tiny_shap_e)},
                             JobContext("j", lambda m: None))
    assert [a["seed"] for a in data["assets"]] == [3, 4] and all(a["vertices"] > 0 for a in data["assets"])
    assert all((out / a["files"]["glb"]).is_file() for a in data["assets"])


def test_a_diffsplat_folder_runs_generate_and_align_jobs_and_the_adapter_comes_back(tmp_path, tiny_diffsplat):
    """DiffSplat through the worker's jobs: generate from its folder, align (AlignJob) on it, generate
    with the adapter; the model cache keys it apart from the embedded model."""
    from engine.models.diffsplat.model import DiffSplatModel

    cache = ModelCache()
    model, load_s = cache.get("cpu", None, name="diffsplat", path=tiny_diffsplat)
    assert isinstance(model, DiffSplatModel) and load_s > 0
    assert not isinstance(cache.get("cpu", None)[0], DiffSplatModel)

    base = {"prompt": "a wooden chair", "seed": 3, "count": 1, "steps": 2, "scheduler": "dpmsolver-sde",
            "model": "diffsplat", "model_path": str(tiny_diffsplat)}
    data = jobs.run_generate({**base, "out_dir": str(tmp_path / "gen")}, JobContext("j", lambda m: None))
    assert [a["seed"] for a in data["assets"]] == [3] and data["assets"][0]["vertices"] > 0
    report = jobs.run_align({"reward": "dnc", "steps": 1, "trajectories": 1, "eval_seeds": 1, "prompts": ["a wooden chair"],
                             "model": "diffsplat", "model_path": str(tiny_diffsplat), "out_dir": str(tmp_path / "run"),
                             "preview_every": 0, "extra": {"orbit": {"views": 1}, "render": {"resolution": 8},
                                                           "sampler": {"steps": 2}}},
                            JobContext("a", lambda m: None))
    adapter = tmp_path / "run" / report["files"]["adapter"]
    assert (adapter / "adapter_config.json").is_file()
    tuned = jobs.run_generate({**base, "out_dir": str(tmp_path / "tuned"), "adapter": str(adapter)},
                              JobContext("k", lambda m: None))
    assert tuned["assets"][0]["vertices"] > 0


def test_a_320_character_open_text_prompt_gets_bounded_file_names(tmp_path, tiny_shap_e):
    """The worker built file names from the whole prompt: "File name too long" after sampling."""
    from engine.naming import slug

    prompt = ("a weathered bronze statue of a horse rearing on a marble plinth, " * 5)[:320]
    data = jobs.run_generate({"prompt": prompt, "steps": 2, "scheduler": "heun", "out_dir": str(tmp_path / "out"),
                              "model": "shap-e", "model_path": str(tiny_shap_e)}, JobContext("j", lambda m: None))
    (asset,) = data["assets"]
    assert asset["prompt"] == prompt and asset["files"]["glb"] == f"{slug(prompt)}_seed0.glb"
    assert all((tmp_path / "out" / name).is_file() for name in asset["files"].values())
    assert max(len(p.name) for p in (tmp_path / "out").iterdir()) <= 80


def test_a_generate_job_stages_in_the_folder_named_after_its_id(tmp_path, monkeypatch):
    """The client derives a job's staging folder from its id (protocol.staging_dir) to remove it
    when the worker dies mid-export: the job must write exactly there."""
    from engine.worker import protocol

    out = tmp_path / "assets"
    seen = []
    from engine.geometry import mesh as mesh_module

    real = mesh_module.save_npz
    monkeypatch.setattr(mesh_module, "save_npz", lambda mesh, path: (seen.append(Path(path).parent), real(mesh, path))[1])
    jobs.run_generate({"prompt": "a red cube", "steps": 2, "out_dir": str(out)}, JobContext("0123456789ab", lambda m: None))
    assert seen == [protocol.staging_dir(out, "0123456789ab")]
    assert generate_job_module.STAGING_NAME.fullmatch(seen[0].name) and seen[0].parent == tmp_path
    assert not seen[0].exists() and (out / "manifest.json").is_file()


def test_a_generate_job_with_preview_sends_its_sheet_as_an_image_preview(tmp_path):
    out = tmp_path / "out"
    sent, send = sink()
    data = jobs.run_generate({"prompt": "a red cube", "count": 2, "steps": 2, "out_dir": str(out), "preview": True,
                              "preview_renderer": "volume", "preview_resolution": 8},
                             JobContext("j", send, min_interval=0.0))
    previews = [m for m in sent if m["type"] == "preview"]
    assert previews == [{"type": "preview", "id": "j", "path": str(out / "preview.png"), "kind": "image",
                         "label": previews[0]["label"]}]
    assert data["preview"] == {"file": "preview.png", "renderer": "volume", "columns": 2}
    assert (out / "preview.png").is_file() and data["formats"] == ["npz", "glb"]
