# SPDX-License-Identifier: GPL-3.0-or-later
"""The gallery: a job's candidates as thumbnails, the artist's marks on them, importing the chosen
ones, variations of one, and aligning to the marks.

The job folder holds the truth (engine/gallery_files.py reads it, engine/picks.py writes its marks):
``manifest.json`` and ``gallery.json`` list the candidates and their files, ``picks.json`` their
marks, in the format ``python -m engine preferences fit --picks`` reads. The Scene's ``gallery``
collection mirrors the current job's candidates (saved with the .blend), ``gallery_jobs`` remembers
every job folder seen (their marks together are what "Align to My Picks" fits), and an imported
object carries its candidate's id and mark as custom properties (``nabla_r2d3_job``,
``nabla_r2d3_asset``, ``nabla_r2d3_mark``, ``nabla_r2d3_lineage``), so marks survive a restart (the
folder) and a reopened .blend (the Scene and the objects).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import bpy

from ..engine import gallery_files, picks
from . import paths, scene_import
from .generate import JobSetupError, adapter_path, device_params, model_kind
from .jobs import Job

OBJECT_JOB = "nabla_r2d3_job"
OBJECT_ASSET = "nabla_r2d3_asset"
OBJECT_MARK = "nabla_r2d3_mark"
OBJECT_LINEAGE = "nabla_r2d3_lineage"
MARKS = ("NONE", *picks.MARKS)


def settings(scene):
    return scene.nabla_r2d3


# --- the gallery's candidates ----------------------------------------------------------------------

def _remember_job(s, job_dir: str) -> None:
    if job_dir not in {j.name for j in s.gallery_jobs}:
        s.gallery_jobs.add().name = job_dir


def objects_of(job_dir: str, stem: str) -> list:
    """Objects imported from the candidate ``stem`` of ``job_dir`` (any scene of the file)."""
    return [o for o in bpy.data.objects if o.get(OBJECT_JOB) == job_dir and o.get(OBJECT_ASSET) == stem]


def load_job(scene, job_dir: str | Path) -> int:
    """Show the candidates of the generate job folder ``job_dir`` in ``scene``'s gallery (replacing what
    it showed), with their marks from the folder; returns how many. CandidateError if the folder's
    files are unreadable (the gallery is then left as it was)."""
    job_dir = str(Path(job_dir).resolve())
    candidates = gallery_files.job_candidates(job_dir)
    s = settings(scene)
    s.gallery.clear()
    for c in candidates:
        item = s.gallery.add()
        item.name, item.prompt, item.seed, item.job_dir, item.stem = c.name, c.prompt, c.seed, job_dir, c.stem
        item.thumbnail = c.thumbnail or ""
        item.mesh_path = c.files.get("npz", "")
        item.glb_path = c.files.get("glb", "")
        item.lineage = json.dumps([list(step) for step in c.lineage])
        adapter = c.pick.get("adapter")
        item.adapter = Path(adapter["path"]).name if isinstance(adapter, dict) else ""
        item.mark = c.mark or "NONE"
        found = objects_of(job_dir, c.stem)
        item.object_name = found[0].name if found else ""
        for obj in found:  # the folder's mark wins: it is what the fit reads
            _stamp_mark(obj, item.mark)
    _remember_job(s, job_dir)
    return len(candidates)


def _stamp_mark(obj, mark: str) -> None:
    if mark in picks.MARKS:
        obj[OBJECT_MARK] = mark
    elif OBJECT_MARK in obj:
        del obj[OBJECT_MARK]


def _candidate(item):
    for c in gallery_files.job_candidates(item.job_dir):
        if c.name == item.name:
            return c
    raise gallery_files.CandidateError(f"{item.job_dir} no longer lists {item.name!r}")


def set_mark(scene, index: int, mark: str) -> None:
    """Mark the gallery's candidate ``index`` (``MARKS``; "NONE" unmarks): in its job folder's
    picks.json first (atomically), then on the item and on the objects imported from it."""
    if mark not in MARKS:
        raise ValueError(f"mark must be one of {', '.join(MARKS)}, got {mark!r}")
    s = settings(scene)
    item = s.gallery[index]
    try:
        gallery_files.mark_candidate(item.job_dir, _candidate(item), None if mark == "NONE" else mark)
    except (OSError, ValueError) as exc:
        raise JobSetupError(f"Cannot store the mark in {item.job_dir}: {exc}") from None
    item.mark = mark
    _remember_job(s, item.job_dir)
    for obj in objects_of(item.job_dir, item.stem):
        _stamp_mark(obj, mark)


def stamp(obj, item) -> None:
    """Give ``obj`` the gallery identity and mark of ``item``."""
    obj[OBJECT_JOB] = item.job_dir
    obj[OBJECT_ASSET] = item.stem
    obj[OBJECT_LINEAGE] = item.lineage
    _stamp_mark(obj, item.mark)


def lineage_of(text: str) -> list:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def object_label(item) -> str:
    lineage = [tuple(step) for step in lineage_of(item.lineage)]
    return f"{item.prompt.strip() or 'asset'} (seed {item.seed}{gallery_files.lineage_label(lineage)})"


def import_items(scene, indices: list[int], origin, spacing: float) -> list:
    """Import the gallery's candidates ``indices`` into ``scene`` (a new collection, from ``origin``,
    moved along +X past what stands there); returns the new objects. All or nothing."""
    s = settings(scene)
    items = [s.gallery[i] for i in indices]
    if not items:
        return []
    missing = [i.name for i in items if not i.mesh_path or not Path(i.mesh_path).is_file()]
    if missing:
        raise JobSetupError(f"The job folder no longer has the meshes of {', '.join(missing[:3])}: generate them again")
    specs = [scene_import.AssetSpec(i.prompt, i.seed, i.mesh_path, i.glb_path) for i in items]
    importer = scene_import.AssetImporter(scene, specs, scene_import.collection_name_for(items[0].prompt), spacing,
                                          tuple(origin), adapter=items[0].adapter, keep_clear=True)
    try:
        importer.import_all()
    except BaseException:
        importer.discard()
        raise
    objects = importer.objects
    for obj, item in zip(objects, items):
        obj.name = object_label(item)
        obj["nabla_r2d3_adapter"] = item.adapter
        stamp(obj, item)
        item.object_name = obj.name
    return objects


# --- generate jobs land in the gallery ---------------------------------------------------------------

class GalleryApplier:
    """A generate job's result: its candidates go to the gallery first; with ``review`` they stay
    there, otherwise ``inner`` (the Generate applier, made by ``make_inner(data)``) imports them all
    and the new objects get their gallery identity."""

    def __init__(self, data: dict, scene_name: str, review: bool, make_inner=None):
        out_dir = data.get("out_dir")
        if not isinstance(out_dir, str) or not out_dir:
            raise RuntimeError(f"the generate result names no out_dir: {data!r}"[:300])
        self.job_dir, self.scene_name, self.review = out_dir, scene_name, review
        self.inner = None if review or make_inner is None else make_inner(data)
        self.loaded = False
        self.applied: dict = {}
        self.warning = ""

    def step(self) -> bool:
        if not self.loaded:
            scene = bpy.data.scenes.get(self.scene_name)
            if scene is None:
                raise scene_import.SceneChanged(f"scene {self.scene_name!r} no longer exists")
            self.count = load_job(scene, self.job_dir)
            self.loaded = True
            return self.inner is None
        return self.inner.step()

    def discard(self) -> None:
        if self.inner is not None:
            self.inner.discard()

    def finish(self, push_undo: bool) -> str:
        if self.inner is None:
            self.applied = {"gallery": self.job_dir, "candidates": self.count}
            return f"{self.count} candidate{'s' if self.count != 1 else ''} in the Gallery: mark them, import the chosen ones"
        summary = self.inner.finish(push_undo)
        self.applied = {**dict(getattr(self.inner, "applied", {})), "gallery": self.job_dir}
        scene = bpy.data.scenes.get(self.scene_name)
        if scene is not None:
            s = settings(scene)
            names = self.applied.get("objects") or []
            for item, name in zip(s.gallery, names):
                obj = bpy.data.objects.get(name)
                if obj is not None:
                    stamp(obj, item)
                    item.object_name = obj.name
        return summary


def attach(job: Job, scene, review: bool) -> Job:
    """Make the generate ``job`` write gallery files (thumbnails, latents) and land in the gallery."""
    job.params["gallery"] = True
    make_inner = job.make_applier
    scene_name = scene.name
    job.make_applier = lambda data: GalleryApplier(data, scene_name, review, make_inner)
    return job


# --- variations ------------------------------------------------------------------------------------

def source_of(obj=None, item=None) -> dict:
    """What a variation needs of its source (an imported object or a gallery item): prompt, seed,
    lineage, job folder (for the original's sampler settings) and adapter name."""
    if item is not None:
        return {"prompt": item.prompt, "seed": int(item.seed), "lineage": lineage_of(item.lineage),
                "job_dir": item.job_dir, "adapter": item.adapter, "label": object_label(item)}
    if obj is None or "nabla_r2d3_prompt" not in obj:
        raise JobSetupError("Select an object made by Nabla-R2D3 (or a gallery candidate) to make variations of")
    job_dir = obj.get(OBJECT_JOB) or (str(Path(obj["nabla_r2d3_glb"]).parent) if obj.get("nabla_r2d3_glb") else "")
    return {"prompt": str(obj["nabla_r2d3_prompt"]), "seed": int(obj["nabla_r2d3_seed"]),
            "lineage": lineage_of(obj.get(OBJECT_LINEAGE, "[]")), "job_dir": job_dir,
            "adapter": str(obj.get("nabla_r2d3_adapter", "")), "label": obj.name}


def next_variation_index(scene, source: dict) -> int:
    """One past the highest variation index already made of ``source`` (gallery items and objects),
    so each press gives new variations."""
    parent = [list(step) for step in source["lineage"]]
    used = [0]
    lineages = [(i.prompt, i.seed, lineage_of(i.lineage)) for i in settings(scene).gallery]
    lineages += [(str(o["nabla_r2d3_prompt"]), int(o.get("nabla_r2d3_seed", -1)), lineage_of(o.get(OBJECT_LINEAGE, "[]")))
                 for o in bpy.data.objects if "nabla_r2d3_prompt" in o]
    for prompt, seed, lineage in lineages:
        if prompt == source["prompt"] and seed == source["seed"] and len(lineage) == len(parent) + 1 \
                and [list(step) for step in lineage[:-1]] == parent:
            used.append(int(lineage[-1][0]))
    return max(used) + 1


def _sampler_of(job_dir: str, s) -> tuple[dict, dict | None, str | None]:
    """(sampler params, adapter {"path", "weight"} or None, model) of the job that made the source: its
    manifest when the folder is still there, else the Generate panel's settings."""
    from ..engine.generate.records import MANIFEST_NAME, GenerateResult, RecordError

    if job_dir:
        try:
            manifest = GenerateResult.read(Path(job_dir) / MANIFEST_NAME)
        except RecordError:
            manifest = None
        if manifest is not None:
            keep = {k: manifest.sampler[k] for k in ("steps", "guidance", "scheduler", "eta") if manifest.sampler.get(k) is not None}
            return keep, None if manifest.adapter is None else manifest.adapter.to_json(), manifest.model
    sampler = {"steps": int(s.steps), "scheduler": s.scheduler}
    if s.use_guidance:
        sampler["guidance"] = float(s.guidance)
    return sampler, None, None


def variation_params(scene, prefs, source: dict, out_dir: Path) -> dict:
    """The worker's generate params for ``count`` variations of ``source`` (see engine/variation_assets.py)."""
    s = settings(scene)
    sampler, adapter, model = _sampler_of(source["job_dir"], s)
    chosen = model_kind(prefs)
    if model is not None and model != chosen:
        raise JobSetupError(f"{source['label']} was made with the {model} model, but the preferences choose {chosen}: "
                            "choose that model to make variations of it")
    params = {"prompt": source["prompt"], "seed": int(source["seed"]), "count": int(s.variation_count), **sampler,
              "variation_strength": round(float(s.variation_strength), 6),
              "variation_start": next_variation_index(scene, source),
              "variation_parent": [list(step) for step in source["lineage"]],
              "gallery": True, "out_dir": str(out_dir), **device_params(prefs)}
    if adapter is not None and Path(adapter["path"]).exists():
        params["adapter"] = adapter["path"]
        if abs(float(adapter.get("weight", 1.0)) - 1.0) > 1e-6:
            params["adapter_weight"] = float(adapter["weight"])
    elif source["adapter"]:
        params["adapter"] = str(adapter_path(prefs, source["adapter"]))
    return params


def variations_job(context, prefs, source: dict) -> Job:
    """A generate job of variations of ``source``; they land in the gallery (review mode)."""
    scene = context.scene
    job_dir = paths.new_job_dir(prefs, "variations")
    try:
        params = variation_params(scene, prefs, source, job_dir)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    scene_name = scene.name
    label = f"{params['count']} variations of {source['label']} (strength {params['variation_strength']:.2f})"
    return Job("generate", params, label, job_dir, lambda data: GalleryApplier(data, scene_name, True))


# --- align to the marks -------------------------------------------------------------------------------

def marked_entries(scene) -> list[dict]:
    """Every mark of the job folders the gallery has seen (absolute paths), one per asset."""
    dirs = [j.name for j in settings(scene).gallery_jobs if Path(j.name).is_dir()]
    try:
        return gallery_files.collect_picks(dirs)
    except picks.PicksError as exc:
        raise JobSetupError(str(exc)) from None


def align_to_picks_params(scene, prefs, job_dir: Path) -> tuple[dict, list[dict]]:
    """The worker's align params that fit the preference from the marks, then align on it; and the
    marks. JobSetupError with the fit's own message when there are too few."""
    from .align import split_prompts, training_params

    s = settings(scene)
    entries = marked_entries(scene)
    problem = picks.count_problem([e["mark"] for e in entries])
    if problem:
        raise JobSetupError(problem[0].upper() + problem[1:])
    chosen = model_kind(prefs)
    others = sorted({e.get("model", "embedded") for e in entries} - {chosen})
    if others:
        raise JobSetupError(f"Some marked assets were made with {', '.join(others)}, but the preferences choose {chosen}")
    prompts = split_prompts(s.align_prompts) or list(dict.fromkeys(e["prompt"] for e in entries))
    params = training_params(s, prefs, "preference", {"preference": {}}, prompts, job_dir / "out")
    picks_path = job_dir / picks.PICKS_FILE
    picks.save(picks_path, entries)
    params["fit_preference"] = {"picks": str(picks_path)}
    return params, entries


def align_to_picks_job(context, prefs) -> Job:
    """An align job on the preference fitted from the marks (engine/align/from_picks.py). Its adapter is
    selected for Generate only if the held-out preference score rose (blender/align.py AlignApplier)."""
    from .align import AlignApplier, adapter_name_for
    from .preview_object import PreviewObject

    scene = context.scene
    s = settings(scene)
    job_dir = paths.new_job_dir(prefs, "align")
    try:
        params, entries = align_to_picks_params(scene, prefs, job_dir)
        existing = {a.name for a in paths.list_adapters(paths.adapters_dir(prefs))}
        name = adapter_name_for(s, params, existing)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    counts = picks.counts(entries)
    meta = {k: params[k] for k in ("reward", "method", "prompts", "steps", "lr", "lora_rank", "beta", "seed")}
    meta["picks"] = counts
    scene_name, out_dir = scene.name, Path(params["out_dir"])

    def make_applier(data: dict) -> AlignApplier:
        return AlignApplier(data, prefs, scene_name, name, meta, out_dir)

    label = f"Align '{name}' to my picks ({counts['liked']} liked, {counts['disliked']} disliked)"
    job = Job("align", params, label, job_dir, make_applier)
    job.preview_object = PreviewObject.for_scene(scene, name)
    return job
