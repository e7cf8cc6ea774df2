# SPDX-License-Identifier: GPL-3.0-or-later
"""Adapters: list the saved ones, pick one for Generate (load) or none (unload), open the folder."""

import bpy
from bpy.props import StringProperty

from ..blender import adapters, desktop, paths
from ..preferences import get_preferences


class NABLA_R2D3_OT_refresh_adapters(bpy.types.Operator):
    """Re-read the adapters folder"""

    bl_idname = "nabla_r2d3.refresh_adapters"
    bl_label = "Refresh Adapters"
    bl_options = {'REGISTER', 'INTERNAL'}

    def execute(self, context):
        try:
            n = adapters.refresh(context.window_manager, get_preferences(context))
        except OSError as exc:
            self.report({'ERROR'}, f"Cannot read the adapters folder: {exc}")
            return {'CANCELLED'}
        self.report({'INFO'}, f"{n} adapter{'s' if n != 1 else ''}")
        return {'FINISHED'}


class NABLA_R2D3_OT_load_adapter(bpy.types.Operator):
    """Use this adapter when generating"""

    bl_idname = "nabla_r2d3.load_adapter"
    bl_label = "Load Adapter"
    bl_options = {'REGISTER', 'UNDO'}

    name: StringProperty(name="Adapter", description="Folder name of the adapter in the adapters folder")

    def execute(self, context):
        folder = paths.adapters_dir(get_preferences(context))
        if not (folder / self.name / paths.ADAPTER_CONFIG).is_file():
            self.report({'ERROR'}, f"No adapter {self.name!r} in {folder}")
            return {'CANCELLED'}
        context.scene.nabla_r2d3.adapter = self.name
        return {'FINISHED'}


class NABLA_R2D3_OT_unload_adapter(bpy.types.Operator):
    """Generate with the base model again"""

    bl_idname = "nabla_r2d3.unload_adapter"
    bl_label = "Unload Adapter"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        return bool(context.scene and context.scene.nabla_r2d3.adapter)

    def execute(self, context):
        context.scene.nabla_r2d3.adapter = ""
        return {'FINISHED'}


class NABLA_R2D3_OT_open_adapters_folder(bpy.types.Operator):
    """Open the adapters folder in the file browser of the system"""

    bl_idname = "nabla_r2d3.open_adapters_folder"
    bl_label = "Open Adapters Folder"
    bl_options = {'REGISTER', 'INTERNAL'}

    def execute(self, context):
        folder = paths.adapters_dir(get_preferences(context))
        try:
            desktop.open_folder(folder)
        except desktop.OpenFolderError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"Opened {folder}")
        return {'FINISHED'}


classes = (NABLA_R2D3_OT_refresh_adapters, NABLA_R2D3_OT_load_adapter, NABLA_R2D3_OT_unload_adapter,
           NABLA_R2D3_OT_open_adapters_folder)
