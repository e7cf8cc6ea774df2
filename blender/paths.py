# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the add-on writes: adapters, job folders (meshes, previews, logs), never inside the add-on.

Defaults come from ``bpy.utils.extension_path_user`` (Blender's per-extension user folder, kept
across upgrades); the preferences may point elsewhere. When the add-on runs as a legacy add-on
(not under ``bl_ext.``) Blender refuses that call, and the user's datafiles folder is used instead.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..engine import naming
from ..preferences import ADDON_ID

ADAPTER_CONFIG = "adapter_config.json"  # peft's layout: a folder with this file and the weights


def user_dir(subdir: str, create: bool = True) -> Path:
    """``<extension user folder>/<subdir>``."""
    try:
        path = bpy.utils.extension_path_user(ADDON_ID, path=subdir, create=create)
    except ValueError:  # not loaded as an extension
        path = bpy.utils.user_resource('DATAFILES', path=os.path.join("nabla_r2d3", subdir), create=create)
    if not path:
        raise OSError(f"cannot create the add-on's user folder {subdir!r}")
    return Path(path)


def _configured(value: str, subdir: str, create: bool) -> Path:
    if value:
        path = Path(bpy.path.abspath(value)).expanduser()
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path
    return user_dir(subdir, create)


def adapters_dir(prefs, create: bool = True) -> Path:
    return _configured(prefs.adapters_dir, "adapters", create)


def cache_dir(prefs, create: bool = True) -> Path:
    return _configured(prefs.cache_dir, "cache", create)


def new_job_dir(prefs, kind: str) -> Path:
    """A fresh, empty folder ``<cache>/jobs/<kind>-<time>-<random>`` for one job's files."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = cache_dir(prefs) / "jobs" / f"{kind}-{stamp}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    return path


def slug(text: str) -> str:
    """A file-name-safe adapter folder name: ``"A Red Cube!" -> "a_red_cube"`` (the engine's one slug
    function, :func:`engine.naming.slug`, with "adapter" for text with no letters or digits)."""
    return naming.slug(text, fallback="adapter")


@dataclass(frozen=True)
class AdapterInfo:
    """A saved LoRA adapter: ``path`` is its folder; ``meta`` what the align job recorded (may be empty)."""

    name: str
    path: Path
    meta: dict

    @property
    def summary(self) -> str:
        bits = [str(self.meta[k]) for k in ("reward", "method") if self.meta.get(k)]
        if self.meta.get("prompts"):
            bits.append(", ".join(self.meta["prompts"])[:60])
        return " | ".join(bits)


def list_adapters(folder: Path) -> list[AdapterInfo]:
    """Adapters under ``folder``: sub-folders holding ``adapter_config.json``, sorted by name."""
    if not folder.is_dir():
        return []
    found = []
    for sub in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if sub.name.startswith(".") or not (sub / ADAPTER_CONFIG).is_file():
            continue  # hidden: temp folders of an adapter being written
        meta = {}
        meta_file = sub / "nabla_r2d3.json"
        if meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
        found.append(AdapterInfo(sub.name, sub, meta if isinstance(meta, dict) else {}))
    return found
