# SPDX-License-Identifier: GPL-3.0-or-later
"""Which Python runs the engine worker, and the environment it starts with.

The engine needs torch; Blender's bundled Python usually lacks it. The "Engine Python" preference
names an interpreter that has it (e.g. the project's ``.venv/bin/python``). Left empty, Blender's own
``sys.executable`` is used if it can import torch (the extension's wheels installed). Whether an
interpreter has torch is checked by a ~0.1 s subprocess that locates torch without importing it, and
cached; panels only read the cache, they never start a process.

The cache is keyed on the path as configured and on what decides its imports (the venv's
``pyvenv.cfg``, its site-packages folders, PYTHONPATH), not on the interpreter file it resolves to:
two venvs share one base interpreter, and installing torch into a venv changes its site-packages,
not its ``python``. A cached failure is never trusted: a job start checks again.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bpy

ADDON_ROOT = Path(__file__).resolve().parents[1]  # the extension's root folder: holds engine/
_CHECK = (
    "import importlib.util, sys; "
    "missing = [m for m in ('torch', 'numpy') if importlib.util.find_spec(m) is None]; "
    "print(' '.join(missing)); sys.exit(3 if missing else 0)"
)
# _key(python) -> (ok, detail)
_cache: dict[tuple, tuple[bool, str]] = {}
CHECK_BUTTON = "Check Engine Python"  # the operator's label, named in errors so users find it


class EnginePythonError(RuntimeError):
    """No usable Python to run the engine; the message says what to set."""


def _environment_files(python: str) -> list[str]:
    """Files and folders whose change can change what ``python`` imports: the ``pyvenv.cfg`` of the
    venv it belongs to (beside it or one folder up, as Python looks) and that venv's site-packages."""
    here = os.path.dirname(os.path.abspath(python))
    found = []
    for root in (here, os.path.dirname(here)):
        cfg = os.path.join(root, "pyvenv.cfg")
        if os.path.isfile(cfg):
            found.append(cfg)
            for lib in ("lib", "lib64", "Lib"):
                libdir = os.path.join(root, lib)
                if not os.path.isdir(libdir):
                    continue
                for entry in sorted(os.listdir(libdir)):
                    site = os.path.join(libdir, entry, "site-packages")
                    if os.path.isdir(site):
                        found.append(site)
                if os.path.isdir(os.path.join(libdir, "site-packages")):  # Windows venvs
                    found.append(os.path.join(libdir, "site-packages"))
            break
    return found


# Where a Python environment keeps its interpreter, relative to the folder a user may pick instead:
# the environment's root (venv/conda on Linux and macOS, then Windows) or its bin folder.
_INTERPRETERS_IN_FOLDER = ("bin/python", "bin/python3", "Scripts/python.exe", "python.exe", "python", "python3")


def interpreter_in(folder: str) -> str | None:
    """The Python interpreter inside ``folder`` (an environment's root or its bin folder), or None."""
    for relative in _INTERPRETERS_IN_FOLDER:
        candidate = os.path.join(folder, *relative.split("/"))
        if os.path.isfile(candidate):
            return candidate
    return None


def path_problem(python: str) -> str | None:
    """Why ``python`` cannot be an interpreter at all (missing, or a folder), or None."""
    if os.path.isdir(python):
        inside = interpreter_in(python)
        example = inside or os.path.join(python, "bin", "python")
        hint = f"the Python inside it is {example}" if inside else f"e.g. {example}"
        return f"{python!r} is a folder, not a Python executable: choose the python file itself ({hint})"
    if not os.path.exists(python):
        return f"{python!r} does not exist"
    if not os.path.isfile(python):
        return f"{python!r} is not a file"
    return None


def _key(python: str) -> tuple | None:
    try:
        real = os.path.realpath(python)
        stamps = [(real, os.stat(real).st_mtime_ns)]
        stamps += [(path, os.stat(path).st_mtime_ns) for path in _environment_files(python)]
    except OSError:
        return None
    return os.path.abspath(python), tuple(stamps), os.environ.get("PYTHONPATH", "")


