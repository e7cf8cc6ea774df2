# SPDX-License-Identifier: GPL-3.0-or-later
"""Adapters panel: the saved adapters; load one for Generate, unload, blend weight."""
import bpy

from .base import SidebarPanel, settings, state


class VIEW3D_PT_nabla_r2d3_adapters(SidebarPanel, bpy.types.Panel):
    bl_label = "Adapters"
    bl_order = 2
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        s, st = settings(context), state(context)
        layout = self.layout
        row = layout.row(align=True)
        row.operator("nabla_r2d3.refresh_adapters", icon='FILE_REFRESH', text="Refresh")
        row.operator("nabla_r2d3.open_adapters_folder", icon='FILE_FOLDER', text="Open Folder")
        col = layout.column(align=True)
        if len(st.adapters) == 0:
            col.label(text="No adapters yet: train one in Align", icon='INFO')
        for item in st.adapters:
            loaded = item.name == s.adapter
            op = col.operator("nabla_r2d3.load_adapter", text=item.name, depress=loaded,
                              icon='CHECKBOX_HLT' if loaded else 'CHECKBOX_DEHLT')
            op.name = item.name
            if item.summary:
                col.label(text=item.summary)
        if s.adapter:
            layout.prop(s, "adapter_weight")
            layout.operator("nabla_r2d3.unload_adapter", icon='X')
        else:
            layout.label(text="Generating with the base model")


classes = (VIEW3D_PT_nabla_r2d3_adapters,)
