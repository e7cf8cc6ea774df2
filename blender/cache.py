# SPDX-License-Identifier: GPL-3.0-or-later
"""The job cache (``<cache>/jobs/<kind>-<time>-<id>``): its size, what still needs it, and pruning.

Every job writes a folder there (meshes, GLBs, previews, logs) and nothing else removes them, so
the cache is pruned each time a job is submitted: folders older than the age limit go, then the
oldest until the total fits the size limit (both in the preferences; 0 turns a limit off). The
"Clear Cache" button removes every folder it may. A folder is never removed while it is in use:

* a job that runs or waits for the worker writes into it;
* an object of the open file names one of its GLBs (``nabla_r2d3_glb``) or a preview thumbnail or
  the reward curve shown in the panels reads from it;
* the gallery of a scene of the open file has seen it (its ``picks.json`` holds the artist's marks).

Imported objects hold their mesh in the .blend itself, so removing a folder never empties an
object; what would go stale is the GLB path an object records, which is why those are kept.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import bpy

JOBS = "jobs"


@dataclass(frozen=True)
class CacheLimits:
    """``max_bytes`` / ``max_age_s``: 0 means no limit of that kind."""

    max_bytes: int = 0
    max_age_s: float = 0.0

    @classmethod
    def from_preferences(cls, prefs) -> "CacheLimits":
        return cls(int(prefs.cache_max_gb * 1e9), float(prefs.cache_max_days) * 86400.0)


@dataclass(frozen=True)
class PruneResult:
    removed: list[Path]
    freed_bytes: int
    kept_in_use: int  # folders a limit would have removed but that are in use
    remaining_bytes: int


def folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass  # removed meanwhile
    return total


def job_folders(jobs_root: Path) -> list[tuple[Path, float]]:
    """``(folder, mtime)`` of the job folders under ``jobs_root``, oldest first (staging folders,
    hidden, are not jobs)."""
    if not jobs_root.is_dir():
        return []
    found = [(p, p.stat().st_mtime) for p in jobs_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda item: (item[1], item[0].name))


def prune(jobs_root: Path, in_use: set[Path], limits: CacheLimits, now: float | None = None,
          everything: bool = False) -> PruneResult:
    """Remove the job folders over ``limits`` (older than the age limit, then the oldest while the
    total is over the size limit), or all of them with ``everything``; never one in ``in_use``."""
    now = time.time() if now is None else now
    keep = {Path(p).resolve() for p in in_use}
    folders = [(p, folder_size(p), mtime) for p, mtime in job_folders(jobs_root)]
    total = sum(size for _, size, _ in folders)
    removed, freed, kept = [], 0, 0
    for path, size, mtime in folders:  # oldest first
        too_old = limits.max_age_s > 0 and now - mtime > limits.max_age_s
        too_big = limits.max_bytes > 0 and total > limits.max_bytes
        if not (everything or too_old or too_big):
            continue
        if path.resolve() in keep:
            kept += 1
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
            freed += size
            total -= size
    return PruneResult(removed, freed, kept, total)


def clear(jobs_root: Path, in_use: set[Path]) -> PruneResult:
    """Remove every job folder not in use."""
    return prune(jobs_root, in_use, CacheLimits(), everything=True)


def _folder_of(path: str, jobs_root: Path) -> Path | None:
    """The job folder under ``jobs_root`` that holds ``path``, if any."""
    try:
        rel = Path(bpy.path.abspath(path)).resolve().relative_to(jobs_root.resolve())
    except (ValueError, OSError):
        return None
    return jobs_root / rel.parts[0] if rel.parts else None


def folders_in_use(jobs_root: Path, manager=None) -> set[Path]:
    """Job folders the running and queued jobs, the open file's objects and the panels need."""
    from . import jobs  # late: jobs imports this module

    manager = jobs.MANAGER if manager is None else manager
    used = {job.job_dir for job in (manager.active, *manager.queue) if job is not None and job.job_dir is not None}
    paths = [obj.get("nabla_r2d3_glb", "") for obj in bpy.data.objects]
    state = getattr(bpy.context.window_manager, "nabla_r2d3", None) if bpy.context.window_manager else None
    if state is not None:
        paths += [item.path for item in state.previews] + [state.reward_curve]
    for scene in bpy.data.scenes:  # the gallery's job folders hold the artist's marks (picks.json)
        settings = getattr(scene, "nabla_r2d3", None)
        if settings is not None and hasattr(settings, "gallery_jobs"):
            paths += [job.name for job in settings.gallery_jobs]
    for path in paths:
        if isinstance(path, str) and path:
            folder = _folder_of(path, jobs_root)
            if folder is not None:
                used.add(folder)
    return used
