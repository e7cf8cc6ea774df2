"""Panels and preferences drawn against a recording layout: they show the properties and operators
they promise, every property and operator they name exists, and every icon is a real one."""
from __future__ import annotations

import json
import sys
import types

import pytest

import bpy

ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())


class _OperatorProps:
    """What ``layout.operator()`` returns: refuses attributes the operator does not have."""

    def __init__(self, idname, log):
        module, _, name = idname.partition(".")
        object.__setattr__(self, "_rna", getattr(getattr(bpy.ops, module), name).get_rna_type())
        object.__setattr__(self, "_record", {})
        log.append(("operator_props", idname, self._record))

    def __setattr__(self, name, value):
        assert name in self._rna.properties, f"operator has no property {name!r}"
        self._record[name] = value


class RecordingLayout:
    """Stands in for bpy.types.UILayout in draw(): records calls, checks names against Blender's RNA."""

    def __init__(self, log):
        object.__setattr__(self, "log", log)

    def __setattr__(self, name, value):  # enabled, active, alert, scale_y, use_property_split, ...
        assert name in bpy.types.UILayout.bl_rna.properties, f"UILayout has no attribute {name!r}"
        object.__setattr__(self, name, value)

    def _icon(self, icon):
        assert icon in ICONS, f"unknown icon {icon!r}"

    def prop(self, data, prop, *, text=None, icon="NONE", **kw):
        assert prop in data.bl_rna.properties, f"{data.bl_rna.identifier} has no property {prop!r}"
        self._icon(icon)
        self.log.append(("prop", data.bl_rna.identifier, prop))

    def prop_search(self, data, prop, search_data, search_prop, *, text=None, icon="NONE", **kw):
        assert prop in data.bl_rna.properties and search_prop in search_data.bl_rna.properties
        self._icon(icon)
        self.log.append(("prop", data.bl_rna.identifier, prop))

    def operator(self, idname, *, text=None, icon="NONE", depress=False, **kw):
        module, _, name = idname.partition(".")
        assert hasattr(getattr(bpy.ops, module), name), f"no operator {idname}"
        self._icon(icon)
        self.log.append(("operator", idname, text))
        return _OperatorProps(idname, self.log)

    def label(self, *, text="", icon="NONE", **kw):
        self._icon(icon)
        self.log.append(("label", text))

    def progress(self, *, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0 and type in ("BAR", "RING")
        self.log.append(("progress", factor, text))

    def template_icon(self, *, icon_value=0, scale=1.0):
        self.log.append(("template_icon", icon_value))

    def separator(self, **kw):
        pass

    def _child(self, **kw):
        return RecordingLayout(self.log)

    box = row = column = split = grid_flow = _child


def draw(panel_cls, context=None):
    log: list = []
    fake = types.SimpleNamespace(layout=RecordingLayout(log))
    panel_cls.draw(fake, context or bpy.context)
    return log


def props(log, owner=None):
    return {p for kind, o, p, *_ in [e + (None,) for e in log if e[0] == "prop"] if owner is None or o == owner}


def operators(log):
    return [e[1] for e in log if e[0] == "operator"]


def labels(log):
    return " | ".join(e[1] for e in log if e[0] == "label")


@pytest.fixture
def settings(registered, clean_scene):
    s = bpy.context.scene.nabla_r2d3
    yield s
    for name in ("reward", "adapter", "use_guidance"):
        s.property_unset(name)
    s.palette.clear()
    s.reference_image = None


def test_generate_panel_shows_prompt_count_seed_steps_guidance_sampler_adapter(registered, settings):
    log = draw(registered.panels.generate.VIEW3D_PT_nabla_r2d3_generate)
    shown = props(log, "NablaR2D3SceneSettings")
    assert {"prompt", "count", "seed", "steps", "use_guidance", "guidance", "scheduler", "adapter"} <= shown
    assert "adapter_weight" not in shown  # only once an adapter is chosen
    assert operators(log) == ["nabla_r2d3.generate"]
    settings.adapter = "x"
    assert "adapter_weight" in props(draw(registered.panels.generate.VIEW3D_PT_nabla_r2d3_generate))


def test_vocabulary_subpanel_lists_every_word(registered, settings):
    text = labels(draw(registered.panels.generate.VIEW3D_PT_nabla_r2d3_vocabulary))
    from engine.models.embedded import grammar

    for word in (*grammar.SHAPES, *grammar.COLOURS, *grammar.SIZES):
        assert word in text


def test_align_panel_shows_reward_and_its_parameters(registered, settings):
    panel = registered.panels.align.VIEW3D_PT_nabla_r2d3_align
    training = {"method", "renderer", "beta", "align_steps", "learning_rate", "lora_rank", "align_prompts"}

    settings.reward = "palette"
    for rgb in ((1, 0, 0), (0, 0, 1)):
        settings.palette.add().color = rgb
    log = draw(panel)
    assert {"reward", *training} <= props(log, "NablaR2D3SceneSettings")
    assert sum(1 for e in log if e[0] == "prop" and e[1:] == ("NablaR2D3PaletteColour", "color")) == 2
    removes = [e[2] for e in log if e[0] == "operator_props" and e[1] == "nabla_r2d3.palette_remove"]
    assert removes == [{"index": 0}, {"index": 1}]
    assert {"nabla_r2d3.palette_add", "nabla_r2d3.align"} <= set(operators(log))

    settings.reward = "reference"
    log = draw(panel)
    assert "reference_image" in props(log) and "color" not in props(log)
    assert "Pick one of this file's images" in labels(log)

    settings.reward = "dnc"
    log = draw(panel)
    assert not {"reference_image", "color"} & props(log)
    assert training <= props(log)


def test_adapters_panel_lists_saved_adapters_and_load_unload(registered, settings, prefs, tmp_path):
    folder = registered.blender.paths.adapters_dir(prefs)
    for name in ("warm_palette", "clean_geometry"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "adapter_config.json").write_text("{}")
    (folder / "clean_geometry" / "nabla_r2d3.json").write_text(json.dumps({"reward": {"name": "dnc"}, "method": "nabla_r2d3"}))
    (folder / "not_an_adapter").mkdir(exist_ok=True)
    assert bpy.ops.nabla_r2d3.refresh_adapters() == {"FINISHED"}
    panel = registered.panels.adapters.VIEW3D_PT_nabla_r2d3_adapters

    log = draw(panel)
    loads = [e[2] for e in log if e[0] == "operator_props" and e[1] == "nabla_r2d3.load_adapter"]
    assert loads == [{"name": "clean_geometry"}, {"name": "warm_palette"}]
    assert "nabla_r2d3.unload_adapter" not in operators(log)

    assert bpy.ops.nabla_r2d3.load_adapter(name="warm_palette") == {"FINISHED"}
    assert settings.adapter == "warm_palette"
    log = draw(panel)
    assert "adapter_weight" in props(log) and "nabla_r2d3.unload_adapter" in operators(log)
    assert bpy.ops.nabla_r2d3.unload_adapter() == {"FINISHED"}
    assert settings.adapter == ""
    with pytest.raises(RuntimeError, match="No adapter 'gone'"):
        bpy.ops.nabla_r2d3.load_adapter(name="gone")


@pytest.mark.skipif(sys.platform != "linux", reason="xdg-open: the Linux desktop's file opener")
def test_open_adapters_folder_reports_a_missing_or_failing_file_opener(registered, prefs, tmp_path, monkeypatch):
    """Where the desktop had no file opener, the button printed a traceback and still said FINISHED."""
    folder = registered.blender.paths.adapters_dir(prefs)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no xdg-open anywhere
    with pytest.raises(RuntimeError, match=rf"this system has no file opener \(xdg-open\); open {folder} yourself"):
        bpy.ops.nabla_r2d3.open_adapters_folder()

    opener = bin_dir / "xdg-open"
    opener.write_text("#!/bin/sh\necho 'xdg-open: no method available for opening' >&2\nexit 3\n")
    opener.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"xdg-open could not open .* \(exit 3: xdg-open: no method available"):
        bpy.ops.nabla_r2d3.open_adapters_folder()

    opened = tmp_path / "opened.txt"
    opener.write_text(f"#!/bin/sh\nprintf '%s' \"$1\" > {opened}\n")
    assert bpy.ops.nabla_r2d3.open_adapters_folder() == {"FINISHED"}
    assert opened.read_text() == str(folder)


