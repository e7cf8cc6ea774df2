# SPDX-License-Identifier: GPL-3.0-or-later
"""Jobs panel: what runs, its progress, the live reward curve, cancel; the last result or error."""
import textwrap

import bpy

from ..blender import thumbnails
from .base import SidebarPanel, state

STATUS_ICONS = {"STARTING": 'TIME', "RUNNING": 'PLAY', "CANCELLING": 'CANCEL', "IMPORTING": 'IMPORT'}


class VIEW3D_PT_nabla_r2d3_jobs(SidebarPanel, bpy.types.Panel):
    bl_label = "Jobs"
    bl_order = 3

    def draw(self, context):
        st = state(context)
        layout = self.layout
        if st.status == "IDLE":
            layout.label(text="No job running", icon='CHECKMARK')
        else:
            layout.label(text=st.job_label, icon=STATUS_ICONS.get(st.status, 'PLAY'))
            status_text = st.bl_rna.properties["status"].enum_items[st.status].name
            layout.progress(factor=st.progress, type='BAR', text=st.message or status_text)
            row = layout.row(align=True)
            row.operator("nabla_r2d3.cancel_job", text="Cancel", icon='CANCEL')
            if st.queued:
                op = row.operator("nabla_r2d3.cancel_job", text=f"Cancel All ({st.queued + 1})", icon='X')
                op.all = True
                layout.label(text=f"{st.queued} more queued")
            layout.label(text="Esc cancels too", icon='EVENT_ESC')
        if st.last_error:
            box = layout.box()
            box.alert = True
            for i, line in enumerate((textwrap.wrap(st.last_error, 48)[:4] or [""])):
                box.label(text=line, icon='ERROR' if i == 0 else 'BLANK1')
        elif st.last_info:
            layout.label(text=st.last_info, icon='INFO')
        if st.reward_curve:
            box = layout.box()
            box.label(text="Reward", icon='GRAPH')
            box.template_icon(icon_value=thumbnails.icon_id(st.reward_curve), scale=8.0)


classes = (VIEW3D_PT_nabla_r2d3_jobs,)
