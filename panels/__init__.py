# SPDX-License-Identifier: GPL-3.0-or-later
"""Panels of the add-on: one sidebar panel in the 3D viewport (N panel, tab "Nabla-R2D3")."""
import importlib.util

import bpy

from ..engine.data import grammar
from ..operators import NABLA_R2D3_OT_show_vocabulary


def torch_available() -> bool:
    """True when torch can be imported; checks without importing it (importing torch is slow)."""
    return importlib.util.find_spec("torch") is not None


class VIEW3D_PT_nabla_r2d3(bpy.types.Panel):
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Nabla-R2D3"
    bl_label = "Nabla-R2D3"

    def draw(self, context):
        layout = self.layout
        layout.label(text="Engine installed", icon='CHECKMARK')
        if not torch_available():
            layout.label(text="torch not found: install the add-on's wheels", icon='ERROR')

        box = layout.box()
        box.label(text="Vocabulary")
        col = box.column(align=True)
        col.label(text="Sizes: " + ", ".join(grammar.SIZES))
        col.label(text="Colours: " + ", ".join(grammar.COLOURS))
        col.label(text="Shapes: " + ", ".join(grammar.SHAPES))
        col.label(text='e.g. "a tall blue cylinder"')
        layout.operator(NABLA_R2D3_OT_show_vocabulary.bl_idname, icon='INFO')


classes = (VIEW3D_PT_nabla_r2d3,)
