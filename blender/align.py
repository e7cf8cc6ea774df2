# SPDX-License-Identifier: GPL-3.0-or-later
"""The "align" job: Scene settings -> worker params; the trained adapter -> the adapters folder.

Params sent (``engine.align.job.run_alignment`` / ``AlignJob`` validates them)::

    {"reward": "palette" | "reference" | "dnc",
     "reward_options": {"palette": {"palette": [[r, g, b], ...]}}      sRGB in [0, 1]
                     | {"reference": {"image": "/abs/path.png"}} | {},
     "method": "nabla" | "refl" | "draft" | "ddpo", "prompts": [str, ...], "steps": int,
     "lr": float | None, "lora_rank": int, "beta": float | None, "seed": int,   (None: the engine's default)
     "out_dir": "/abs/empty/folder", "device": "cpu" | "cuda" | "mps" (absent: the worker's default)}

The result (the job's report) names its files relative to ``out_dir`` under ``files``: ``adapter``
(a peft adapter folder), ``reward_curve``, ``log``, ``before_after``; an ``adapter_path`` key
(absolute) is accepted too. The adapter folder is copied into the adapters folder under a new name,
with the curve, the before/after sheet, the log and a ``nabla_r2d3.json`` describing the run, and
selected for Generate. While it trains, the ``.npz`` previews the worker sends update one preview
object in the scene (:mod:`.preview_object`), next to the 3D cursor as it was when the job was made.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import bpy

from ..engine.names import GRADIENT_FREE_METHODS
from . import paths
from .generate import JobSetupError, device_params
from .jobs import Job
from .preview_object import PreviewObject


def split_prompts(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ";").split(";") if p.strip()]


def reference_image_file(image, folder: Path) -> str:
    """A PNG path for ``image``: its own file when that is on disk and unchanged, else a copy saved
    into ``folder`` (packed, generated or edited images)."""
    if image is None:
        raise JobSetupError("Pick a reference image (any image of this file)")
    if image.source == 'FILE' and image.packed_file is None and not image.is_dirty:
        path = bpy.path.abspath(image.filepath, library=image.library)
        if os.path.isfile(path):
            return os.path.realpath(path)
    if not image.has_data and image.source != 'GENERATED':
        raise JobSetupError(f"Image {image.name!r} has no pixels loaded and no file on disk")
    path = folder / "reference.png"
    fmt = image.file_format
    try:
        image.file_format = 'PNG'
        image.save(filepath=str(path), save_copy=True)
    finally:
        image.file_format = fmt
    return str(path)


def reward_params(s, folder: Path) -> tuple[str, dict]:
    """``(reward name, reward_options)`` in the engine's reward registry's terms."""
    if s.reward == "palette":
        if len(s.palette) == 0:
            raise JobSetupError("Add at least one palette colour")
        colours = [[round(float(c), 6) for c in item.color] for item in s.palette]
        return "palette", {"palette": {"palette": colours}}
    if s.reward == "reference":
        return "reference", {"reference": {"image": reference_image_file(s.reference_image, folder)}}
    return s.reward, {}


def align_params(s, prefs, out_dir: Path) -> dict:
    prompts = split_prompts(s.align_prompts) or split_prompts(s.prompt)
    if not prompts:
        raise JobSetupError("Enter the prompts to align on (or a Generate prompt)")
    reward, options = reward_params(s, out_dir)
    return training_params(s, prefs, reward, options, prompts, out_dir)


def training_params(s, prefs, reward: str, options: dict, prompts: list[str], out_dir: Path) -> dict:
    """The worker's align params for a reward, from the Align panel's method and training settings;
    JobSetupError when the method needs gradients that the chosen renderer has none of."""
    if s.renderer == "cycles" and s.method not in GRADIENT_FREE_METHODS:
        raise JobSetupError(f"{s.method!r} needs the reward's gradient and Cycles renders have none: "
                            "set Renderer to Volume, or Method to DDPO")
    return {
        "reward": reward,
        "reward_options": options,
        "method": s.method,
        "prompts": prompts,
        "steps": int(s.align_steps),
        # 0 in the panel: None, the engine's per-method / per-reward default (engine/align/job.py)
        "lr": float(s.learning_rate) or None,
        "lora_rank": int(s.lora_rank),
        "beta": float(s.beta) or None,
        "seed": int(s.seed),
        "renderer": s.renderer,
        "out_dir": str(out_dir),
        **device_params(prefs),
    }


def adapter_name_for(s, params: dict, existing: set[str]) -> str:
    base = paths.slug(s.adapter_name) if s.adapter_name.strip() else paths.slug(
        f"{params['reward']}_{params['method']}_{'_'.join(params['prompts'])[:40]}")
    name, n = base, 2
    while name in existing:
        name, n = f"{base}_{n}", n + 1
    return name


def _mean(value) -> float | None:
    mean = value.get("mean") if isinstance(value, dict) else None
    return float(mean) if isinstance(mean, (int, float)) and not isinstance(mean, bool) else None


class AlignApplier:
    """Copies the trained adapter (and its curve, sheets, log) into the adapters folder and selects it
    for Generate, unless the held-out reward fell: then the previous selection stays, and ``warning``
    says so (the job manager shows it in a popup as well as in the Jobs panel)."""

    COPIED = (("reward_curve", "reward_curve.png"), ("before_after", "before_after.png"),
              ("log", "align_log.jsonl"), ("report", "report.json"))

    def __init__(self, data: dict, prefs, scene_name: str, name: str, meta: dict, out_dir: Path | None = None):
        files = data.get("files") if isinstance(data.get("files"), dict) else {}
        self.sources = {k: self._resolve(v, out_dir) for k, v in files.items() if isinstance(v, str)}
        if data.get("adapter_path"):
            self.sources["adapter"] = Path(data["adapter_path"])
        if out_dir is not None and (out_dir / "report.json").is_file():
            self.sources.setdefault("report", out_dir / "report.json")
        adapter = self.sources.get("adapter")
        if adapter is None or not (adapter / paths.ADAPTER_CONFIG).is_file():
            raise RuntimeError(f"the align result has no adapter folder: {data!r}"[:300])
        self.data, self.prefs, self.scene_name, self.name, self.meta = data, prefs, scene_name, name, meta
        self.dest: Path | None = None
        self.applied: dict = {}
        self.before, self.after = _mean(data.get("reward_before")), _mean(data.get("reward_after"))
        # Held-out reward lower after training than before: the adapter made things worse on the
        # seeds it was measured on, so Generate keeps what it had (the user may still load it).
        self.reward_fell = self.before is not None and self.after is not None and self.after < self.before
        self.warning = ""

    @staticmethod
    def _resolve(value: str, out_dir: Path | None) -> Path:
        path = Path(value)
        return path if path.is_absolute() or out_dir is None else out_dir / path

    def step(self) -> bool:
        folder = paths.adapters_dir(self.prefs)
        tmp = folder / f".{self.name}.partial-{uuid.uuid4().hex[:6]}"
        try:
            shutil.copytree(self.sources["adapter"], tmp)
            copied = {}
            for key, file_name in self.COPIED:
                src = self.sources.get(key)
                if src is not None and src.is_file():
                    shutil.copy2(src, tmp / file_name)
                    copied[key] = file_name
            scalars = {k: v for k, v in self.data.items() if isinstance(v, (int, float, str))}
            for key in ("reward_before", "reward_after"):
                if isinstance(self.data.get(key), dict):
                    scalars[key] = self.data[key].get("mean")
            meta = {**self.meta, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "files": copied, "result": scalars,
                    "selected_for_generate": not self.reward_fell}
            (tmp / "nabla_r2d3.json").write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
            dest = folder / self.name
            os.rename(tmp, dest)  # fails rather than overwrite if the name was taken meanwhile
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.dest = dest
        return True

    def discard(self) -> None:
        if self.dest is not None and self.dest.exists():
            shutil.rmtree(self.dest, ignore_errors=True)

    def finish(self, push_undo: bool) -> str:
        from . import adapters

        scene = bpy.data.scenes.get(self.scene_name)
        previous = scene.nabla_r2d3.adapter if scene is not None else ""
        if scene is not None and not self.reward_fell:
            scene.nabla_r2d3.adapter = self.name
        wm = bpy.context.window_manager
        adapters.refresh(wm, self.prefs)
        state = wm.nabla_r2d3
        if (self.dest / "reward_curve.png").is_file():
            state.reward_curve = str(self.dest / "reward_curve.png")
        sheet = self.dest / "before_after.png"
        if sheet.is_file():
            item = state.previews.add()
            item.name, item.path, item.job = f"before / after ({self.name})", str(sheet), self.name
        self.applied = {"adapter": self.name, "path": str(self.dest), "selected": not self.reward_fell}
        change = f" (reward {self.before:.4g} -> {self.after:.4g})" if self.before is not None and self.after is not None else ""
        if self.reward_fell:
            kept = f"adapter '{previous}'" if previous else "the base model"
            self.warning = (f"Saved adapter '{self.name}' but did not select it: the held-out reward fell{change}. "
                            f"Generate keeps {kept}; load '{self.name}' from the Adapters panel to use it anyway")
            return self.warning
        return f"Saved adapter '{self.name}' and selected it for Generate{change}"


def make_job(context, prefs) -> Job:
    s = context.scene.nabla_r2d3
    job_dir = paths.new_job_dir(prefs, "align")
    try:
        params = align_params(s, prefs, job_dir)
        existing = {a.name for a in paths.list_adapters(paths.adapters_dir(prefs))}
        name = adapter_name_for(s, params, existing)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    # The reference copy lives in job_dir; the worker wants an empty out_dir, so give it a sub-folder.
    params["out_dir"] = str(job_dir / "out")
    meta = {k: params[k] for k in ("reward", "reward_options", "method", "prompts", "steps", "lr", "lora_rank",
                                   "beta", "seed")}
    scene_name = context.scene.name
    out_dir = Path(params["out_dir"])

    def make_applier(data: dict) -> AlignApplier:
        return AlignApplier(data, prefs, scene_name, name, meta, out_dir)

    job = Job("align", params, f"Align '{name}' ({params['reward']}, {params['method']})", job_dir, make_applier)
    # The worker sends a preview mesh every few rounds: one object next to the 3D cursor shows it.
    job.preview_object = PreviewObject.for_scene(context.scene, name)
    return job
