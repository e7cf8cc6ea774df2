# SPDX-License-Identifier: GPL-3.0-or-later
"""The Adapters panel's list: saved adapters mirrored into ``WindowManager.nabla_r2d3.adapters``.

Listing reads the disk, so it happens on demand (Refresh, after an align job, at registration),
never while drawing.
"""
from __future__ import annotations

from . import paths


def refresh(wm, prefs) -> int:
    """Re-read the adapters folder into ``wm.nabla_r2d3.adapters``; returns how many there are."""
    state = wm.nabla_r2d3
    found = paths.list_adapters(paths.adapters_dir(prefs))
    current = state.adapters[state.adapters_index].name if 0 <= state.adapters_index < len(state.adapters) else ""
    state.adapters.clear()
    for info in found:
        item = state.adapters.add()
        item.name, item.path, item.summary = info.name, str(info.path), info.summary
    names = [a.name for a in found]
    state.adapters_index = names.index(current) if current in names else 0
    return len(found)
