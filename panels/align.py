# SPDX-License-Identifier: GPL-3.0-or-later
"""Align panel: the reward (palette colours or a reference image of this file) and training settings."""
import bpy

from ..engine.names import GRADIENT_FREE_METHODS
from .base import SidebarPanel, settings


class VIEW3D_PT_nabla_r2d3_align(SidebarPanel, bpy.types.Panel):
    bl_label = "Align"
    bl_order = 1
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        s = settings(context)
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(s, "reward")
        if s.reward == "palette":
            box = layout.box()
            box.label(text="Palette", icon='COLOR')
            col = box.column(align=True)
            for i, item in enumerate(s.palette):
                row = col.row(align=True)
                row.prop(item, "color", text="")
                op = row.operator("nabla_r2d3.palette_remove", text="", icon='X')
                op.index = i
            if len(s.palette) == 0:
                col.label(text="No colours yet", icon='INFO')
            box.operator("nabla_r2d3.palette_add", icon='ADD')
        elif s.reward == "reference":
            layout.prop(s, "reference_image")
            if s.reference_image is None:
                layout.label(text="Pick one of this file's images", icon='INFO')
        layout.prop(s, "align_prompts")
        col = layout.column()
        col.prop(s, "method")
        col.prop(s, "renderer")
        if s.renderer == "cycles" and s.method not in GRADIENT_FREE_METHODS:
            col.label(text="Cycles gives no gradients: use DDPO", icon='ERROR')
        col.prop(s, "beta")
        col.prop(s, "align_steps")
        col.prop(s, "learning_rate")
        col.prop(s, "lora_rank")
        col.prop(s, "adapter_name")
        row = layout.row()
        row.scale_y = 1.5
        row.operator("nabla_r2d3.align", icon='PLAY')
        box = layout.box()
        box.label(text="From the Gallery's marks", icon='FUND')
        row = box.row()
        row.operator("nabla_r2d3.align_to_picks", icon='PLAY')
        box.label(text="Learns a reward from liked/disliked candidates; uses the settings above")


classes = (VIEW3D_PT_nabla_r2d3_align,)
