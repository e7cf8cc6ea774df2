"""Align to picks in one job (engine/align/from_picks.py): the preference is fitted from the picks, then
aligned on; too few picks are refused with the fit's message before anything is written."""
import json

import pytest
import torch

from engine import picks
from engine.align.from_picks import PREFERENCE_DIR, run_alignment_from_picks
from engine.fileio import write_safetensors
from engine.models import load_model
from engine.rewards.preference import PreferenceError
from engine.sampling.sampler import SamplerConfig, sample

TINY = {"render": {"resolution": 12, "samples": 12}, "orbit": {"views": 2, "random_azimuth": True},
        "sampler": {"steps": 4}, "subsample": 0.5}


def _picks(folder, marks):
    """A picks.json whose assets carry their latents (nothing is re-sampled when fitting)."""
    torch.set_num_threads(1)
    model = load_model("embedded", None, device="cpu")
    prompts = ["a cube", "a torus"]
    entries = []
    for i, mark in enumerate(marks):
        prompt = prompts[i % 2]
        z = sample(model, [prompt], [i], SamplerConfig(steps=4)).latents[0]
        latent = folder / f"z{i}.safetensors"
        write_safetensors(latent, {"latent": z.contiguous()})
        entries.append({"prompt": prompt, "seed": i, "mark": mark, "latent": latent.name, "name": f"x{i}"})
    return picks.save(folder / "picks.json", entries)


def _params(out, path, **kw):
    return {"out_dir": str(out), "reward": "preference", "reward_options": {}, "steps": 1, "trajectories": 1,
            "eval_seeds": 1, "prompts": ["a cube"], "preview_every": 0, "extra": dict(TINY),
            "fit_preference": {"picks": str(path)}, **kw}


def test_fits_the_preference_then_aligns_on_it(tmp_path):
    path = _picks(tmp_path, ["liked", "disliked"] * 4)
    seen = []
    report = run_alignment_from_picks(_params(tmp_path / "run", path, device="auto"),  # as Blender sends it
                                      progress=lambda f, m: seen.append((f, m)))
    pref = tmp_path / "run" / PREFERENCE_DIR
    assert (pref / "preference.safetensors").is_file() and (pref / "preference.json").is_file()
    assert report["reward"] == "preference" and report["rounds"] == 1
    assert report["preference"]["path"] == str(pref) and report["preference"]["picks"]["liked"] == 4
    assert 0.0 <= report["preference"]["cross_validation"]["auc"] <= 1.0
    # "auto" (the default) chose a kind, recorded where the reward loader reads it
    chosen = json.loads((pref / "preference.json").read_text())
    assert report["preference"]["feature"] == chosen["feature"] == chosen["feature_selection"]["chosen"] in ("profile", "critic+layout")
    assert all(isinstance(report[k]["mean"], float) for k in ("reward_before", "reward_after"))
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("preference fitted" in m for _, m in seen)
    json.dumps(report, allow_nan=False)


def test_too_few_picks_are_refused_with_the_fits_message_before_anything_is_written(tmp_path):
    path = _picks(tmp_path, ["liked"] * 3 + ["disliked"])
    with pytest.raises(PreferenceError, match=r"too few picks .*3 liked, 1 disliked, 0 neutral; mark at least 4 liked"):
        run_alignment_from_picks(_params(tmp_path / "run", path), progress=lambda f, m: pytest.fail("no progress"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, words", [
    ({"reward": "dnc"}, "needs a reward that uses preference"),
    ({"fit_preference": {"picks": "relative.json"}}, "absolute path"),
    ({"fit_preference": {"picks": "/x.json", "colour": 1}}, "unknown field"),
    ({"fit_preference": None}, "must be an object"),
    ({"steps": "3"}, "steps"),
])
def test_bad_parameters_are_refused_before_fitting(tmp_path, change, words):
    with pytest.raises(ValueError, match=words):
        run_alignment_from_picks({**_params(tmp_path / "run", tmp_path / "picks.json"), **change})
    assert not (tmp_path / "run").exists()



def test_the_worker_align_job_fits_first_and_refuses_too_few_picks_as_bad_input(tmp_path):
    from engine.worker.jobs import JobContext, run_align
    from engine.worker.protocol import BadInput

    sent = []
    path = _picks(tmp_path, ["liked"] * 3 + ["disliked"])
    with pytest.raises(BadInput, match=r"too few picks to learn a preference: 3 liked, 1 disliked"):
        run_align(_params(tmp_path / "run", path), JobContext("job", sent.append))
    assert not sent and not (tmp_path / "run").exists()
