"""The model registry: one list of models, prompt rules without loading, weights from a folder."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from engine import names
from engine.models import REGISTRY, load_model, prompt_rules
from engine.models.embedded.model import WEIGHTS_DIR, ModelLoadError
from engine.models.prompts import OpenText, PromptError


def test_registry_lists_the_names_every_entry_point_offers():
    assert tuple(REGISTRY) == names.MODELS
    with pytest.raises(ValueError, match="unknown model 'shap-f'; available: embedded"):
        load_model("shap-f")


def test_prompt_rules_belong_to_the_model_and_load_nothing():
    code = ("import sys; from engine.models import prompt_rules; prompt_rules('embedded').validate(['a red cube']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # checking a prompt does not even import torch
    with pytest.raises(PromptError, match="'shiny' is not in the vocabulary"):
        prompt_rules("embedded").validate(["a red cube", "a shiny cube"])
    assert "shapes:" in prompt_rules("embedded").vocabulary()
    rules = OpenText()
    rules.validate(["a wooden chair with armrests"])
    assert rules.vocabulary() is None
    for bad in ("", "   ", None, "x" * 1001):
        with pytest.raises(PromptError):
            rules.validate([bad])


def test_weights_load_from_a_folder_and_a_wrong_folder_says_what_it_needs(tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    model = load_model("embedded", copy)
    assert model.validate_prompts(["a blue torus"]) is None and "colours:" in model.vocabulary()
    with pytest.raises(ModelLoadError, match=f"embedded model weights not found in {tmp_path}"):
        load_model("embedded", tmp_path)


def test_cli_generates_from_a_weights_folder_and_names_a_wrong_one(tmp_path, capsys):
    from engine.cli import main

    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    args = ["generate", "--prompt", "a red cube", "--count", "1", "--steps", "2"]
    assert main([*args, "--model", "embedded", "--model-path", str(copy), "--out", str(tmp_path / "out")]) == 0
    assert list((tmp_path / "out").glob("*.glb"))
    assert main([*args, "--model-path", str(tmp_path / "empty"), "--out", str(tmp_path / "out2")]) == 2  # bad input, like a bad prompt
    assert "must be a folder of model weights (no such folder)" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # a folder without the weights: the model names what it expected
    assert main([*args, "--model-path", str(tmp_path / "empty"), "--out", str(tmp_path / "out2")]) == 2
    assert "embedded model weights not found in" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    # Heun is Shap-E's sampler; the embedded model's cosine schedule makes it diverge: refused up front.
    assert main([*args, "--scheduler", "heun", "--out", str(tmp_path / "out3")]) == 2
    assert "model 'embedded' samples with ddim, ddpm, dpmsolver-sde, not 'heun'" in capsys.readouterr().err
    assert not (tmp_path / "out3").exists()


def test_alignment_defaults_come_from_the_models_own_tuning(monkeypatch, tmp_path):
    import dataclasses

    import engine.models as models
    from engine.align.job import AlignJob
    from engine.models.tuning import AlignmentDefaults

    job = dict(out_dir=str(tmp_path), reward="dnc", method="refl")
    assert AlignJob(**job).config().beta == models.REGISTRY["embedded"].alignment.beta["dnc"]
    tuned = AlignmentDefaults(beta={"dnc": 7.0}, lr={"refl": 1e-5}, prompts=("a cube",))
    spec = dataclasses.replace(models.REGISTRY["embedded"], alignment=tuned)
    monkeypatch.setitem(models.REGISTRY, "embedded", spec)
    config = AlignJob(**job).config()
    assert (config.beta, config.lr) == (7.0, 1e-5)
    assert AlignJob(**job).prompts == ["a cube"]
    assert AlignJob(**job, beta=2.0, lr=3e-4).config().beta == 2.0  # the user's numbers win


def test_each_models_default_prompts_pass_its_own_rules():
    from engine.models.embedded.grammar import SHAPES, parse_prompt

    for spec in REGISTRY.values():
        spec.prompts.validate(list(spec.example_prompts) + list(spec.alignment.prompts))
        assert spec.alignment.prompts, f"{spec.name}: an alignment job without prompts needs defaults"
    # The embedded model's examples (the demo's and the preference study's prompts): one per shape.
    assert [parse_prompt(p).shape for p in REGISTRY["embedded"].example_prompts] == list(SHAPES)
