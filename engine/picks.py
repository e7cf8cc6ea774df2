"""An artist's marks on generated assets, kept as a ``picks.json`` that ``preferences fit`` reads.

Pure standard library: Blender's own interpreter imports this module (the gallery writes the marks
file of a job folder with it), and so does the worker. It is the one reader and writer of the
format, and holds the one too-few-picks message (:func:`count_problem`);
:func:`engine.rewards.preference.load_picks` reads a file with :func:`load` and adds what needs the
engine (the prompt against the model's vocabulary, sampler settings, the ``manifest``'s fields).

``picks.json`` (strict JSON; docs/preferences.md describes every field)::

    {"format": "nabla-picks", "version": 1,
     "assets": [
        {"prompt": "a cube", "seed": 3, "mark": "liked",          # liked | disliked | neutral
         "model": "embedded",                                     # optional, default "embedded"
         "model_path": null,                                      # optional: the model's weights folder
         "adapter": null,                                         # optional: adapter folder, or {"path": ..., "weight": w}
         "sampler": {"steps": 20, "guidance": 3.0, "scheduler": "ddim", "eta": 1.0},   # optional
         "manifest": "gen/manifest.json",                         # optional: the generate job's manifest
         "latent": "latents/cube_3.safetensors",                  # optional: the clean latent, key "latent"
         "name": "a_cube_seed3", "file": "a_cube_seed3.glb"}      # optional: the gallery's id and file
     ]}

Relative paths are relative to the picks file's folder.

One entry per asset. An asset is identified by :func:`asset_key`: prompt, seed, model (and its
folder), adapter (and its weight) and ``name``, the gallery's id of the asset within its kind (the
file stem, e.g. ``a_red_cube_seed3``, or ``a_red_cube_seed3_var2`` for a variation, which shares
its original's prompt and seed and differs only there). Marking an asset again replaces its
entry; "unmarked" means no entry. Entries the gallery writes carry ``manifest`` (the generate
job's manifest, for the model, adapter and sampler settings) and, where the job kept it,
``latent`` (the clean latent; a variation cannot be re-sampled from its prompt and seed alone).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .fileio import strict_loads, write_json

PICKS_FORMAT = "nabla-picks"
PICKS_VERSION = 1
PICKS_FILE = "picks.json"  # the marks of a job folder's assets
MARKS = ("liked", "disliked", "neutral")
# The least the preference fit accepts by default (engine.rewards.preference.FitSettings uses these).
MIN_LIKED = 4
MIN_DISLIKED = 4
MAX_PICKS = 2_000  # the fit's pairs grow as N^2: 2000 picks give at most 1M pairs
FIELDS = ("prompt", "seed", "mark", "model", "model_path", "adapter", "sampler", "manifest", "latent", "name", "file")
MAX_SEED = 2**63 - 1


class PicksError(ValueError):
    """A marks file or entry that is not a valid ``picks.json`` (the message names where)."""


def _is_path(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_entry(entry, where: str = "entry") -> dict:
    """``entry`` if it is a well-formed picks entry (fields and types as in the format); else
    :class:`PicksError` naming the field. Does not check the prompt against a model's vocabulary."""
    if not isinstance(entry, dict):
        raise PicksError(f"{where} must be an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise PicksError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
    prompt, seed, mark = entry.get("prompt"), entry.get("seed"), entry.get("mark")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PicksError(f"{where}: prompt must be a non-empty string")
    if isinstance(seed, bool) or not isinstance(seed, int) or abs(seed) > MAX_SEED:
        raise PicksError(f"{where}: seed must be an integer, got {seed!r}")
    if mark not in MARKS:
        raise PicksError(f"{where}: mark must be one of {', '.join(MARKS)}, got {mark!r}")
    if "model" in entry and not _is_path(entry["model"]):
        raise PicksError(f"{where}: model must be a model name")
    for name in ("model_path", "manifest", "latent", "name", "file"):
        if entry.get(name) is not None and not _is_path(entry[name]):
            raise PicksError(f"{where}: {name} must be null or a non-empty string")
    adapter = entry.get("adapter")
    if adapter is not None and not _is_path(adapter):
        if not (isinstance(adapter, dict) and _is_path(adapter.get("path")) and set(adapter) <= {"path", "weight"}):
            raise PicksError(f"{where}: adapter must be null, a folder path or {{\"path\": ..., \"weight\": w}}")
        weight = adapter.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise PicksError(f"{where}: adapter weight must be a finite number >= 0, got {weight!r}")
    if entry.get("sampler") is not None and not isinstance(entry["sampler"], dict):
        raise PicksError(f"{where}: sampler must be an object")
    return entry


def asset_key(entry: dict) -> tuple:
    """What identifies the asset of a picks entry: (prompt, seed, model, model_path, adapter path,
    adapter weight, name). Two entries with the same key are marks of the same asset."""
    adapter = entry.get("adapter")
    if isinstance(adapter, dict):
        path, weight = adapter.get("path"), float(adapter.get("weight", 1.0))
    else:
        path, weight = adapter, 1.0
    return (entry["prompt"], int(entry["seed"]), entry.get("model", "embedded"), entry.get("model_path"),
            path, weight if path is not None else None, entry.get("name"))


def parse_document(raw, where: str = "picks") -> list[dict]:
    """The entries of a parsed picks document; :class:`PicksError` naming the first bad one.
    Later entries of the same asset replace earlier ones."""
    if not isinstance(raw, dict) or raw.get("format") != PICKS_FORMAT:
        raise PicksError(f'{where} must be a JSON object with "format": "{PICKS_FORMAT}", "version": 1 and "assets": [...]')
    if raw.get("version") != PICKS_VERSION:
        raise PicksError(f"{where}: unsupported picks version {raw.get('version')!r} (this reads version {PICKS_VERSION})")
    assets = raw.get("assets")
    if not isinstance(assets, list):
        raise PicksError(f'{where}: "assets" must be a list')
    if len(assets) > MAX_PICKS:
        raise PicksError(f"{where}: {len(assets)} assets, at most {MAX_PICKS}")
    return merge([check_entry(a, f"{where} assets[{i}]") for i, a in enumerate(assets)])


def document(entries: list[dict]) -> dict:
    """The strict-JSON picks object of ``entries``."""
    return {"format": PICKS_FORMAT, "version": PICKS_VERSION, "assets": [dict(e) for e in entries]}


def load(path: str | os.PathLike, missing_ok: bool = True) -> list[dict]:
    """The entries of the picks file ``path`` ([] for a missing file when ``missing_ok``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise PicksError(f"picks file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PicksError(f"picks file {path} is unreadable: {exc}") from None
    try:
        raw = strict_loads(text)
    except ValueError as exc:
        raise PicksError(f"picks file {path} is not strict JSON: {exc}") from None
    return parse_document(raw, f"picks file {path}")


def save(path: str | os.PathLike, entries: list[dict]) -> Path:
    """Write ``entries`` (checked first) to ``path`` atomically, as strict JSON."""
    entries = [check_entry(e, f"entry {i}") for i, e in enumerate(entries)]
    if len(entries) > MAX_PICKS:
        raise PicksError(f"{len(entries)} picks, at most {MAX_PICKS}")
    return write_json(path, document(entries))


def merge(*groups: list[dict]) -> list[dict]:
    """One entry per asset (:func:`asset_key`), in first-seen order; a later entry of an asset replaces
    an earlier one (its mark and its fields)."""
    out: dict[tuple, dict] = {}
    for group in groups:
        for entry in group:
            key = asset_key(entry)
            out.pop(key, None)  # re-inserted: a re-marked asset moves to the end, like a fresh mark
            out[key] = dict(entry)
    return list(out.values())


def set_mark(entries: list[dict], asset: dict, mark: str | None) -> list[dict]:
    """``entries`` with ``asset``'s mark set to ``mark`` (``None`` or ``""``: unmarked, its entry removed).
    ``asset``: the entry's fields other than ``mark``."""
    key = asset_key({**asset, "mark": "neutral"})
    kept = [e for e in entries if asset_key(e) != key]
    if not mark:
        return kept
    return kept + [check_entry({**asset, "mark": mark}, "asset")]


def update_file(path: str | os.PathLike, asset: dict, mark: str | None) -> list[dict]:
    """Read the picks file ``path``, set ``asset``'s mark, write it back (atomically); the new entries."""
    entries = set_mark(load(path), asset, mark)
    save(path, entries)
    return entries


def relative_to(entry: dict, folder: str | os.PathLike) -> dict:
    """``entry`` with relative ``manifest`` / ``latent`` / ``model_path`` / adapter paths made
    absolute against ``folder`` (the picks file's), so entries of several files can be merged."""
    base = Path(folder)
    out = dict(entry)
    for name in ("manifest", "latent", "model_path"):
        if _is_path(out.get(name)):
            out[name] = str((base / out[name]).resolve())
    adapter = out.get("adapter")
    if _is_path(adapter):
        out["adapter"] = str((base / adapter).resolve())
    elif isinstance(adapter, dict):
        out["adapter"] = {**adapter, "path": str((base / adapter["path"]).resolve())}
    return out


def counts(entries: list[dict]) -> dict[str, int]:
    """How many entries carry each mark."""
    return {m: sum(1 for e in entries if e.get("mark") == m) for m in MARKS}


def count_problem(marks: list[str], min_liked: int = MIN_LIKED, min_disliked: int = MIN_DISLIKED) -> str | None:
    """Why these marks are too few to fit a preference (the preference fit's own words), or None."""
    liked, disliked = marks.count("liked"), marks.count("disliked")
    if liked >= min_liked and disliked >= min_disliked:
        return None
    what = "liked and disliked assets" if liked == 0 or disliked == 0 else "picks"
    return (f"too few {what} to learn a preference: {liked} liked, {disliked} disliked, {marks.count('neutral')} neutral; "
            f"mark at least {min_liked} liked and {min_disliked} disliked assets (more of each, and from several prompts, "
            "teach it better)")