def test_jobs_panel_idle_running_error_and_reward_curve(registered, settings, tmp_path):
    panel = registered.panels.jobs.VIEW3D_PT_nabla_r2d3_jobs
    state = bpy.context.window_manager.nabla_r2d3
    log = draw(panel)
    assert "No job running" in labels(log) and not [e for e in log if e[0] == "progress"]

    try:
        state.status, state.job_label, state.progress, state.message, state.queued = "RUNNING", "Generate 4", 0.25, "step 5/20", 2
        log = draw(panel)
        assert ("progress", pytest.approx(0.25), "step 5/20") in log
        cancels = [e[2] for e in log if e[0] == "operator_props" and e[1] == "nabla_r2d3.cancel_job"]
        assert cancels == [{}, {"all": True}]
        assert "2 more queued" in labels(log)

        png = tmp_path / "curve.png"
        img = bpy.data.images.new("curve", 4, 4)
        img.save(filepath=str(png), save_copy=True)
        bpy.data.images.remove(img)
        state.reward_curve = str(png)
        assert [e for e in draw(panel) if e[0] == "template_icon"]
    finally:
        for name in ("status", "job_label", "progress", "message", "queued", "reward_curve"):
            state.property_unset(name)

    state.last_error = "The engine process crashed; the scene is unchanged. " + "word " * 20
    text = labels(draw(panel))
    assert "crashed" in text and "unchanged" in text
    state.last_error = ""


def test_previews_panel_shows_a_thumbnail_per_preview(registered, settings, tmp_path):
    panel = registered.panels.previews.VIEW3D_PT_nabla_r2d3_previews
    assert "appear here" in labels(draw(panel))
    state = bpy.context.window_manager.nabla_r2d3
    for label in ("before", "after"):
        item = state.previews.add()
        item.name, item.path = label, str(tmp_path / f"{label}.png")
    log = draw(panel)
    assert len([e for e in log if e[0] == "template_icon"]) == 2
    assert labels(log).split(" | ")[:2] == ["after", "before"]  # newest first
    assert bpy.ops.nabla_r2d3.clear_previews() == {"FINISHED"}
    assert len(state.previews) == 0


def test_preferences_show_device_model_engine_python_and_folders(registered, prefs):
    log: list = []

    class WithLayout:  # the preferences, drawn into a recording layout
        layout = RecordingLayout(log)

        def __getattr__(self, name):
            return getattr(prefs, name)

    registered.NablaR2D3Preferences.draw(WithLayout(), bpy.context)
    assert {"device", "model_source", "engine_python", "adapters_dir", "cache_dir", "keep_engine_loaded"} <= props(log)
    assert "nabla_r2d3.check_engine" in operators(log)
    text = labels(log)
    assert str(registered.blender.paths.adapters_dir(prefs)) in text
    assert "Online access" in text  # says whether the engine may use the network
