# SPDX-License-Identifier: GPL-3.0-or-later
"""Show the embedded model's prompt vocabulary (engine.data.grammar is pure Python, no torch)."""
import bpy

from ..engine.data import grammar


class NABLA_R2D3_OT_show_vocabulary(bpy.types.Operator):
    """Report the prompt vocabulary of the embedded model"""

    bl_idname = "nabla_r2d3.show_vocabulary"
    bl_label = "Show Vocabulary"
    bl_options = {'REGISTER'}

    def execute(self, context):
        for line in grammar.vocabulary_text().splitlines():
            self.report({'INFO'}, line)
        return {'FINISHED'}


classes = (NABLA_R2D3_OT_show_vocabulary,)
