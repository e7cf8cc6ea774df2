"""Load the repository as a Blender add-on package (as Blender does, under a dotted name) and check
register()/unregister() with the bpy wheel.

Blender imports an extension as ``bl_ext.<repository>.<id>``; here the repository root is loaded as
``bl_ext_pytest.user_default.nabla_r2d3`` so any absolute import or hard-coded package name breaks.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import bpy

ROOT = Path(__file__).resolve().parents[2]
PARENT = "bl_ext_pytest.user_default"
PACKAGE = PARENT + ".nabla_r2d3"

LOADER = textwrap.dedent(
    f"""
    import importlib.util, sys, types

    def load_addon(root):
        parts = {PARENT!r}.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                parent = types.ModuleType(name)
                parent.__path__ = []
                sys.modules[name] = parent
        spec = importlib.util.spec_from_file_location(
            {PACKAGE!r}, str(root / "__init__.py"), submodule_search_locations=[str(root)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[{PACKAGE!r}] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[{PACKAGE!r}]
            raise
        return module
    """
)
_namespace: dict = {}
exec(LOADER, _namespace)
load_addon = _namespace["load_addon"]


@pytest.fixture(scope="module")
def addon():
    module = load_addon(ROOT)
    yield module
    for name in [n for n in sys.modules if n == "bl_ext_pytest" or n.startswith("bl_ext_pytest.")]:
        del sys.modules[name]


def _panel_cls(addon):
    return addon.panels.VIEW3D_PT_nabla_r2d3


def _is_registered(name: str) -> bool:
    return bpy.types.Panel.bl_rna_get_subclass_py(name) is not None


def test_package_name_is_not_hard_coded(addon):
    assert addon.__package__ == PACKAGE
    assert addon.NablaR2D3Preferences.bl_idname == PACKAGE
    assert addon.operators.__package__ == PACKAGE + ".operators"
    assert addon.panels.grammar.__name__ == PACKAGE + ".engine.data.grammar"


def test_classes_cover_operators_and_panels(addon):
    assert addon.NablaR2D3Preferences in addon.classes
    assert set(addon.operators.classes) <= set(addon.classes)
    assert set(addon.panels.classes) <= set(addon.classes)
    panel = _panel_cls(addon)
    assert (panel.bl_space_type, panel.bl_region_type, panel.bl_category) == ("VIEW_3D", "UI", "Nabla-R2D3")


def test_register_unregister_twice(addon):
    panel = _panel_cls(addon)
    operator = addon.operators.NABLA_R2D3_OT_show_vocabulary
    assert not _is_registered("VIEW3D_PT_nabla_r2d3")
    for _ in range(2):
        addon.register()
        try:
            assert _is_registered("VIEW3D_PT_nabla_r2d3")
            assert panel.is_registered and operator.is_registered
            assert addon.NablaR2D3Preferences.is_registered
            assert bpy.types.Operator.bl_rna_get_subclass_py("NABLA_R2D3_OT_show_vocabulary") is operator
            assert bpy.ops.nabla_r2d3.show_vocabulary() == {"FINISHED"}
        finally:
            addon.unregister()
        assert not _is_registered("VIEW3D_PT_nabla_r2d3")
        assert not panel.is_registered and not operator.is_registered
        assert not addon.NablaR2D3Preferences.is_registered
        assert bpy.types.Operator.bl_rna_get_subclass_py("NABLA_R2D3_OT_show_vocabulary") is None


class _RecordingLayout:
    """Stands in for bpy.types.UILayout in Panel.draw: records labels, operators and icons."""

    def __init__(self, log):
        self.log = log

    def label(self, *, text="", icon="NONE"):
        self.log.append(("label", text, icon))

    def operator(self, idname, *, text="", icon="NONE"):
        self.log.append(("operator", idname, icon))

    def box(self):
        return _RecordingLayout(self.log)

    def column(self, **_):
        return _RecordingLayout(self.log)

    row = column


def test_panel_draws_engine_status_and_vocabulary(addon):
    log: list = []
    fake_panel = types.SimpleNamespace(layout=_RecordingLayout(log))
    _panel_cls(addon).draw(fake_panel, bpy.context)
    labels = " | ".join(text for kind, text, _ in log if kind == "label")
    assert "Engine installed" in labels
    grammar = addon.panels.grammar
    for word in (*grammar.SHAPES, *grammar.COLOURS, *grammar.SIZES):
        assert word in labels, word
    assert ("operator", "nabla_r2d3.show_vocabulary") in [(k, i) for k, i, _ in log if k == "operator"]
    valid_icons = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())
    for _, _, icon in log:
        assert icon in valid_icons, icon


def test_addon_import_and_register_do_not_import_torch():
    script = LOADER + textwrap.dedent(
        f"""
        from pathlib import Path
        import bpy
        addon = load_addon(Path({str(ROOT)!r}))
        addon.register()
        addon.unregister()
        heavy = sorted(m for m in ("torch", "diffusers", "transformers", "peft") if m in sys.modules)
        assert not heavy, heavy
        print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
