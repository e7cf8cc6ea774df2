"""The marks file (engine/picks.py), the one reader and writer of picks: round trip, merge,
validation, the too-few-picks message, and the preference fit reading what the gallery writes."""
import json
import os

import pytest

from engine import picks


def _asset(prompt="a red cube", seed=3, **kw):
    return {"prompt": prompt, "seed": seed, "model": "embedded", "name": f"x_seed{seed}", **kw}


def test_marks_round_trip_through_the_file_atomically(tmp_path):
    path = tmp_path / "job" / picks.PICKS_FILE
    picks.update_file(path, _asset(seed=1, manifest="manifest.json"), "liked")
    picks.update_file(path, _asset(seed=2), "disliked")
    entries = picks.update_file(path, _asset(seed=1, manifest="manifest.json"), "neutral")  # re-marked
    assert [(e["seed"], e["mark"]) for e in entries] == [(2, "disliked"), (1, "neutral")]
    assert picks.load(path) == entries
    raw = json.loads(path.read_text())
    assert raw["format"] == "nabla-picks" and raw["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == [picks.PICKS_FILE], "no temp file left"
    picks.update_file(path, _asset(seed=2), None)  # unmarked: the entry goes
    assert [e["seed"] for e in picks.load(path)] == [1]


def test_assets_differ_by_adapter_model_and_name():
    a = _asset()
    keys = {picks.asset_key({**a, "mark": "liked"}),
            picks.asset_key({**a, "mark": "liked", "adapter": {"path": "/ad", "weight": 1.0}}),
            picks.asset_key({**a, "mark": "liked", "adapter": {"path": "/ad", "weight": 0.5}}),
            picks.asset_key({**a, "mark": "liked", "model": "shap-e"}),
            picks.asset_key({**a, "mark": "liked", "name": "x_seed3_v1_s0300"})}
    assert len(keys) == 5
    # a plain adapter path and {"path": p, "weight": 1} are the same adapter
    assert picks.asset_key({**a, "mark": "liked", "adapter": "/ad"}) == picks.asset_key(
        {**a, "mark": "disliked", "adapter": {"path": "/ad"}})


def test_merge_keeps_the_latest_mark_of_each_asset():
    first = [{**_asset(seed=1), "mark": "liked"}, {**_asset(seed=2), "mark": "liked"}]
    second = [{**_asset(seed=1), "mark": "disliked"}]
    merged = picks.merge(first, second)
    assert [(e["seed"], e["mark"]) for e in merged] == [(2, "liked"), (1, "disliked")]


@pytest.mark.parametrize("entry, message", [
    ({"prompt": "", "seed": 1, "mark": "liked"}, "prompt"),
    ({"prompt": "a cube", "seed": 1.5, "mark": "liked"}, "seed"),
    ({"prompt": "a cube", "seed": True, "mark": "liked"}, "seed"),
    ({"prompt": "a cube", "seed": 1, "mark": "love"}, "mark"),
    ({"prompt": "a cube", "seed": 1, "mark": "liked", "colour": "red"}, "unknown field"),
    ({"prompt": "a cube", "seed": 1, "mark": "liked", "adapter": {"path": "/a", "weight": -1}}, "weight"),
    ({"prompt": "a cube", "seed": 1, "mark": "liked", "latent": 3}, "latent"),
])
def test_bad_entries_are_refused_naming_the_field(tmp_path, entry, message):
    with pytest.raises(picks.PicksError, match=message):
        picks.save(tmp_path / "p.json", [entry])
    assert not (tmp_path / "p.json").exists()
    (tmp_path / "q.json").write_text(json.dumps(picks.document([entry])))
    with pytest.raises(picks.PicksError, match=r"assets\[0\].*" + message):
        picks.load(tmp_path / "q.json")


def test_non_strict_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"format": "nabla-picks", "version": 1, "assets": [{"prompt": "a cube", "seed": NaN, "mark": "liked"}]}')
    with pytest.raises(picks.PicksError, match="strict JSON"):
        picks.load(path)
    path.write_text('{"assets": []}')
    with pytest.raises(picks.PicksError, match="nabla-picks"):
        picks.load(path)
    path.write_text('{"format": "nabla-picks", "version": 2, "assets": []}')
    with pytest.raises(picks.PicksError, match="version"):
        picks.load(path)
    assert picks.load(tmp_path / "missing.json") == []
    with pytest.raises(picks.PicksError, match="not found"):
        picks.load(tmp_path / "missing.json", missing_ok=False)


def test_relative_paths_resolve_against_the_file_folder(tmp_path):
    entry = {**_asset(), "mark": "liked", "manifest": "manifest.json", "latent": "lat/x.safetensors",
             "adapter": {"path": "ad", "weight": 0.5}}
    out = picks.relative_to(entry, tmp_path)
    assert out["manifest"] == str(tmp_path / "manifest.json")
    assert out["latent"] == str(tmp_path / "lat" / "x.safetensors")
    assert out["adapter"] == {"path": str(tmp_path / "ad"), "weight": 0.5}


def test_the_preference_fit_reads_what_the_gallery_writes(tmp_path):
    preference = pytest.importorskip("engine.rewards.preference")
    path = tmp_path / picks.PICKS_FILE
    entries = [{**_asset(prompt=p, seed=s, file=f"x{s}.glb"), "mark": m}
               for p, s, m in [("a cube", 0, "liked"), ("a torus", 1, "disliked"), ("a cone", 2, "neutral")]]
    picks.save(path, entries)
    read = preference.load_picks(path)
    assert [(p.prompt, p.seed, p.mark) for p in read] == [("a cube", 0, "liked"), ("a torus", 1, "disliked"), ("a cone", 2, "neutral")]


def test_too_few_picks_say_how_many_of_each_are_needed():
    assert picks.count_problem(["liked"] * 10) == (
        "too few liked and disliked assets to learn a preference: 10 liked, 0 disliked, 0 neutral; "
        "mark at least 4 liked and 4 disliked assets (more of each, and from several prompts, teach it better)")
    assert picks.count_problem(["liked"] * 3 + ["disliked"] * 5 + ["neutral"]).startswith(
        "too few picks to learn a preference: 3 liked, 5 disliked, 1 neutral; mark at least 4 liked and 4 disliked")
    assert "at least 2 liked and 6 disliked" in picks.count_problem(["liked"] * 4 + ["disliked"] * 4, 2, 6)
    assert picks.count_problem(["liked"] * 4 + ["disliked"] * 4 + ["neutral"]) is None
    assert picks.count_problem(["liked"] * 2 + ["disliked"] * 2, 2, 2) is None


def test_module_is_standard_library_only():
    """Blender's interpreter imports it: no torch, numpy or engine module that needs them."""
    import ast

    tree = ast.parse(open(picks.__file__).read())
    imported = {(n.module or "") if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [None])}
    assert imported <= {"__future__", "json", "math", "os", "pathlib", "fileio"}, imported
