# SPDX-License-Identifier: GPL-3.0-or-later
"""Nabla-R2D3 Blender extension (thin layer over the bpy-free ``engine`` package).

Blender imports this package as ``bl_ext.<repository>.nabla_r2d3``: every import here is relative and
the package name is never hard-coded. Importing this module must stay cheap: no torch, no model
loading (those happen in the engine, on demand).
"""
import bpy

from . import operators, panels


class NablaR2D3Preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    def draw(self, context):
        self.layout.label(text="Nabla-R2D3: settings arrive with the Blender-layer issue.")


classes = (
    NablaR2D3Preferences,
    *operators.classes,
    *panels.classes,
)

register, unregister = bpy.utils.register_classes_factory(classes)
