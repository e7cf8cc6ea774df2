# SPDX-License-Identifier: GPL-3.0-or-later
"""Align: finetune a LoRA adapter on a reward (engine process), and edit the reward's palette."""

import bpy
from bpy.props import IntProperty

from ..blender import align
from .common import build_and_run


class NABLA_R2D3_OT_align(bpy.types.Operator):
    """Train a LoRA adapter so the prompts' assets score higher on the reward; saved to the adapters folder"""

    bl_idname = "nabla_r2d3.align"
    bl_label = "Align"
    bl_options = {'REGISTER'}

    def execute(self, context):
        return build_and_run(self, context, align.make_job)


class NABLA_R2D3_OT_palette_add(bpy.types.Operator):
    """Add a colour to the reward palette"""

    bl_idname = "nabla_r2d3.palette_add"
    bl_label = "Add Colour"
    bl_options = {'REGISTER', 'UNDO', 'INTERNAL'}

    def execute(self, context):
        palette = context.scene.nabla_r2d3.palette
        item = palette.add()
        if len(palette) > 1:
            item.color = palette[len(palette) - 2].color
        return {'FINISHED'}


class NABLA_R2D3_OT_palette_remove(bpy.types.Operator):
    """Remove this colour from the reward palette"""

    bl_idname = "nabla_r2d3.palette_remove"
    bl_label = "Remove Colour"
    bl_options = {'REGISTER', 'UNDO', 'INTERNAL'}

    index: IntProperty(default=0, min=0)

    def execute(self, context):
        palette = context.scene.nabla_r2d3.palette
        if self.index >= len(palette):
            self.report({'ERROR'}, f"No palette colour {self.index}")
            return {'CANCELLED'}
        palette.remove(self.index)
        return {'FINISHED'}


classes = (NABLA_R2D3_OT_align, NABLA_R2D3_OT_palette_add, NABLA_R2D3_OT_palette_remove)
