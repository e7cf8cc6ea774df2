"""Atomic file writes: every file the engine produces appears whole or not at all; JSON is strict."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def strict_json(obj, **kwargs) -> str:
    """``json.dumps`` that never writes NaN or Infinity: Python's default does, and strict JSON
    readers (browsers, jq, most other languages) then refuse the whole file. Every JSON text the
    engine writes goes through here; a non-finite number is a RuntimeError (a bug to report, not the
    user's input), raised before anything is written."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as exc:
        raise RuntimeError(f"refusing to write non-strict JSON: {exc}") from None


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_bytes(path, (strict_json(obj, indent=2) + "\n").encode())
