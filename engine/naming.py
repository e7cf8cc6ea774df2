"""File-name stems made from user text (prompts, adapter names): the one slug function of the project.

Pure standard library: the CLI, the worker's jobs and the Blender side (``blender/paths.py``) all
import it, so one prompt gives the same file names wherever it is generated.
"""
from __future__ import annotations

import hashlib
import re

# Characters of a slug before it is shortened. File systems allow 255 bytes per name; a slug is
# followed by a suffix such as "_seed9223372036854775807.glb" (28 characters) and may be a hidden
# staging name's part, so 60 leaves ample room and still reads as the prompt.
MAX_SLUG = 60
_HASH_CHARS = 8


def slug(text: str, fallback: str = "asset", max_len: int = MAX_SLUG) -> str:
    """A file-name-safe stem of ``text``: lowercase ASCII letters, digits and ``_``.

    ``"A Red Cube!" -> "a_red_cube"``; ``fallback`` when nothing is left. Text longer than
    ``max_len`` is cut and ends in ``_`` plus 8 hex digits of the whole text's SHA-1, so two long
    prompts that share their beginning still get different names, and the same prompt always the
    same one. The result is never longer than ``max_len`` characters (``max_len`` >= 16).
    """
    if max_len < 2 * _HASH_CHARS:
        raise ValueError(f"max_len must be >= {2 * _HASH_CHARS}, got {max_len}")
    stem = re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or fallback
    if len(stem) <= max_len:
        return stem
    digest = hashlib.sha1(str(text).encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{stem[: max_len - _HASH_CHARS - 1].rstrip('_')}_{digest}"
