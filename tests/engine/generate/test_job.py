"""The one generate job (engine/generate/job.py) that the CLI, the demo, the worker and batch mode share:
its manifest round-trips, it writes exactly the files it lists, refuses bad input before writing
anything, leaves nothing after a failure or a cancel, and its preview sheet has one tile per asset."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.generate import job as job_module
from engine.generate.job import GenerateJob, cli_names, previous_run_files, run_generate
from engine.generate.records import GenerateResult, PreviewMessage
from engine.sampling.sampler import Cancelled
from engine.worker.jobs import JobContext, run_generate as worker_generate
from engine.worker.protocol import BadInput

torch.set_num_threads(1)
BASE = {"prompt": "a red cube", "steps": 2, "seed": 5}


def _job(out: Path, **change) -> GenerateJob:
    return GenerateJob.from_params({**BASE, "out_dir": str(out), **change})


def test_the_manifest_round_trips_and_lists_exactly_the_files_written(tmp_path):
    out = tmp_path / "gen"
    result = run_generate(GenerateJob.from_params({"prompts": ["a red cube", "a blue torus"], "count": 2, "steps": 2,
                                                   "seed": 5, "formats": ["glb", "ply", "obj", "npz"], "out_dir": str(out)}))
    manifest = json.loads((out / "manifest.json").read_text())
    assert GenerateResult.from_json(manifest).to_json() == manifest == result.to_json()
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files())  # nothing unlisted, nothing missing
    assert [(a.prompt, a.seed) for a in result.assets] == [("a red cube", 5), ("a red cube", 6), ("a blue torus", 5),
                                                           ("a blue torus", 6)]
    for asset in result.assets:
        assert set(asset.files) == {"glb", "ply", "obj", "npz"} and asset.vertices > 0 and asset.faces > 0
        assert all(asset.path(fmt, out).stat().st_size > 0 for fmt in asset.files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]  # no staging folder left beside it



@pytest.mark.parametrize(
    "change, words",
    [
        ({"count": 0}, "count must be in 1..256, got 0"),
        ({"steps": float("nan")}, "steps must be an integer"),
        ({"guidance": float("inf")}, "guidance must be a finite number"),
        ({"formats": ["fbx"]}, "formats 'fbx' is not one of glb, obj, ply, npz, 3dgs"),
        ({"formats": "glb"}, "formats must be a non-empty list"),
        ({"formats": ["3dgs"]}, "3dgs writes Gaussian splats; model 'embedded' makes"),
        ({"prompt": "a shiny cube"}, "'shiny' is not in the vocabulary"),
        ({"prompts": ["a red cube"] * 2, "count": 200}, "2 prompts x 200 assets is more than 256"),
        ({"adapter_weight": 0.5}, "adapter_weight needs an adapter"),
        ({"preview_renderer": "eevee"}, "preview_renderer must be one of auto, cycles, volume"),
        ({"preview_resolution": 10**6}, "preview_resolution must be in 8..1024"),
        ({"model_path": "/no/such/folder"}, "'/no/such/folder' must be a folder of model weights (no such folder)"),
        ({"colour": "red"}, "unknown parameter(s) colour"),
    ],
)
def test_bad_input_is_a_clear_error_before_anything_is_written(tmp_path, change, words):
    params = {**BASE, "out_dir": str(tmp_path / "out"), **change}
    if "prompts" in change:
        params.pop("prompt")
    with pytest.raises(ValueError) as info:
        GenerateJob.from_params(params)
    assert words in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_spells_fields_as_its_options(tmp_path):
    with pytest.raises(BadInput, match="--batch-size must be in 1..256, got 0"):
        GenerateJob.from_params({**BASE, "out_dir": str(tmp_path / "o"), "batch_size": 0}, names=cli_names)


def test_a_failure_or_cancel_mid_export_leaves_nothing_and_keeps_the_previous_run(tmp_path, monkeypatch):
    out = tmp_path / "gen"
    first = run_generate(_job(out, count=1))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = job_module._write_asset
    calls = []

    def fail_on_second(asset, folder, job):
        calls.append(asset.seed)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(asset, folder, job)

    monkeypatch.setattr(job_module, "_write_asset", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        run_generate(_job(out, count=2, seed=9, overwrite=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous run is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]
    cancelled = []  # the user cancels while the first asset is written

    def cancel_during_first(asset, folder, job):
        cancelled.append(True)
        return real(asset, folder, job)

    monkeypatch.setattr(job_module, "_write_asset", cancel_during_first)
    with pytest.raises(Cancelled):
        run_generate(_job(out, count=2, seed=9, overwrite=True), should_cancel=lambda: bool(cancelled))
    assert cancelled == [True]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"] and first.assets[0].seed == 5


def test_overwrite_replaces_only_a_previous_generate_run(tmp_path):
    out = tmp_path / "gen"
    run_generate(_job(out, count=2))
    with pytest.raises(BadInput, match="is not empty"):
        _job(out)
    again = run_generate(_job(out, seed=40, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == sorted(again.files()) and again.assets[0].seed == 40
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match=r"entries its manifest.json does not list \(notes.txt\)"):
        _job(out, overwrite=True)
    assert previous_run_files(tmp_path / "new", False) == []


def test_overwrite_removes_a_listed_sub_folder_and_refuses_one_with_unlisted_files(tmp_path):
    """Files beside the assets (a gallery's gallery.json and gallery/<stem>.png) are listed as
    extra_files; overwrite removes them, and refuses a folder holding anything else."""
    out = tmp_path / "gen"
    result = run_generate(_job(out))
    (out / "gallery").mkdir()
    (out / "gallery" / "thumb.png").write_bytes(b"png")
    result.extra_files.append("gallery/thumb.png")
    (out / "manifest.json").write_text(json.dumps(result.to_json()))
    (out / "gallery" / "mine.txt").write_text("mine")
    with pytest.raises(BadInput, match=r"does not list \(gallery\)"):
        _job(out, overwrite=True)
    (out / "gallery" / "mine.txt").unlink()
    again = run_generate(_job(out, seed=41, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == sorted(again.files()) and again.extra_files == []


def test_the_worker_and_the_cli_write_the_same_manifest_schema(tmp_path):
    cli_out, worker_out = tmp_path / "cli", tmp_path / "worker"
    assert main(["generate", "--prompt", "a red cube", "--seed", "5", "--count", "2", "--steps", "2", "--format", "npz",
                 "--format", "glb", "--out", str(cli_out)]) == 0
    data = worker_generate({**BASE, "count": 2, "out_dir": str(worker_out)}, JobContext("j", lambda m: None))
    cli_manifest = json.loads((cli_out / "manifest.json").read_text())
    worker_manifest = json.loads((worker_out / "manifest.json").read_text())
    assert data == {**worker_manifest, "out_dir": str(worker_out)}  # the result data is the manifest and its folder

    def shape(manifest):  # keys and value types, not the timings' values
        return {k: (type(v).__name__, sorted(v) if isinstance(v, dict) and k != "timings" else None)
                for k, v in manifest.items()}, [sorted(a) for a in manifest["assets"]]

    assert shape(cli_manifest) == shape(worker_manifest)
    a, b = GenerateResult.from_json(cli_manifest), GenerateResult.from_json(worker_manifest)
    assert [x.files for x in a.assets] == [x.files for x in b.assets]
    assert [(x.prompt, x.seed, x.vertices, x.faces) for x in a.assets] == [(x.prompt, x.seed, x.vertices, x.faces)
                                                                          for x in b.assets]
    for name in a.assets[0].files.values():  # the same seeds give the same files
        assert (cli_out / name).read_bytes() == (worker_out / name).read_bytes()


def test_preview_writes_a_sheet_of_one_tile_per_asset(tmp_path, monkeypatch):
    from PIL import Image

    from engine import imaging

    seen = {}
    real = imaging.contact_sheet

    def spy(images, **kwargs):
        sheet = real(images, **kwargs)
        seen.update(images=images, sheet_size=sheet.size, **kwargs)
        return sheet

    monkeypatch.setattr(imaging, "contact_sheet", spy)
    sent = []
    out = tmp_path / "gen"
    result = run_generate(_job(out, count=5, preview=True, preview_renderer="volume", preview_resolution=16),
                          preview=sent.append)
    assert result.preview.file == "preview.png" and result.preview.renderer == "volume" and result.preview.columns == 4
    assert len(seen["images"]) == 5 and all(tuple(im.shape) == (3, 16, 16) for im in seen["images"])
    assert seen["columns"] == 4 and seen["labels"] == [f"red cube #{s}" for s in range(5, 10)]
    with Image.open(out / "preview.png") as png:
        assert png.format == "PNG" and png.size == seen["sheet_size"]
        assert png.size[0] >= 4 * 16 and png.size[1] >= 2 * 16  # two rows of four 16 px tiles, or more
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 10  # renders, not a blank page
    assert sent == [PreviewMessage(str(out / "preview.png"), "image", sent[0].label)]
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files())


def test_cli_preview_renders_with_cycles_where_bpy_imports(tmp_path):
    pytest.importorskip("bpy")
    out = tmp_path / "gen"
    assert main(["generate", "--prompt", "a red cube", "--count", "2", "--steps", "2", "--preview",
                 "--preview-resolution", "16", "--out", str(out)]) == 0
    result = GenerateResult.read(out / "manifest.json")
    assert result.preview.renderer == "cycles" and (out / "preview.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files())
