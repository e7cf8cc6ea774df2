# SPDX-License-Identifier: GPL-3.0-or-later
"""Icons for PNGs the worker writes (previews, the reward curve), for ``layout.template_icon``.

One ``bpy.utils.previews`` collection; an icon is keyed by path and modification time, so a file the
worker rewrites (the live reward curve) shows its new content, and the stale icon is released.
"""
from __future__ import annotations

import os

import bpy.utils.previews

_collection = None
_by_path: dict[str, str] = {}  # path -> current key


def icon_id(path: str) -> int:
    """The icon of the PNG at ``path`` (0 when it cannot be read)."""
    global _collection
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return 0
    if _collection is None:
        _collection = bpy.utils.previews.new()
    key = f"{path}|{mtime}"
    if key not in _collection:
        old = _by_path.get(path)
        if old is not None and old in _collection:
            del _collection[old]
        _collection.load(key, path, 'IMAGE')
        _by_path[path] = key
    return _collection[key].icon_id


def clear() -> None:
    global _collection
    if _collection is not None:
        bpy.utils.previews.remove(_collection)
    _collection = None
    _by_path.clear()
