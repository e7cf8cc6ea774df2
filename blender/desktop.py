# SPDX-License-Identifier: GPL-3.0-or-later
"""Opening a folder in the system's file browser, with failures reported instead of printed.

Not ``bpy.ops.wm.path_open``: on Linux it runs ``xdg-open`` and, when that is missing or fails (a
desktop with no file opener, a headless session), prints a traceback to the console and still
returns ``FINISHED``, so the button seemed to work and nothing opened.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

OPEN_TIMEOUT_S = 10.0  # xdg-open hands the folder to the file manager and returns; never hang Blender on it


class OpenFolderError(RuntimeError):
    """The folder could not be shown; the message says why and names the folder."""


def open_folder(folder: str | os.PathLike) -> None:
    """Show ``folder`` in the system's file browser (Explorer, Finder, or ``xdg-open``'s choice)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OpenFolderError(f"{folder} is not a folder")
    if sys.platform.startswith("win"):
        try:
            os.startfile(str(folder))  # noqa: S606 - a folder path, not a command
        except OSError as exc:
            raise OpenFolderError(f"cannot open {folder}: {exc}") from None
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    command = shutil.which(opener)
    if command is None:
        raise OpenFolderError(f"this system has no file opener ({opener}); open {folder} yourself")
    try:
        proc = subprocess.run([command, str(folder)], capture_output=True, text=True, timeout=OPEN_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OpenFolderError(f"{opener} could not open {folder}: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise OpenFolderError(f"{opener} could not open {folder} (exit {proc.returncode}"
                              f"{': ' + detail[-1] if detail else ''}); open it yourself")
