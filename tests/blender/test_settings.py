"""The panels' settings against the engine's: the Sampler menu per model, the limits, the labels of
the two kinds of steps, and what the Engine Python preference says when it names a folder."""
from __future__ import annotations

import os
import stat

import pytest

import bpy

from engine import names, params
from engine.models import model_spec


@pytest.fixture
def settings(registered, clean_scene, prefs):
    s = bpy.context.scene.nabla_r2d3
    yield s
    unset_sampler(s)
    for name in ("model_source", "model_kind", "engine_python"):
        prefs.property_unset(name)


def unset_sampler(s) -> None:
    """``property_unset`` for the Sampler: its get/set store it themselves, which property_unset leaves."""
    if "scheduler" in s:
        del s["scheduler"]


def choose_model(prefs, model: str) -> None:
    """What the preferences hold when ``model`` generates (as blender.generate.model_kind reads them)."""
    prefs.model_source, prefs.model_kind = ("EMBEDDED", "embedded") if model == "embedded" else ("LOCAL", model)


def offered(s) -> tuple[str, ...]:
    """The Sampler menu as Blender builds it (RNA's enum_items lists no callback's items)."""
    return tuple(name for name in names.SCHEDULERS if bpy.types.UILayout.enum_item_name(s, "scheduler", name))


@pytest.mark.parametrize("model", names.MODELS)
def test_the_sampler_menu_offers_what_the_chosen_model_samples_with(settings, prefs, model):
    """Heun was offered with the embedded model, which then refused the job."""
    choose_model(prefs, model)
    assert set(offered(settings)) == set(model_spec(model).schedulers)
    assert settings.scheduler == "ddim"  # the default, whichever model
    for scheduler in names.SCHEDULERS:
        if scheduler in model_spec(model).schedulers:
            settings.scheduler = scheduler
            assert settings.scheduler == scheduler
        else:
            with pytest.raises(TypeError):
                settings.scheduler = scheduler


def test_a_sampler_picked_for_another_model_is_never_what_a_job_gets(registered, settings, prefs):
    choose_model(prefs, "shap-e")
    settings.scheduler = "heun"
    choose_model(prefs, "embedded")
    assert "heun" not in offered(settings) and settings.scheduler == "ddim"
    req = registered.blender.generate.GenerateRequest.from_settings(settings)
    assert req.scheduler == "ddim"
    choose_model(prefs, "shap-e")
    assert settings.scheduler == "heun"  # kept for the model it was chosen for


def test_panel_limits_are_the_engines(settings):
    """Generate allowed 64 assets where the CLI and the worker allow 256 (and 200 sampling steps
    where they allow 1000, guidance 30 where they allow 100)."""
    rna = settings.bl_rna.properties
    assert rna["count"].hard_max == params.MAX_COUNT == 256
    assert rna["steps"].hard_max == params.MAX_SAMPLING_STEPS
    assert rna["guidance"].hard_max == pytest.approx(params.MAX_GUIDANCE)
    assert rna["adapter_weight"].hard_max == pytest.approx(params.MAX_ADAPTER_WEIGHT)
    assert rna["learning_rate"].hard_max == pytest.approx(params.MAX_LR)
    assert rna["beta"].hard_max == pytest.approx(params.MAX_BETA, rel=1e-6)
    settings.count = params.MAX_COUNT
    assert settings.count == params.MAX_COUNT
    settings.property_unset("count")
    # and the operator's script override of the count
    operator = bpy.ops.nabla_r2d3.generate.get_rna_type().properties["count"]
    assert operator.hard_max == params.MAX_COUNT


def test_generate_steps_and_align_rounds_have_their_own_labels(settings):
    """Both were labelled "Steps": sampling steps of each asset, and training rounds of alignment."""
    rna = settings.bl_rna.properties
    assert rna["steps"].name == "Sampling Steps" and rna["align_steps"].name == "Rounds"
    assert "denoising steps" in rna["steps"].description.lower()
    assert "training rounds" in rna["align_steps"].description.lower()


def _fake_python(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_an_engine_python_folder_is_named_a_folder_with_the_python_inside(registered, settings, prefs, tmp_path):
    """A folder was reported as not existing."""
    engine_python = registered.blender.engine_python
    venv = tmp_path / "venv"
    inside = _fake_python(venv / "bin" / "python")
    for folder in (venv, venv / "bin"):
        prefs.engine_python = str(folder)
        with pytest.raises(engine_python.EnginePythonError) as caught:
            engine_python.resolve(prefs)
        message = str(caught.value)
        assert "is a folder" in message and str(inside) in message and "does not exist" not in message
        assert "is a folder" in engine_python.status_text(prefs)  # the preferences say so before any job
        assert engine_python.status_icon(prefs) == "ERROR"
        with pytest.raises(RuntimeError, match="is a folder"):
            bpy.ops.nabla_r2d3.check_engine()
    empty = tmp_path / "empty"
    empty.mkdir()
    prefs.engine_python = str(empty)
    with pytest.raises(engine_python.EnginePythonError, match="is a folder.*e.g. " + os.path.join(str(empty), "bin", "python")):
        engine_python.resolve(prefs)
