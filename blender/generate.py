# SPDX-License-Identifier: GPL-3.0-or-later
"""The "generate" job: Scene settings -> worker params, and the worker's result -> scene objects."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..engine.generate.records import BLENDER_FORMATS
from ..engine.models import check_scheduler, prompt_rules
from . import paths, scene_import
from .jobs import Job

DEVICE_PARAM = {"AUTO": "auto", "CPU": "cpu", "CUDA": "cuda", "MPS": "mps"}


class JobSetupError(ValueError):
    """Settings that cannot make a job (the message says what to change)."""


@dataclass
class GenerateRequest:
    """What to generate; ``from_settings`` reads the Scene settings, operator overrides win."""

    prompt: str
    count: int
    seed: int
    steps: int
    scheduler: str
    guidance: float | None
    adapter: str  # adapter folder name in the adapters folder, "" for none
    adapter_weight: float
    spacing: float

    @classmethod
    def from_settings(cls, s, prompt: str = "", count: int = 0, seed: int = -1) -> "GenerateRequest":
        return cls(
            prompt=(prompt or s.prompt).strip(),
            count=count if count > 0 else s.count,
            seed=seed if seed >= 0 else s.seed,
            steps=s.steps,
            scheduler=s.scheduler,
            guidance=s.guidance if s.use_guidance else None,
            adapter=s.adapter.strip(),
            adapter_weight=s.adapter_weight,
            spacing=s.spacing,
        )


def model_params(prefs) -> dict:
    """``model`` / ``model_path`` of a job from the preferences (none: the embedded model's bundled weights)."""
    if prefs.model_source == 'EMBEDDED':
        return {}
    folder = bpy.path.abspath(prefs.model_path).strip() if prefs.model_path.strip() else ""
    if not folder:
        raise JobSetupError("Model is Local Folder but no Model Folder is set: choose it in the add-on preferences")
    folder = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(folder):
        raise JobSetupError(f"Model Folder {folder!r} is not a folder: fix it in the add-on preferences")
    return {"model": prefs.model_kind, "model_path": folder}


def model_kind(prefs) -> str:
    return prefs.model_kind if prefs.model_source == 'LOCAL' else "embedded"


def vocabulary(prefs) -> str | None:
    """The prompts the chosen model takes, for people (engine/models/prompts.py); None: open text."""
    return prompt_rules(model_kind(prefs)).vocabulary()


def device_params(prefs) -> dict:
    """The engine-side choices every job sends: the model (:func:`model_params`) and the device."""
    device = DEVICE_PARAM.get(prefs.device)
    return {**model_params(prefs), **({"device": device} if device else {})}


def adapter_path(prefs, name: str) -> Path:
    folder = paths.adapters_dir(prefs)
    path = folder / name
    if not (path / paths.ADAPTER_CONFIG).is_file():
        raise JobSetupError(f"Adapter {name!r} is not in {folder}: unload it or refresh the Adapters panel")
    return path


def generate_params(req: GenerateRequest, prefs, out_dir: Path) -> dict:
    """The worker's ``generate`` params (docs/worker_protocol.md)."""
    if not req.prompt:
        raise JobSetupError("Enter a prompt, e.g. \"a red cube\"")
    try:
        check_scheduler(model_kind(prefs), req.scheduler)  # Heun is Shap-E's only: say so before any job starts
    except ValueError as exc:
        raise JobSetupError(f"{exc}: choose another Sampler") from None
    params = {
        "prompt": req.prompt,
        "count": int(req.count),
        "seed": int(req.seed),
        "steps": int(req.steps),
        "scheduler": req.scheduler,
        "out_dir": str(out_dir),
        "formats": list(BLENDER_FORMATS),  # the arrays the object is built from, the GLB it links to
        **device_params(prefs),
    }
    if req.guidance is not None:
        params["guidance"] = float(req.guidance)
    if req.adapter:
        params["adapter"] = str(adapter_path(prefs, req.adapter))
        if abs(req.adapter_weight - 1.0) > 1e-6:
            # engine.align.lora.load_adapter(model, path, weight); sent only when it is not the
            # default, so an engine without the parameter still runs adapters at full weight.
            params["adapter_weight"] = float(req.adapter_weight)
    return params


class GenerateApplier:
    """Imports a ``generate`` result into the scene it was asked from, one asset per step."""

    def __init__(self, data: dict, scene_name: str, origin, spacing: float, adapter: str):
        specs = scene_import.AssetSpec.from_result(data)  # a GenerateResult (engine/generate/records.py)
        self.timings = dict(data.get("timings") or {})
        self.importer = scene_import.AssetImporter(
            scene_name, specs, scene_import.collection_name_for(specs[0].prompt), spacing, tuple(origin), adapter=adapter,
            keep_clear=True,
        )
        self.importer.scene  # noqa: B018 - fail now if the scene is gone
        self.applied: dict = {}

    def step(self) -> bool:
        if not self.importer.done:
            self.importer.import_next()
        return self.importer.done

    def discard(self) -> None:
        self.importer.discard()

    def finish(self, push_undo: bool) -> str:
        objects = self.importer.objects
        scene = self.importer.scene
        view_layer = getattr(bpy.context, "view_layer", None)
        if view_layer is not None and bpy.context.scene == scene:
            for obj in view_layer.objects.selected:
                obj.select_set(False)
            for obj in objects:
                obj.select_set(True)
            view_layer.objects.active = objects[0]
        coll = self.importer.collection.name
        self.applied = {"collection": coll, "objects": [o.name for o in objects], "timings": self.timings}
        if push_undo and bpy.ops.ed.undo_push.poll():
            # The import ran in a timer, outside any operator: this makes it one undo step.
            bpy.ops.ed.undo_push(message=f"Nabla-R2D3: import {len(objects)} assets")
        return f"Added {len(objects)} asset{'s' if len(objects) != 1 else ''} to collection '{coll}'"


def make_job(context, prefs, req: GenerateRequest) -> Job:
    """A ``generate`` job for ``req``; its assets go to ``context.scene`` from the 3D cursor, moved
    along +X past the objects already there (:func:`scene_import.clear_origin`)."""
    scene = context.scene
    job_dir = paths.new_job_dir(prefs, "generate")
    try:
        params = generate_params(req, prefs, job_dir)
    except BaseException:
        job_dir.rmdir()
        raise
    origin = tuple(scene.cursor.location)
    scene_name = scene.name
    label = f"Generate {req.count} x \"{req.prompt}\""

    def make_applier(data: dict) -> GenerateApplier:
        return GenerateApplier(data, scene_name, origin, req.spacing, req.adapter)

    return Job("generate", params, label, job_dir, make_applier)
