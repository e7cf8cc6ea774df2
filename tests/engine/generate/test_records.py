"""The generate job's records: strict JSON round-trips, clear refusals of malformed manifests, and the
preview messages' kinds. Standard library only (the Blender side imports this module)."""
import ast
import json
import math
from pathlib import Path

import pytest

from engine.generate import records
from engine.generate.records import (AdapterUse, GeneratedAsset, GenerateResult, PreviewMessage, PreviewSheet,
                                     RecordError)


def _result(**change) -> GenerateResult:
    asset = GeneratedAsset("a red cube", 3, "red_cube_seed3", {"glb": "a_red_cube_seed3.glb", "npz": "a_red_cube_seed3.npz"},
                           1200, 2400)
    values = dict(prompts=["a red cube"], seed=3, count=1, model="embedded", sampler={"steps": 4, "guidance": 4.0},
                  formats=["glb", "npz"], assets=[asset], timings={"load_s": 0.1, "total_s": 1.5},
                  adapter=AdapterUse("/abs/adapter", 0.5), preview=PreviewSheet("preview.png", "volume", 1))
    values.update(change)
    return GenerateResult(**values)


def test_a_result_round_trips_through_strict_json(tmp_path):
    result = _result()
    text = json.dumps(result.to_json(), allow_nan=False)
    back = GenerateResult.from_json(json.loads(text))
    assert back == result
    (tmp_path / "manifest.json").write_text(text)
    read = GenerateResult.read(tmp_path / "manifest.json")
    assert read.out_dir == str(tmp_path) and read.to_json() == result.to_json()
    assert read.files() == ["manifest.json", "a_red_cube_seed3.glb", "a_red_cube_seed3.npz", "preview.png"]
    assert read.assets[0].path("npz", read.out_dir) == tmp_path / "a_red_cube_seed3.npz"
    # the worker's result data carries out_dir; the manifest file does not
    assert "out_dir" not in result.to_json() and GenerateResult.from_json(
        _result(out_dir="/x").to_json(with_out_dir=True)).out_dir == "/x"


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: d.pop("assets"), "manifest has no 'assets'"),
        (lambda d: d.update(format="something-else"), "manifest.format must be 'nabla-r2d3-generate'"),
        (lambda d: d.update(version=2), "written by another version"),
        (lambda d: d["assets"][0].update(seed="3"), "manifest.assets[0].seed must be an integer"),
        (lambda d: d["assets"][0].update(seed=True), "manifest.assets[0].seed must be an integer"),
        (lambda d: d["assets"][0]["files"].update(glb="../../etc/passwd"), "must be a path inside the manifest's folder"),
        (lambda d: d["assets"][0]["files"].update(glb="/abs.glb"), "must be a path inside the manifest's folder"),
        (lambda d: d["assets"][0]["files"].update(fbx="x.fbx"), "must map formats"),
        (lambda d: d["timings"].update(total_s=math.nan), "manifest.timings.total_s must be finite"),
        (lambda d: d.update(prompts=[]), "manifest.prompts must be a non-empty list of strings"),
        (lambda d: d.update(preview={"file": "p.png", "renderer": "eevee", "columns": 1}), "renderer must be one of"),
        (lambda d: d.update(adapter={"path": 3, "weight": 1}), "adapter.path must be a string"),
        (lambda d: d.update(extra_files=["gallery/../../x"]), "manifest.extra_files[0] must be a path inside"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_field(change, words):
    data = _result().to_json()
    change(data)
    with pytest.raises(RecordError) as info:
        GenerateResult.from_json(data)
    assert words in str(info.value)


def test_reading_a_broken_manifest_file_names_it(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text('{"format": "nabla-r2d3-generate", "version": 1, "seed": NaN')
    with pytest.raises(RecordError, match=str(path)):
        GenerateResult.read(path)
    with pytest.raises(RecordError, match="cannot read"):
        GenerateResult.read(tmp_path / "missing.json")


def test_preview_messages_say_their_kind():
    assert PreviewMessage.from_json({"path": "/a/round_5.npz", "label": "x"}).kind == "mesh"  # an older worker: by suffix
    assert PreviewMessage.from_json({"path": "/a/c.png", "kind": "curve", "label": "round 5"}).kind == "curve"
    assert PreviewMessage("/a/b.png", "image", "l").to_json() == {"path": "/a/b.png", "kind": "image", "label": "l"}
    with pytest.raises(RecordError, match="preview kind must be one of mesh, image, curve"):
        PreviewMessage("/a/b.png", "video")


def test_the_records_module_imports_only_the_standard_library():
    """Blender's Python has no torch or numpy: the add-on imports this module."""
    tree = ast.parse(Path(records.__file__).read_text())
    imported = {n.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "json", "math", "dataclasses", "pathlib"}, imported
    init = Path(records.__file__).with_name("__init__.py")
    assert not [n for n in ast.walk(ast.parse(init.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]
