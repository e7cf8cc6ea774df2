# SPDX-License-Identifier: GPL-3.0-or-later
"""What registering the add-on starts besides classes, and what unregistering stops.

* The adapters list is filled once Blender is idle (a one-shot timer: registration must stay cheap
  and may run before a window manager exists), and again after a file is loaded.
* Loading another file cancels running and queued jobs: their results belong to the file that
  asked for them.
* Unregistering cancels every job, stops the worker process and frees the preview icons.
"""
from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from ..preferences import get_preferences
from . import adapters, thumbnails
from .jobs import MANAGER


def _refresh_adapters():
    wm = getattr(bpy.context, "window_manager", None)
    if wm is not None and hasattr(wm, "nabla_r2d3"):
        try:
            adapters.refresh(wm, get_preferences())
        except OSError as exc:
            print(f"Nabla-R2D3: cannot list adapters: {exc}")
    return None  # one shot


@persistent
def _on_load_pre(*_args):
    if MANAGER.busy:
        print("Nabla-R2D3: another file is being loaded; cancelling running jobs")
        MANAGER.cancel_all()


@persistent
def _on_load_post(*_args):
    if not bpy.app.timers.is_registered(_refresh_adapters):
        bpy.app.timers.register(_refresh_adapters, first_interval=0.0)


def start() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)
    bpy.app.handlers.load_post.append(_on_load_post)
    bpy.app.timers.register(_refresh_adapters, first_interval=0.0)


def stop() -> None:
    MANAGER.shutdown()
    if bpy.app.timers.is_registered(_refresh_adapters):
        bpy.app.timers.unregister(_refresh_adapters)
    for handlers, fn in ((bpy.app.handlers.load_pre, _on_load_pre), (bpy.app.handlers.load_post, _on_load_post)):
        while fn in handlers:
            handlers.remove(fn)
    thumbnails.clear()
