# SPDX-License-Identifier: GPL-3.0-or-later
"""Gallery panel: the current job's candidates as thumbnails, each with like / dislike / neutral
marks and a tick for Import Chosen; variations of the active object or of a candidate."""
import bpy

from ..blender import thumbnails
from ..engine.picks import MARKS
from .base import SidebarPanel, settings

MARK_ICONS = {"liked": 'FUND', "disliked": 'CANCEL', "neutral": 'REMOVE'}


class VIEW3D_PT_nabla_r2d3_gallery(SidebarPanel, bpy.types.Panel):
    bl_label = "Gallery"
    bl_order = 1

    def draw(self, context):
        s = settings(context)
        layout = self.layout
        counts = {m: sum(1 for i in s.gallery if i.mark == m) for m in MARKS}
        if len(s.gallery) == 0:
            layout.label(text="Generate (or open a job folder) to see candidates here", icon='INFO')
        else:
            layout.label(text=f"{len(s.gallery)} candidates: {counts['liked']} liked, {counts['disliked']} disliked, "
                              f"{counts['neutral']} neutral")
            grid = layout.grid_flow(columns=3, even_columns=True, even_rows=False, align=False)
            for i, item in enumerate(s.gallery):
                box = grid.box().column(align=True)
                if item.thumbnail:
                    box.template_icon(icon_value=thumbnails.icon_id(item.thumbnail), scale=4.0)
                else:
                    box.label(text="(no thumbnail)", icon='MESH_DATA')
                row = box.row(align=True)
                row.prop(item, "chosen", text="")
                row.label(text=f"#{item.seed}" + (" *" if item.object_name else ""))
                marks = box.row(align=True)
                for mark in MARKS:
                    op = marks.operator("nabla_r2d3.gallery_mark", text="", icon=MARK_ICONS[mark], depress=item.mark == mark)
                    op.index, op.mark = i, mark
                op = marks.operator("nabla_r2d3.variations", text="", icon='MOD_NOISE')
                op.index = i
            row = layout.row(align=True)
            row.operator("nabla_r2d3.gallery_import", text="Import Chosen", icon='IMPORT').which = 'CHOSEN'
            row.operator("nabla_r2d3.gallery_import", text="Liked").which = 'LIKED'
            row.operator("nabla_r2d3.gallery_import", text="All").which = 'ALL'
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(s, "variation_strength")
        col.prop(s, "variation_count")
        row = layout.row(align=True)
        row.operator("nabla_r2d3.variations", text="Variations of Active Object", icon='MOD_NOISE').index = -1
        row = layout.row(align=True)
        row.operator("nabla_r2d3.gallery_open", icon='FILE_FOLDER')
        row.operator("nabla_r2d3.gallery_clear", text="", icon='TRASH')


classes = (VIEW3D_PT_nabla_r2d3_gallery,)
