# SPDX-License-Identifier: GPL-3.0-or-later
"""Previews panel: thumbnails the engine sends (e.g. before / after alignment), newest first."""
import bpy

from ..blender import thumbnails
from .base import SidebarPanel, state


class VIEW3D_PT_nabla_r2d3_previews(SidebarPanel, bpy.types.Panel):
    bl_label = "Previews"
    bl_order = 4
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        st = state(context)
        layout = self.layout
        if len(st.previews) == 0:
            layout.label(text="Jobs' preview images appear here", icon='INFO')
            return
        grid = layout.grid_flow(columns=2, even_columns=True, even_rows=True)
        for item in reversed(st.previews):
            col = grid.column(align=True)
            col.template_icon(icon_value=thumbnails.icon_id(item.path), scale=5.0)
            col.label(text=item.name)
        layout.operator("nabla_r2d3.clear_previews", icon='TRASH')


classes = (VIEW3D_PT_nabla_r2d3_previews,)
