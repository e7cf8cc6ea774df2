# SPDX-License-Identifier: GPL-3.0-or-later
"""Show the chosen model's prompt vocabulary (its prompt rules are pure Python, no torch)."""
import bpy

from ..blender import generate
from ..preferences import get_preferences


class NABLA_R2D3_OT_show_vocabulary(bpy.types.Operator):
    """Report the prompts the chosen model takes"""

    bl_idname = "nabla_r2d3.show_vocabulary"
    bl_label = "Show Vocabulary"
    bl_options = {'REGISTER'}

    def execute(self, context):
        text = generate.vocabulary(get_preferences(context))
        for line in (text or "Open vocabulary: describe the asset in words").splitlines():
            self.report({'INFO'}, line)
        return {'FINISHED'}


classes = (NABLA_R2D3_OT_show_vocabulary,)
