"""A job folder's gallery files (engine/gallery_files.py): written, read back, joined with the manifest
and the marks; MANIFEST#NAME resolution; thumbnails from the model's renderer."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from engine import gallery_files, picks
from engine.generate.records import AdapterUse, GeneratedAsset, GenerateResult


def _job(folder: Path, lineages=((), ((2, 0.5),))) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    written, assets = [], []
    for i, lineage in enumerate(lineages):
        stem = f"a_cube_seed7{gallery_files.lineage_suffix(lineage)}"
        (folder / f"{stem}.npz").write_bytes(b"x")
        written.append(GeneratedAsset("a cube", 7, f"cube_seed7{gallery_files.lineage_suffix(lineage)}",
                                      {"npz": f"{stem}.npz"}, 4, 4))
        assets.append(SimpleNamespace(latent=torch.full((4, 8, 8, 8), float(i)), lineage=lineage))
    result = GenerateResult(prompts=["a cube"], seed=7, count=len(lineages), model="embedded",
                            sampler={"steps": 5, "guidance": 3.0, "scheduler": "ddim", "eta": 1.0}, formats=["npz"],
                            assets=written, adapter=AdapterUse("/adapters/orange", 0.5))
    (folder / "manifest.json").write_text(json.dumps(result.to_json()))
    images = [torch.rand(3, 16, 16) for _ in assets]
    stems = [Path(w.files["npz"]).stem for w in written]
    gallery_files.write_gallery_files(folder, assets, [w.name for w in written], stems, images,
                                      {"strength": 0.5, "parent": [], "first_index": 2})
    return written


def test_gallery_files_round_trip_and_join_the_manifest_and_marks(tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "job"
    _job(folder)
    read = gallery_files.read_gallery(folder)
    assert list(read) == ["cube_seed7", "cube_seed7_v2"] and read["cube_seed7_v2"].lineage == ((2, 0.5),)
    cands = gallery_files.job_candidates(folder)
    assert [c.stem for c in cands] == ["a_cube_seed7", "a_cube_seed7_v2"] and all(c.mark is None for c in cands)
    assert torch.equal(load_file(cands[1].latent)["latent"], torch.full((4, 8, 8, 8), 1.0))
    with Image.open(cands[0].thumbnail) as im:
        assert im.size == (16, 16)
    pick = cands[1].pick
    assert pick["adapter"] == {"path": "/adapters/orange", "weight": 0.5} and pick["sampler"]["steps"] == 5
    assert pick["latent"] == "gallery/a_cube_seed7_v2.latent.safetensors" and pick["manifest"] == "manifest.json"
    gallery_files.mark_candidate(folder, cands[0], "liked")
    gallery_files.mark_candidate(folder, cands[1], "disliked")
    assert [c.mark for c in gallery_files.job_candidates(folder)] == ["liked", "disliked"], "a variation is its own asset"
    gallery_files.mark_candidate(folder, cands[0], None)
    assert [c.mark for c in gallery_files.job_candidates(folder)] == [None, "disliked"]

    other = tmp_path / "other"
    _job(other, lineages=((),))
    gallery_files.mark_candidate(other, gallery_files.job_candidates(other)[0], "liked")
    merged = gallery_files.collect_picks([folder, other, tmp_path / "gone"])
    assert [(e["name"], e["mark"]) for e in merged] == [("a_cube_seed7_v2", "disliked"), ("a_cube_seed7", "liked")]
    assert merged[1]["manifest"] == str(other / "manifest.json")
    preference = pytest.importorskip("engine.rewards.preference")
    picks.save(tmp_path / "all.json", merged)
    read_back = preference.load_picks(tmp_path / "all.json")
    assert read_back[0].latent == str(folder / "gallery" / "a_cube_seed7_v2.latent.safetensors")
    assert read_back[0].adapter == "/adapters/orange" and read_back[0].adapter_weight == 0.5


def test_manifest_entries_are_found_by_name_stem_or_index(tmp_path):
    folder = tmp_path / "job"
    _job(folder)
    by_index = gallery_files.resolve_manifest_entry(f"{folder}/manifest.json#1")
    by_stem = gallery_files.resolve_manifest_entry(f"{folder}#a_cube_seed7_v2")
    by_name = gallery_files.resolve_manifest_entry(f"{folder}#cube_seed7_v2")
    assert by_index == by_stem == by_name
    assert (by_index.prompt, by_index.seed, by_index.lineage, by_index.sampler["steps"]) == ("a cube", 7, ((2, 0.5),), 5)
    assert by_index.adapter == {"path": "/adapters/orange", "weight": 0.5}
    for spec, words in ((f"{folder}#5", "has 2 assets"), (f"{folder}#sphere", "no asset 'sphere'"),
                        (str(folder), "MANIFEST#NAME"), (f"{tmp_path}/none#0", "cannot read")):
        with pytest.raises(gallery_files.CandidateError, match=words):
            gallery_files.resolve_manifest_entry(spec)


def test_malformed_gallery_files_are_refused(tmp_path):
    (tmp_path / "gallery.json").write_text('{"format": "nabla-gallery", "version": 1, "assets": '
                                           '[{"name": "x", "stem": "x", "thumbnail": "../../etc/passwd"}]}')
    with pytest.raises(gallery_files.CandidateError, match="inside the job folder"):
        gallery_files.read_gallery(tmp_path)
    (tmp_path / "gallery.json").write_text('{"format": "nabla-gallery", "version": 1, "assets": '
                                           '[{"name": "x", "stem": "x", "lineage": [[0, 0.5]]}]}')
    with pytest.raises(gallery_files.CandidateError, match="bad step"):
        gallery_files.read_gallery(tmp_path)
    assert gallery_files.read_gallery(tmp_path / "nothing") == {}


def test_thumbnails_show_the_asset():
    from engine.models import load_model
    from engine.sampling.sampler import SamplerConfig, sample

    torch.set_num_threads(1)
    model = load_model("embedded", None, device="cpu")
    latents = sample(model, ["a red cube", "a blue sphere"], [0, 1], SamplerConfig(steps=4)).latents
    images = gallery_files.render_thumbnails(model, list(latents), resolution=32)
    assert [tuple(i.shape) for i in images] == [(3, 32, 32)] * 2
    for img in images:
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0 and float(img.std()) > 0.02
    assert float(images[0][0].mean()) > float(images[0][2].mean()), "the red cube's thumbnail is red"
