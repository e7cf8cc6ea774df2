"""Load the repository as a Blender add-on package (as Blender does, under a dotted name) and
register it with the bpy wheel.

Blender imports an extension as ``bl_ext.<repository>.<id>``; here the repository root is loaded as
``bl_ext_pytest.user_default.nabla_r2d3`` so any absolute import or hard-coded package name breaks.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import bpy

ROOT = Path(__file__).resolve().parents[2]
PARENT = "bl_ext_pytest.user_default"
PACKAGE = PARENT + ".nabla_r2d3"

# Source, so a subprocess can load the add-on the same way.
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


@pytest.fixture(scope="session")
def addon():
    """The add-on package, imported (not registered)."""
    module = load_addon(ROOT)
    yield module
    for name in [n for n in sys.modules if n == "bl_ext_pytest" or n.startswith("bl_ext_pytest.")]:
        del sys.modules[name]


def enable_preferences(addon, data_dir: Path):
    """Give the registered add-on a preferences entry (as enabling it in Blender does), with its
    adapters and cache folders under ``data_dir`` so tests never write to the user's folders."""
    entry = bpy.context.preferences.addons.new()
    entry.module = addon.__package__
    prefs = entry.preferences
    assert prefs is not None, "preferences class not registered"
    prefs.adapters_dir = str(data_dir / "adapters")
    prefs.cache_dir = str(data_dir / "cache")
    return entry


@pytest.fixture(scope="module")
def registered(addon, tmp_path_factory):
    """The add-on registered and enabled for one test module (one engine worker per module)."""
    data_dir = tmp_path_factory.mktemp("nabla_r2d3_data")
    addon.register()
    entry = enable_preferences(addon, data_dir)
    try:
        yield addon
    finally:
        addon.unregister()
        bpy.context.preferences.addons.remove(entry)


@pytest.fixture
def prefs(registered):
    return bpy.context.preferences.addons[registered.__package__].preferences


def remove_generated() -> None:
    """Delete every object, mesh and collection an earlier test imported."""
    ids = [o for o in bpy.data.objects if "nabla_r2d3_prompt" in o]
    ids += [c for c in bpy.data.collections if c.name.startswith("Nabla-R2D3")]
    ids += [m for m in bpy.data.meshes if m.users == 0 or any(o.data == m for o in ids if hasattr(o, "data"))]
    bpy.data.batch_remove(list(dict.fromkeys(ids)))


@pytest.fixture
def clean_scene(registered):
    remove_generated()
    state = bpy.context.window_manager.nabla_r2d3
    state.last_error = state.last_info = state.reward_curve = ""
    state.previews.clear()
    yield bpy.context.scene
    remove_generated()


@pytest.fixture(scope="session")
def loader_source() -> str:
    """Python source defining ``load_addon(root)``, for subprocesses."""
    return LOADER
