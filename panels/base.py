# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared placement of the add-on's panels: the "Nabla-R2D3" tab of the 3D viewport's sidebar."""


class SidebarPanel:
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Nabla-R2D3"


def settings(context):
    return context.scene.nabla_r2d3


def state(context):
    return context.window_manager.nabla_r2d3
