"""register()/unregister() of the add-on with the bpy wheel: classes, properties, timers, handlers,
no leaks after two rounds, no torch in Blender's process."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "bl_ext_pytest.user_default.nabla_r2d3"  # the name conftest.load_addon gives the add-on

PANELS = ("VIEW3D_PT_nabla_r2d3_generate", "VIEW3D_PT_nabla_r2d3_vocabulary", "VIEW3D_PT_nabla_r2d3_align",
          "VIEW3D_PT_nabla_r2d3_adapters", "VIEW3D_PT_nabla_r2d3_jobs", "VIEW3D_PT_nabla_r2d3_previews",
          "VIEW3D_PT_nabla_r2d3_gallery")
OPERATORS = ("generate", "align", "cancel_job", "watch_jobs", "check_engine", "clear_previews", "refresh_adapters",
             "load_adapter", "unload_adapter", "open_adapters_folder", "palette_add", "palette_remove",
             "show_vocabulary", "gallery_mark", "gallery_import", "gallery_open", "gallery_clear", "variations",
             "align_to_picks")


def _panel_registered(name: str) -> bool:
    return bpy.types.Panel.bl_rna_get_subclass_py(name) is not None


def _operator_registered(name: str) -> bool:
    return hasattr(bpy.types, f"NABLA_R2D3_OT_{name}")


def _handlers(addon) -> list:
    lifecycle = addon.blender.lifecycle
    return [f for f in (*bpy.app.handlers.load_pre, *bpy.app.handlers.load_post)
            if f in (lifecycle._on_load_pre, lifecycle._on_load_post)]


def test_package_name_is_not_hard_coded(addon):
    assert addon.__package__ == PACKAGE
    assert addon.NablaR2D3Preferences.bl_idname == PACKAGE
    assert addon.operators.__package__ == PACKAGE + ".operators"
    assert addon.blender.jobs.__name__ == PACKAGE + ".blender.jobs"
    assert addon.blender.generate.prompt_rules.__module__ == PACKAGE + ".engine.models"


def test_classes_cover_operators_panels_and_properties(addon):
    assert addon.NablaR2D3Preferences in addon.classes
    for group in (addon.operators.classes, addon.panels.classes, addon.properties.classes):
        assert set(group) <= set(addon.classes)
    for panel in addon.panels.classes:
        assert (panel.bl_space_type, panel.bl_region_type, panel.bl_category) == ("VIEW_3D", "UI", "Nabla-R2D3")
    assert {p.__name__ for p in addon.panels.classes} == set(PANELS)
    # property groups come before the classes that point at them
    order = [c.__name__ for c in addon.classes]
    assert order.index("NablaR2D3PaletteColour") < order.index("NablaR2D3SceneSettings")
    assert order.index("NablaR2D3Preview") < order.index("NablaR2D3JobState")


def test_register_unregister_twice_without_leaks(addon):
    timers_before = addon.blender.lifecycle._refresh_adapters
    assert not _panel_registered(PANELS[0])
    for _ in range(2):
        addon.register()
        try:
            assert all(_panel_registered(p) for p in PANELS)
            assert all(_operator_registered(o) for o in OPERATORS)
            assert addon.NablaR2D3Preferences.is_registered
            assert isinstance(bpy.context.scene.nabla_r2d3, addon.properties.NablaR2D3SceneSettings)
            assert bpy.context.window_manager.nabla_r2d3.status == "IDLE"
            assert len(_handlers(addon)) == 2
            assert bpy.app.timers.is_registered(timers_before)
            assert bpy.ops.nabla_r2d3.show_vocabulary() == {"FINISHED"}
        finally:
            addon.unregister()
        assert not any(_panel_registered(p) for p in PANELS)
        assert not any(_operator_registered(o) for o in OPERATORS)
        assert not addon.NablaR2D3Preferences.is_registered
        assert not hasattr(bpy.types.Scene, "nabla_r2d3")
        assert not hasattr(bpy.types.WindowManager, "nabla_r2d3")
        assert _handlers(addon) == []
        assert not bpy.app.timers.is_registered(timers_before)
        assert not bpy.app.timers.is_registered(addon.blender.jobs.MANAGER.timer_function)
        assert addon.blender.jobs.MANAGER.client is None


def test_preferences_defaults_without_an_enabled_entry(addon):
    addon.register()
    try:
        prefs = addon.preferences.get_preferences()
        assert (prefs.device, prefs.model_source, prefs.engine_python, prefs.keep_engine_loaded) == ("AUTO", "EMBEDDED", "", True)
    finally:
        addon.unregister()


def test_addon_import_and_register_do_not_import_torch(loader_source):
    script = loader_source + textwrap.dedent(
        f"""
        from pathlib import Path
        import bpy
        addon = load_addon(Path({str(ROOT)!r}))
        addon.register()
        from {PACKAGE}.engine.worker import client, protocol  # what the add-on uses of the engine
        addon.unregister()
        heavy = sorted(m for m in ("torch", "diffusers", "transformers", "peft", "skimage", "trimesh") if m in sys.modules)
        assert not heavy, heavy
        print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


def test_menus_offer_exactly_the_engine_names(registered):
    """One source for names: the panels' enums are engine/names.py's, as the CLI's choices are."""
    from engine import names
    from engine.cli import build_parser

    props = bpy.types.Scene.bl_rna.properties["nabla_r2d3"].fixed_type.properties
    for prop, expected in (("method", names.METHODS), ("renderer", names.RENDERERS)):
        assert tuple(item.identifier for item in props[prop].enum_items) == expected, prop
    # the Sampler menu is the chosen model's part of names.SCHEDULERS (tests/blender/test_settings.py)
    settings = bpy.context.scene.nabla_r2d3
    offered = [s for s in names.SCHEDULERS if bpy.types.UILayout.enum_item_name(settings, "scheduler", s)]
    assert offered == [s for s in names.SCHEDULERS if s in names.MODEL_SCHEDULERS["embedded"]]
    align = build_parser()._subparsers._group_actions[0].choices["align"]
    choices = {a.dest: tuple(a.choices) for a in align._actions if a.choices}
    assert (choices["method"], choices["renderer"]) == (names.METHODS, names.RENDERERS)
