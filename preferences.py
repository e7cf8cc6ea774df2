# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: machine settings (compute device, model source, engine Python, folders).

They live in Blender's user preferences, never in a .blend. :func:`get_preferences` returns them, or
their defaults when the add-on is registered without being enabled through the preferences (as in
scripts that call ``register()`` directly).
"""

import sys
import types

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from .engine.names import MODEL_ITEMS

ADDON_ID = __package__  # "bl_ext.<repo>.nabla_r2d3" inside Blender; never hard-coded

DEVICES = (
    ("AUTO", "Automatic", "CUDA if torch sees an NVIDIA GPU, else Apple MPS if available, else CPU"),
    ("CPU", "CPU", "Run the engine on the CPU (slowest, always available)"),
    ("CUDA", "CUDA", "Run the engine on an NVIDIA GPU"),
    ("MPS", "Apple Metal", "Run the engine on an Apple Silicon GPU"),
)
MODEL_SOURCES = (
    ("EMBEDDED", "Embedded", "The small model shipped inside the extension: offline, CPU friendly"),
    ("LOCAL", "Local Folder", "A backbone's weights in a folder on this computer (no download)"),
)


class NablaR2D3Preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    device: EnumProperty(name="Compute Device", items=DEVICES, default="AUTO",
                         description="Where the engine process runs the model")
    model_source: EnumProperty(name="Model", items=MODEL_SOURCES, default="EMBEDDED",
                               description="Which 3D diffusion model generates assets")
    model_path: StringProperty(name="Model Folder", subtype='DIR_PATH', default="",
                               description="Folder with a backbone's weights (used when Model is Local Folder)")
    model_kind: EnumProperty(name="Model Kind", items=MODEL_ITEMS, default=MODEL_ITEMS[0][0],
                             description="Which model the folder holds (used when Model is Local Folder)")
    engine_python: StringProperty(
        name="Engine Python", subtype='FILE_PATH', default="",
        description=(
            "Python interpreter with torch that runs the engine in its own process, e.g. the project's "
            ".venv/bin/python. Empty: Blender's own Python, if it can import torch"
        ),
    )
    adapters_dir: StringProperty(name="Adapters Folder", subtype='DIR_PATH', default="",
                                 description="Where aligned LoRA adapters are saved. Empty: the extension's user folder")
    cache_dir: StringProperty(name="Cache Folder", subtype='DIR_PATH', default="",
                              description="Where job files (meshes, previews, logs) go. Empty: the extension's user folder")
    cache_max_gb: FloatProperty(
        name="Cache Size Limit", default=5.0, min=0.0, soft_max=100.0, unit='NONE', precision=1,
        description="Job folders beyond this many GB are removed, oldest first, when a job starts (0: no limit). "
                    "Folders in use (running jobs, GLBs of objects in the open file, previews) are kept",
    )
    cache_max_days: IntProperty(
        name="Cache Age Limit", default=30, min=0, soft_max=365,
        description="Job folders older than this many days are removed when a job starts (0: no limit). "
                    "Folders in use are kept",
    )
    keep_engine_loaded: BoolProperty(
        name="Keep Engine Loaded", default=True,
        description=(
            "Keep the engine process (and the model in memory) between jobs so the next one starts "
            "at once. Off: the process exits after each job and frees its memory"
        ),
    )

    def draw(self, context):
        from .blender import engine_python, paths  # late: these modules import this one

        layout = self.layout
        layout.use_property_split = True
        col = layout.column(heading="Engine")
        col.prop(self, "device")
        col.prop(self, "model_source")
        if self.model_source == 'LOCAL':
            col.prop(self, "model_kind")
            col.prop(self, "model_path")
        col.prop(self, "engine_python")
        col.label(text=engine_python.status_text(self), icon=engine_python.status_icon(self))
        col.label(text=f"Blender's own Python: {sys.executable}", icon='INFO')
        col.operator("nabla_r2d3.check_engine", icon='FILE_REFRESH')
        col.prop(self, "keep_engine_loaded")

        col = layout.column(heading="Folders")
        col.prop(self, "adapters_dir")
        col.label(text=f"In use: {paths.adapters_dir(self, create=False)}")
        col.prop(self, "cache_dir")
        col.label(text=f"In use: {paths.cache_dir(self, create=False)}")
        col.prop(self, "cache_max_gb", text="Size Limit (GB)")
        col.prop(self, "cache_max_days", text="Age Limit (days)")
        col.operator("nabla_r2d3.clear_cache", icon='TRASH')

        col = layout.column(heading="Network")
        if bpy.app.online_access:
            col.label(text="Online access allowed: a model source may download weights", icon='URL')
        else:
            col.label(text="Online access off (Preferences > System > Network): the engine runs offline",
                      icon='INTERNET_OFFLINE')


def _defaults() -> types.SimpleNamespace:
    """The preferences' default values, for when the add-on is not enabled in the preferences."""
    values = {}
    for name, prop in NablaR2D3Preferences.__annotations__.items():
        values[name] = prop.keywords.get("default")
    return types.SimpleNamespace(**values)


def get_preferences(context=None):
    """The add-on preferences (or their defaults); ``context`` defaults to ``bpy.context``."""
    prefs = (context or bpy.context).preferences
    addon = prefs.addons.get(ADDON_ID) if prefs is not None else None
    if addon is not None and addon.preferences is not None:
        return addon.preferences
    return _defaults()
