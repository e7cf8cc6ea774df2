# SPDX-License-Identifier: GPL-3.0-or-later
"""Nabla-R2D3 Blender extension (thin layer over the bpy-free ``engine`` package).

Blender imports this package as ``bl_ext.<repository>.nabla_r2d3``: every import here is relative and
the package name is never hard-coded. Importing this module must stay cheap: no torch, no model
loading. The engine runs in a separate process (``engine.worker``); this side imports only the
worker's client.

Layout: ``preferences.py`` (machine settings), ``properties.py`` (Scene / WindowManager properties),
``operators/``, ``panels/``, ``blender/`` (bpy adapters: scene import, job manager, paths),
``batch.py`` (``blender -b --python batch.py -- ...``).
"""
import bpy

from . import operators, panels, properties
from .blender import lifecycle
from .preferences import NablaR2D3Preferences

classes = (
    NablaR2D3Preferences,
    *properties.classes,
    *operators.classes,
    *panels.classes,
)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    _register_classes()
    properties.register_properties()
    lifecycle.start()


def unregister():
    lifecycle.stop()
    properties.unregister_properties()
    _unregister_classes()
