"""The gallery files of a generate job: per-asset thumbnails and latents beside its manifest, and
which asset a ``MANIFEST#NAME`` names (variations are made by engine/variation_assets.py).

A generate job asked for ``gallery`` files writes, next to its ``manifest.json``:

* ``gallery/<stem>.png``: one shaded view of each asset (the grid of the Blender gallery);
* ``gallery/<stem>.latent.safetensors``: each asset's clean latent under the key ``latent``, what a
  ``picks.json`` entry names as ``latent`` (the preference fit then renders it instead of sampling
  it again, and a variation, which its prompt and seed alone do not determine, can be fitted at all);
* ``gallery.json`` (strict JSON)::

    {"format": "nabla-gallery", "version": 1,
     "variation": null | {"strength": 0.3, "parent": [[3, 0.5]], "first_index": 1},
     "assets": [{"name": "red_cube_seed3", "stem": "a_red_cube_seed3", "thumbnail": "gallery/a_red_cube_seed3.png",
                 "latent": "gallery/a_red_cube_seed3.latent.safetensors", "lineage": []}]}

  ``name`` is the asset's ``name`` in the manifest; ``lineage`` its variation steps
  (``[[index, strength], ...]``, [] for the seed's own asset).

A variation job's assets (engine/variation_assets.py) are named ``<stem>_v<k>`` (``_v3_v1`` for
variation 1 of variation 3). ``MANIFEST_ENTRY`` (the CLI's ``--variations-of``) names
the asset to vary: ``path/to/manifest.json#NAME`` or ``#INDEX`` (a job folder stands for its
manifest), where NAME is the asset's name or file stem.

Module level is standard library only (Blender's interpreter reads ``gallery.json`` with it); torch
is imported inside the functions that need it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .fileio import strict_loads
from .generate.records import is_relative_inside

GALLERY_FORMAT = "nabla-gallery"
GALLERY_VERSION = 1
GALLERY_NAME = "gallery.json"
GALLERY_DIR = "gallery"
LATENT_SUFFIX = ".latent.safetensors"
THUMBNAIL_RESOLUTION = 64  # pixels: the panel shows them at ~80; 96 px cost 0.5 s per asset on one thread
THUMBNAIL_SAMPLES = 48  # ray samples (64 px: 0.2-0.3 s per asset on one busy thread)


class CandidateError(ValueError):
    """A gallery file, manifest entry or variation request that cannot be used (the message says why)."""


# --- names -------------------------------------------------------------------------------------------

def lineage_suffix(lineage) -> str:
    """``_v3_v1`` for lineage ((3, s), (1, s')); "" for the seed's own asset."""
    return "".join(f"_v{int(k)}" for k, _ in lineage)


def lineage_label(lineage) -> str:
    """``" variation 3.1"`` for lineage ((3, s), (1, s')); "" for the seed's own asset."""
    return f" variation {'.'.join(str(int(k)) for k, _ in lineage)}" if lineage else ""


# --- gallery.json --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GalleryAsset:
    """One asset's gallery files (paths relative to the job folder, or None) and variation lineage."""

    name: str
    stem: str
    thumbnail: str | None
    latent: str | None
    lineage: tuple[tuple[int, float], ...] = ()

    def to_json(self) -> dict:
        return {"name": self.name, "stem": self.stem, "thumbnail": self.thumbnail, "latent": self.latent,
                "lineage": [[k, s] for k, s in self.lineage]}


def _relative_file(value, where: str) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, str) and value and is_relative_inside(value)):
        raise CandidateError(f"{where} must be a path inside the job folder, got {value!r}")
    return value


def _lineage(raw, where: str) -> tuple[tuple[int, float], ...]:
    if not isinstance(raw, list):
        raise CandidateError(f"{where} must be a list of [index, strength] pairs")
    out = []
    for step in raw:
        ok = (isinstance(step, list) and len(step) == 2 and isinstance(step[0], int) and not isinstance(step[0], bool)
              and step[0] >= 1 and isinstance(step[1], (int, float)) and not isinstance(step[1], bool)
              and math.isfinite(step[1]) and 0 <= step[1] <= 1)
        if not ok:
            raise CandidateError(f"{where}: bad step {step!r} (want [index >= 1, strength in [0, 1]])")
        out.append((step[0], float(step[1])))
    return tuple(out)


def read_gallery(folder: str | Path) -> dict[str, GalleryAsset]:
    """The gallery files of the job folder ``folder`` by asset name; {} when it has no ``gallery.json``.
    CandidateError when the file is there but unreadable or malformed."""
    path = Path(folder) / GALLERY_NAME
    try:
        raw = strict_loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CandidateError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != GALLERY_FORMAT or raw.get("version") != GALLERY_VERSION:
        raise CandidateError(f"{path} is not a version {GALLERY_VERSION} {GALLERY_FORMAT} file")
    assets = raw.get("assets")
    if not isinstance(assets, list):
        raise CandidateError(f"{path}: assets must be a list")
    out = {}
    for i, a in enumerate(assets):
        where = f"{path} assets[{i}]"
        if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not isinstance(a.get("stem"), str):
            raise CandidateError(f"{where} needs a name and a stem")
        out[a["name"]] = GalleryAsset(a["name"], a["stem"], _relative_file(a.get("thumbnail"), f"{where}.thumbnail"),
                                      _relative_file(a.get("latent"), f"{where}.latent"),
                                      _lineage(a.get("lineage", []), f"{where}.lineage"))
    return out


def write_gallery_files(folder: Path, assets: list, names: list[str], stems: list[str],
                        images: list | None, variation: dict | None = None) -> list[GalleryAsset]:
    """Write each asset's latent (``assets[i].latent``, a tensor) and, when ``images`` (one (3, R, R)
    tensor in [0, 1] per asset) is given, its thumbnail into ``folder/gallery``, then ``gallery.json``.
    ``assets``: the generate pipeline's assets (a variation's carries ``lineage``)."""
    from .fileio import write_json, write_safetensors
    from .imaging import save_png, to_pil

    (folder / GALLERY_DIR).mkdir(exist_ok=True)
    records = []
    for i, (asset, name, stem) in enumerate(zip(assets, names, stems)):
        latent = f"{GALLERY_DIR}/{stem}{LATENT_SUFFIX}"
        write_safetensors(folder / latent, {"latent": asset.latent.detach().float().cpu().contiguous()})
        thumbnail = None
        if images is not None:
            thumbnail = f"{GALLERY_DIR}/{stem}.png"
            save_png(to_pil(images[i]), folder / thumbnail)
        records.append(GalleryAsset(name, stem, thumbnail, latent, tuple(getattr(asset, "lineage", ()))))
    write_json(folder / GALLERY_NAME, {"format": GALLERY_FORMAT, "version": GALLERY_VERSION, "variation": variation,
                                       "assets": [r.to_json() for r in records]})
    return records


# --- MANIFEST_ENTRY ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ManifestEntry:
    """An asset of a generate job's manifest, to make variations of."""

    manifest: Path
    prompt: str
    seed: int
    name: str
    model: str
    model_path: str | None
    adapter: dict | None  # {"path", "weight"}
    sampler: dict
    lineage: tuple = ()


def resolve_manifest_entry(spec: str) -> ManifestEntry:
    """The asset ``MANIFEST#NAME`` or ``MANIFEST#INDEX`` (MANIFEST: a manifest.json or its job folder;
    NAME: the asset's name or file stem) names; CandidateError saying what is wrong."""
    from .generate.records import MANIFEST_NAME, GenerateResult, RecordError

    path_text, sep, which = str(spec).rpartition("#")
    if not sep or not path_text or not which:
        raise CandidateError(f"--variations-of {spec!r}: give MANIFEST#NAME or MANIFEST#INDEX, e.g. out/cubes/manifest.json#0")
    path = Path(path_text).expanduser()
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        manifest = GenerateResult.read(path)
    except RecordError as exc:
        raise CandidateError(str(exc)) from None
    gallery = read_gallery(path.parent)
    assets = manifest.assets
    if which.isdigit():
        index = int(which)
        if index >= len(assets):
            raise CandidateError(f"{path} has {len(assets)} assets (indices 0..{len(assets) - 1}), not #{index}")
        asset = assets[index]
    else:
        stems = {a.name: a for a in assets}
        stems.update({Path(f).name.split(".")[0]: a for a in assets for f in a.files.values()})
        if which not in stems:
            raise CandidateError(f"{path} has no asset {which!r}; its assets: {', '.join(a.name for a in assets)}")
        asset = stems[which]
    entry = gallery.get(asset.name)
    return ManifestEntry(path, asset.prompt, asset.seed, asset.name, manifest.model, manifest.model_path,
                         None if manifest.adapter is None else manifest.adapter.to_json(), dict(manifest.sampler),
                         entry.lineage if entry is not None else ())


# --- a job folder's candidates and their marks ------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """One asset of a generate job folder as the gallery shows it: absolute paths (None where the job
    wrote no such file), its picks entry (``pick``: every field but ``mark``, paths relative to the
    job folder, as its ``picks.json`` holds them) and its current ``mark`` (None: unmarked)."""

    name: str
    prompt: str
    seed: int
    stem: str
    files: dict
    thumbnail: str | None
    latent: str | None
    lineage: tuple
    pick: dict
    mark: str | None


def _stem(asset) -> str:
    first = next(iter(asset.files.values()))
    return PurePosixPath(first).name.split(".")[0]


def job_candidates(job_dir: str | Path) -> list[Candidate]:
    """The candidates of the generate job folder ``job_dir`` (its manifest, gallery files and picks),
    in the manifest's order. CandidateError when the manifest or a gallery/picks file is malformed."""
    from . import picks as picks_file
    from .generate.records import MANIFEST_NAME, GenerateResult, RecordError

    folder = Path(job_dir)
    try:
        manifest = GenerateResult.read(folder / MANIFEST_NAME)
    except RecordError as exc:
        raise CandidateError(str(exc)) from None
    gallery = read_gallery(folder)
    try:
        marks = {picks_file.asset_key(e): e["mark"] for e in picks_file.load(folder / picks_file.PICKS_FILE)}
    except picks_file.PicksError as exc:
        raise CandidateError(str(exc)) from None
    out = []
    for asset in manifest.assets:
        extra = gallery.get(asset.name)
        stem = extra.stem if extra is not None else _stem(asset)
        pick = {"prompt": asset.prompt, "seed": asset.seed, "model": manifest.model, "name": stem,
                "sampler": dict(manifest.sampler), "manifest": MANIFEST_NAME, "file": next(iter(asset.files.values()))}
        if manifest.model_path is not None:
            pick["model_path"] = manifest.model_path
        if manifest.adapter is not None:
            pick["adapter"] = manifest.adapter.to_json()
        if extra is not None and extra.latent is not None:
            pick["latent"] = extra.latent
        key = picks_file.asset_key({**pick, "mark": "neutral"})
        out.append(Candidate(
            name=asset.name, prompt=asset.prompt, seed=asset.seed, stem=stem,
            files={k: str(folder / v) for k, v in asset.files.items()},
            thumbnail=None if extra is None or extra.thumbnail is None else str(folder / extra.thumbnail),
            latent=None if extra is None or extra.latent is None else str(folder / extra.latent),
            lineage=extra.lineage if extra is not None else (), pick=pick, mark=marks.get(key)))
    return out


def mark_candidate(job_dir: str | Path, candidate: Candidate, mark: str | None) -> list[dict]:
    """Set ``candidate``'s mark (None or "": unmarked) in the job folder's ``picks.json``, atomically;
    returns the file's entries."""
    from . import picks as picks_file

    return picks_file.update_file(Path(job_dir) / picks_file.PICKS_FILE, candidate.pick, mark or None)


def collect_picks(job_dirs: list[str | Path]) -> list[dict]:
    """Every marked entry of the ``picks.json`` of ``job_dirs`` (folders without one are skipped), with
    absolute paths, one per asset (a later folder's mark wins): what ``preferences fit`` gets."""
    from . import picks as picks_file

    groups = []
    for folder in job_dirs:
        entries = picks_file.load(Path(folder) / picks_file.PICKS_FILE)
        groups.append([picks_file.relative_to(e, folder) for e in entries])
    return picks_file.merge(*groups)


def three_quarter_camera():
    """The one camera of thumbnails and preview sheets: a three-quarter view from above (engine Cameras)."""
    from .render.cameras import OrbitConfig, orbit_cameras

    return orbit_cameras(OrbitConfig(views=1, azimuth_offset=35.0, elevation=25.0))


def render_thumbnails(model, latents_list: list, resolution: int = THUMBNAIL_RESOLUTION, batch: int = 8,
                      samples: int = THUMBNAIL_SAMPLES) -> list:
    """One shaded three-quarter view (3, R, R) in [0, 1] per clean latent, by the model's differentiable
    renderer with ``samples`` ray samples (also the generate job's preview sheet without Cycles)."""
    import torch

    from .render import render
    from .render.volume import VolumeRenderConfig

    cams = three_quarter_camera()
    config = VolumeRenderConfig(resolution=resolution, samples=samples)
    images = []
    with torch.no_grad():
        for start in range(0, len(latents_list), batch):
            latents = torch.stack(list(latents_list[start:start + batch]))
            images += [views[0].float().clamp(0, 1).cpu() for views in render(model.decode(latents), cams, config).rgb]
    return images


def write_job_gallery(model, pipeline_assets: list, written: list, folder: Path, variation: dict | None = None,
                      resolution: int = THUMBNAIL_RESOLUTION, batch: int = 8) -> list[GalleryAsset]:
    """What a generate job with ``gallery`` adds to its (staging) ``folder``: thumbnails, latents and
    ``gallery.json`` for ``pipeline_assets`` (engine.pipeline's, with latents), whose written manifest
    records are ``written`` (engine.generate.records.GeneratedAsset, same order)."""
    images = render_thumbnails(model, [a.latent for a in pipeline_assets], resolution, batch)
    stems = [PurePosixPath(next(iter(w.files.values()))).name.split(".")[0] for w in written]
    return write_gallery_files(Path(folder), pipeline_assets, [w.name for w in written], stems, images, variation)