def check_python(python: str, timeout: float = 60.0, refresh: bool = False) -> tuple[bool, str]:
    """``(ok, detail)``: whether ``python`` runs and can locate torch and numpy. A success is cached
    until the interpreter or its environment changes; a failure is checked again on every call."""
    problem = path_problem(python)
    key = _key(python) if problem is None else None
    if key is None:
        return False, problem or f"{python!r} does not exist"
    if not refresh and key in _cache and _cache[key][0]:
        return _cache[key]
    env = dict(os.environ)
    env.update(_site_packages_env(python))
    try:
        proc = subprocess.run([python, "-c", _CHECK], capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        result = (False, f"{python} cannot run: {exc}")
    else:
        if proc.returncode == 0:
            result = (True, "torch found")
        elif proc.returncode == 3:
            result = (False, f"{python} cannot import {proc.stdout.strip()}")
        else:
            result = (False, f"{python} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    _cache[key] = result
    return result


def cached_status(python: str) -> tuple[bool, str] | None:
    """The cached check of ``python``, or None if unchecked; a missing path or a folder is known
    without a check (a few ``stat`` calls, cheap enough for a panel)."""
    problem = path_problem(python)
    if problem is not None:
        return False, problem
    key = _key(python)
    return _cache.get(key) if key else None


def _configured(prefs) -> str:
    return bpy.path.abspath(prefs.engine_python).strip() if prefs.engine_python.strip() else ""


def resolve(prefs, refresh: bool = False) -> str:
    """The interpreter to run the worker with, or :class:`EnginePythonError` saying what to set."""
    configured = _configured(prefs)
    if configured:
        problem = path_problem(configured)
        if problem is not None:
            raise EnginePythonError(f"Engine Python {problem}: fix it in Preferences > Add-ons > Nabla-R2D3")
        ok, detail = check_python(configured, refresh=refresh)
        if not ok:
            raise EnginePythonError(
                f"Engine Python is not usable ({detail}): point it at a Python with torch, or install torch "
                f"into it and press {CHECK_BUTTON} in Preferences > Add-ons > Nabla-R2D3"
            )
        return configured
    ok, detail = check_python(sys.executable, refresh=refresh)
    if not ok:
        raise EnginePythonError(
            f"Blender's own Python cannot run the engine ({detail}). Set Preferences > Add-ons > "
            "Nabla-R2D3 > Engine Python to a Python with torch (e.g. the project's .venv/bin/python), "
            f"then press {CHECK_BUTTON} there"
        )
    return sys.executable


def resolve_quiet(prefs) -> str:
    """The interpreter :func:`resolve` would try (configured, else Blender's), without checking it."""
    return _configured(prefs) or sys.executable


def status_text(prefs) -> str:
    """One line for the UI from the cache (no process is started here)."""
    status = cached_status(resolve_quiet(prefs))
    who = "Engine Python" if _configured(prefs) else "Blender's Python"
    if status is None:
        return f"{who}: not checked yet (checked when a job starts)"
    return f"{who}: {'ready' if status[0] else status[1]}"


def status_icon(prefs) -> str:
    status = cached_status(resolve_quiet(prefs))
    return 'QUESTION' if status is None else ('CHECKMARK' if status[0] else 'ERROR')


def _extension_site_packages() -> str | None:
    """Blender's site-packages for extension wheels, where torch lands when installed as wheels."""
    try:
        root = bpy.utils.user_resource('EXTENSIONS')
    except Exception:  # noqa: BLE001 - a stripped-down Blender
        return None
    path = os.path.join(root, ".local", "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
    return path if os.path.isdir(path) else None


def _site_packages_env(python: str) -> dict[str, str]:
    """PYTHONPATH for ``python``: the extension root (``engine`` importable), plus Blender's wheel
    folder when the interpreter is Blender's own (a subprocess does not get Blender's sys.path)."""
    parts = [str(ADDON_ROOT)]
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        extra = _extension_site_packages()
        if extra:
            parts.append(extra)
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return {"PYTHONPATH": os.pathsep.join(parts)}


def worker_env(prefs, python: str) -> dict[str, str]:
    """Environment of the worker process: ours on top of Blender's."""
    env = dict(os.environ)
    env.update(_site_packages_env(python))
    env["PYTHONUNBUFFERED"] = "1"
    if not bpy.app.online_access:
        # Blender's "Allow Online Access" is off: libraries that could download must not try.
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env
