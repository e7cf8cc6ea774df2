# SPDX-License-Identifier: GPL-3.0-or-later
"""Generate panel: prompt, count, seed, sampler settings, adapter; and the vocabulary sub-panel."""
import bpy

from ..blender import engine_python, generate
from ..preferences import get_preferences
from .base import SidebarPanel, settings, state


class VIEW3D_PT_nabla_r2d3_generate(SidebarPanel, bpy.types.Panel):
    bl_label = "Generate"
    bl_order = 0

    def draw(self, context):
        s, st = settings(context), state(context)
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        col = layout.column()
        col.prop(s, "prompt", text="Prompt")
        col.prop(s, "count")
        col.prop(s, "seed")
        col.prop(s, "seed_mode")
        col.prop(s, "steps")
        col.prop(s, "scheduler")
        col.prop(s, "use_guidance")
        sub = col.column()
        sub.enabled = s.use_guidance
        sub.prop(s, "guidance")
        col.prop_search(s, "adapter", st, "adapters", text="Adapter", icon='MODIFIER')
        if s.adapter:
            col.prop(s, "adapter_weight")
        col.prop(s, "spacing")
        col.prop(s, "gallery_first")

        prefs = get_preferences(context)
        status = engine_python.cached_status(engine_python.resolve_quiet(prefs))
        if status is not None and not status[0]:
            layout.label(text="Engine Python not usable: see the add-on preferences", icon='ERROR')
        row = layout.row()
        row.scale_y = 1.5
        row.operator("nabla_r2d3.generate", icon='PLAY')


class VIEW3D_PT_nabla_r2d3_vocabulary(SidebarPanel, bpy.types.Panel):
    bl_label = "Vocabulary"
    bl_parent_id = "VIEW3D_PT_nabla_r2d3_generate"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        text = generate.vocabulary(get_preferences(context))
        if text is None:
            self.layout.label(text="Open vocabulary: describe the asset in words", icon='INFO')
            return
        col = self.layout.column(align=True)
        for line in text.splitlines():
            col.label(text=line.strip())
        self.layout.operator("nabla_r2d3.show_vocabulary", icon='INFO')


classes = (VIEW3D_PT_nabla_r2d3_generate, VIEW3D_PT_nabla_r2d3_vocabulary)
