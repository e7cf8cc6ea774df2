"""One generate job from start to finish, shared by the CLI (``python -m engine generate``), the demo,
the worker (and through it the Blender panels and batch mode): check the request, sample, write the
files and one manifest (:class:`~engine.generate.records.GenerateResult`), optionally a preview sheet.

``engine.pipeline.generate`` does the computing (text -> samples -> meshes); this module owns what
surrounds it:

* validation (:meth:`GenerateJob.from_params`, with the checks and limits of engine/params.py):
  every bad value is a :class:`BadInput` (a ValueError: CLI exit 2, worker ``bad_input``) naming the
  field, before any model is loaded or file written;
* naming: ``<slug(prompt)>_seed<N>.<format>`` (engine/naming.py's one slug), the GLB's node named
  :func:`engine.geometry.mesh.asset_name`;
* staging: every file is written into a hidden ``.<out name>.partial-<hex>`` folder beside ``out_dir``
  and renamed to ``out_dir`` only when everything succeeded, so a failed or cancelled job leaves
  nothing, and ``out_dir`` never holds a half-written run (a killed job's folder is removed by a
  later job, :func:`remove_stale_staging`);
* the files: per asset the formats asked for (GLB, OBJ, PLY meshes; npz arrays for Blender; a splat
  model's Gaussians as ``<stem>.3dgs.ply``), ``manifest.json`` and with ``preview`` a contact sheet
  ``preview.png`` (Cycles where bpy imports, else the differentiable renderer).
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..names import MODELS, SCHEDULERS
from ..params import (MAX_ADAPTER_WEIGHT, MAX_COUNT, MAX_GUIDANCE, MAX_SAMPLING_STEPS, MAX_SEED, check_bool,
                      check_device, check_float, check_int, check_keys, check_str)
from ..worker.protocol import BadInput, staging_dir
from .records import (FORMATS, MANIFEST_NAME, PREVIEW_NAME, PREVIEW_RENDERERS, SPLAT_FORMAT, AdapterUse,
                      GeneratedAsset, GenerateResult, PreviewMessage, PreviewSheet, RecordError)

PREVIEW_RENDERER_CHOICES = ("auto", *PREVIEW_RENDERERS)  # auto: Cycles where bpy imports, else volume
MAX_PREVIEW_RESOLUTION = 1024  # pixels per tile; a 256-asset sheet at 1024 px is already 16k x 66k
MAX_PREVIEW_SAMPLES = 4096  # Cycles samples per pixel
PREVIEW_COLUMNS = 4


def json_names(field: str) -> str:
    """How the worker's JSON spells a field in an error (its own key)."""
    return field


def cli_names(field: str) -> str:
    """How the CLI spells a field in an error: its option."""
    return {"out_dir": "--out", "prompts": "--prompt", "formats": "--format"}.get(field, "--" + field.replace("_", "-"))


@dataclass(frozen=True)
class GenerateJob:
    """A checked generate request: ``count`` assets per prompt, seeds ``seed .. seed + count - 1``.

    Build one with :meth:`from_params` (the checks live there); ``out_dir`` is absolute.
    """

    prompts: tuple[str, ...]
    out_dir: Path
    count: int = 1
    seed: int = 0
    steps: int = 20
    guidance: float | None = None  # None: the model's default
    scheduler: str = "ddim"
    eta: float = 1.0
    adapter: Path | None = None  # LoRA adapter folder (engine.align.lora.load_adapter)
    adapter_weight: float = 1.0  # 0 the base model, 1 as trained
    batch_size: int = 8
    device: str = "cpu"
    model: str = "embedded"  # a name of the model registry
    model_path: Path | None = None  # folder of its weights; None: the bundled ones
    formats: tuple[str, ...] = ("glb",)  # records.FORMATS; a mesh format always comes first
    preview: bool = False  # also write preview.png, a contact sheet of the assets
    preview_renderer: str = "auto"  # PREVIEW_RENDERER_CHOICES
    preview_resolution: int = 128  # pixels per tile
    preview_samples: int = 16  # Cycles samples per pixel
    preview_columns: int = 0  # tiles per row; 0: min(4, assets)
    overwrite: bool = False  # replace the previous generate run in out_dir (the files its manifest lists)
    # also write each asset's thumbnail and latent, and gallery.json (engine/gallery_files.py)
    gallery: bool = False
    # set: the job makes ``count`` variations of (its one prompt, seed) instead of seeds seed .. seed + count - 1,
    # numbered variation_start.., of the variation lineage variation_parent (engine/variation_assets.py)
    variation_strength: float | None = None
    variation_start: int = 1
    variation_parent: tuple = ()

    @property
    def prompt_list(self) -> list[str]:
        """One prompt per asset, prompt-major: each prompt's ``count`` seeds together."""
        return [p for p in self.prompts for _ in range(self.count)]

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + i for _ in self.prompts for i in range(self.count)]

    @property
    def mesh_formats(self) -> list[str]:
        return [f for f in self.formats if f != SPLAT_FORMAT]

    @classmethod
    def from_params(cls, params: dict, *, names: Callable[[str], str] = json_names,
                    absolute_paths: bool = False) -> "GenerateJob":
        """Check untyped parameters (a worker job's JSON, the dict the CLI builds) and return the job.

        ``prompt`` (one string) or ``prompts`` (a list), and ``out_dir``, are required; every other
        field of the class is optional. ``names`` spells a field in messages (:func:`cli_names` for
        the CLI's options). ``absolute_paths``: ``out_dir``, ``adapter`` and ``model_path`` must be
        absolute (the worker's cwd is the add-on's own folder). Raises :class:`BadInput` or the
        model's ``PromptError`` (both ValueErrors) before anything is loaded or written; reads the
        file system only to check that folders exist and what ``out_dir`` holds.
        """
        from ..models import check_scheduler, model_spec, prompt_rules

        if not isinstance(params, dict):
            raise BadInput(f"generate parameters must be an object, got {params!r}")
        allowed = set(cls.__dataclass_fields__) | {"prompt"}
        check_keys(params, allowed, {"out_dir"})
        if ("prompt" in params) == ("prompts" in params):
            raise BadInput("give either prompt (a string) or prompts (a list of strings)" if "prompt" in params
                           else "missing parameter(s) prompt")
        if "prompt" in params:
            if not isinstance(params["prompt"], str):
                raise BadInput(f"{names('prompt')} must be a string, got {params['prompt']!r}")
            prompts = (params["prompt"],)
        else:
            raw = params["prompts"]
            if not isinstance(raw, (list, tuple)) or not raw or not all(isinstance(p, str) for p in raw):
                raise BadInput(f"{names('prompts')} must be a non-empty list of strings, got {raw!r}")
            prompts = tuple(raw)
        model = check_str(names("model"), params.get("model", "embedded"))
        if model not in MODELS:
            raise BadInput(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
        prompt_rules(model).validate(list(prompts))  # PromptError says what the model takes
        model_path = _folder(params.get("model_path"), names("model_path"), absolute_paths, "a folder of model weights")
        scheduler = check_str(names("scheduler"), params.get("scheduler", "ddim"))
        if scheduler not in SCHEDULERS:
            raise BadInput(f"{names('scheduler')} must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        try:
            check_scheduler(model, scheduler)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        adapter = _folder(params.get("adapter"), names("adapter"), absolute_paths, "an existing adapter", must_be_dir=False)
        adapter_weight = check_float(names("adapter_weight"), params.get("adapter_weight", 1.0), 0.0, MAX_ADAPTER_WEIGHT)
        if adapter is None and adapter_weight != 1.0:  # a weight that would silently do nothing
            raise BadInput(f"{names('adapter_weight')} needs an adapter")
        count = check_int(names("count"), params.get("count", 1), 1, MAX_COUNT)
        if count * len(prompts) > MAX_COUNT:
            raise BadInput(f"{len(prompts)} prompts x {count} assets is more than {MAX_COUNT} assets per job")
        seed = check_int(names("seed"), params.get("seed", 0), 0, MAX_SEED)
        if seed + count - 1 > MAX_SEED:
            raise BadInput(f"{names('seed')} + {names('count')} - 1 must fit in 63 bits")
        formats = _formats(params.get("formats", ["glb"]), names("formats"))
        representation = model_spec(model).representation
        if SPLAT_FORMAT in formats and representation != "splats":
            raise BadInput(f"{names('formats')} 3dgs writes Gaussian splats; model {model!r} makes {representation}s "
                           "(use a splat model such as diffsplat)")
        preview_renderer = check_str(names("preview_renderer"), params.get("preview_renderer", "auto"))
        if preview_renderer not in PREVIEW_RENDERER_CHOICES:
            raise BadInput(f"{names('preview_renderer')} must be one of {', '.join(PREVIEW_RENDERER_CHOICES)}, "
                           f"got {preview_renderer!r}")
        overwrite = check_bool(names("overwrite"), params.get("overwrite", False))
        out_dir = _out_dir(params["out_dir"], names("out_dir"), absolute_paths)
        from ..variation_assets import check_variation_fields

        try:
            variation = check_variation_fields(params, prompts, count, names)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        job = cls(
            prompts=prompts, out_dir=out_dir, count=count, seed=seed,
            gallery=check_bool(names("gallery"), params.get("gallery", False)), **variation,
            steps=check_int(names("steps"), params.get("steps", 20), 1, MAX_SAMPLING_STEPS),
            guidance=check_float(names("guidance"), params.get("guidance"), 0.0, MAX_GUIDANCE, nullable=True),
            scheduler=scheduler,
            eta=check_float(names("eta"), params.get("eta", 1.0), 0.0, 1.0),
            adapter=adapter, adapter_weight=adapter_weight,
            batch_size=check_int(names("batch_size"), params.get("batch_size", 8), 1, MAX_COUNT),
            device=check_device(params.get("device", "cpu")),  # one message for the CLI and the worker
            model=model, model_path=model_path, formats=formats,
            preview=check_bool(names("preview"), params.get("preview", False)),
            preview_renderer=preview_renderer,
            preview_resolution=check_int(names("preview_resolution"), params.get("preview_resolution", 128), 8,
                                         MAX_PREVIEW_RESOLUTION),
            preview_samples=check_int(names("preview_samples"), params.get("preview_samples", 16), 1, MAX_PREVIEW_SAMPLES),
            preview_columns=check_int(names("preview_columns"), params.get("preview_columns", 0), 0, MAX_COUNT),
            overwrite=overwrite,
        )
        previous_run_files(job.out_dir, overwrite, names("out_dir"), names("overwrite"))  # refuses a folder not ours
        return job


def _out_dir(value, name: str, absolute: bool) -> Path:
    out_dir = Path(check_str(name, value)).expanduser()
    if absolute and not out_dir.is_absolute():
        raise BadInput(f"{name} must be an absolute path, got {str(out_dir)!r}")
    return out_dir.absolute()


def _folder(value, name: str, absolute: bool, what: str, must_be_dir: bool = True) -> Path | None:
    text = check_str(name, value, nullable=True)
    if text is None:
        return None
    path = Path(text).expanduser()
    if (absolute and not path.is_absolute()) or not (path.is_dir() if must_be_dir else path.exists()):
        raise BadInput(f"{name} {str(path)!r} must be {'an absolute path to ' if absolute else ''}{what}"
                       + ("" if absolute else f" ({'no such folder' if not path.exists() else 'not a folder'})"))
    return path.absolute()


def _formats(value, name: str) -> tuple[str, ...]:
    """The formats asked for, each once, a mesh format first (``3dgs`` alone adds a GLB: Blender
    imports the mesh, splat viewers the PLY)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise BadInput(f"{name} must be a non-empty list of {', '.join(FORMATS)}, got {value!r}")
    out = []
    for fmt in value:
        if fmt not in FORMATS:
            raise BadInput(f"{name} {fmt!r} is not one of {', '.join(FORMATS)}")
        if fmt not in out:
            out.append(fmt)
    mesh = [f for f in out if f != SPLAT_FORMAT] or ["glb"]
    return tuple(mesh + [f for f in out if f == SPLAT_FORMAT])


def previous_run_files(out: Path, overwrite: bool, name: str = "out_dir", overwrite_name: str = "overwrite") -> list[Path]:
    """The files of the previous generate run in ``out`` that ``overwrite`` replaces (its manifest and
    the files it lists); [] for a new or empty folder. A BadInput for a file, for a non-empty folder
    without ``overwrite``, and for one holding anything no manifest lists (never deleted: the path
    may point at the wrong folder)."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"{name} {out} is a file, not a folder")
    present = sorted(out.iterdir()) if out.is_dir() else []
    if not present:
        return []
    if not overwrite:
        raise BadInput(f"{name} {out} is not empty ({len(present)} entries, e.g. {present[0].name}); choose a new folder, "
                       f"or {overwrite_name} to replace the previous generate run there")
    listed = set(_listed_files(out))
    others = [p for p in present if not _only_listed(p, out, listed)]
    if others:
        names = ", ".join(p.name for p in others[:5]) + (", ..." if len(others) > 5 else "")
        raise BadInput(f"{overwrite_name} replaces only a previous generate run, and {out} holds {len(others)} entries its "
                       f"{MANIFEST_NAME} does not list ({names}); remove them or choose a new folder")
    return present


def _only_listed(entry: Path, out: Path, listed: set[str]) -> bool:
    """Whether ``entry`` (directly in ``out``) is a listed file, or a real folder (a job's ``gallery/``)
    holding nothing but listed files."""
    if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
        return False
    if entry.is_file():
        return entry.name in listed
    inside = list(entry.rglob("*"))
    return all(p.is_file() and not p.is_symlink() and p.relative_to(out).as_posix() in listed
               for p in inside if not p.is_dir() or p.is_symlink())


def _listed_files(out: Path) -> list[str]:
    """Files (POSIX paths relative to ``out``) the manifest in ``out`` lists, with the manifest; []
    when there is none readable. Reads this schema and, for folders written before it, the CLI's
    older ``file``/``files``."""
    try:
        return GenerateResult.read(out / MANIFEST_NAME).files()
    except RecordError:
        pass
    import json

    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
        names = [MANIFEST_NAME]
        for asset in manifest.get("assets", []):
            names += [n for n in [asset.get("file"), *dict(asset.get("files") or {}).values()] if isinstance(n, str)]
        return names
    except (OSError, ValueError, AttributeError, TypeError):
        return []


# -- staging ------------------------------------------------------------------------------------
# A job writes into ``.<out_dir name>.partial-<8 hex>`` beside ``out_dir`` and renames it at the end; a
# process killed meanwhile (SIGKILL, out of memory, power loss) leaves it behind, hidden, with up to a
# few hundred MB of meshes. Each job removes such folders from its out_dir's parent when it starts,
# but only stale ones: another process (a second Blender, a batch run) may be exporting into one right
# now. "Stale" is decided by age, not by a lock or a pid: a staging folder exists only while files are
# exported, and a live export touches it (a new temp file, a rename, a write) every few seconds, so one
# untouched for an hour has no writer left. A lock (flock) would free a killed job's folder at once,
# but fcntl does not exist on Windows, where the worker also runs, and a pid means nothing on a
# network drive shared by two machines.
STAGING_STALE_AFTER_S = 3600.0
STAGING_NAME = re.compile(r"\..+\.partial-[0-9a-f]{8}")


def _last_touched(folder: Path) -> float:
    """The newest mtime of ``folder`` and of the entries directly in it (staging folders are flat)."""
    newest = folder.lstat().st_mtime
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
            except OSError:  # removed meanwhile
                pass
    return newest


def remove_stale_staging(parent: Path, stale_after_s: float = STAGING_STALE_AFTER_S,
                         now: float | None = None) -> list[Path]:
    """Remove the staging folders in ``parent`` left by killed generate jobs; return those removed.

    Only real folders (not symlinks) named ``.<name>.partial-<8 hex digits>`` and untouched for
    ``stale_after_s`` seconds (see the comment above). Never raises: a folder that cannot be
    removed now is tried again by the next job.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:  # no parent yet, or not readable: nothing of ours there
        return removed
    for entry in entries:
        if not STAGING_NAME.fullmatch(entry.name):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or now - _last_touched(Path(entry.path)) < stale_after_s:
                continue
            shutil.rmtree(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _remove_entries(previous: list[Path]) -> None:
    """Delete what :func:`previous_run_files` returned: listed files, and folders holding only listed files."""
    for path in previous:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def remove_previous_run(out: Path, name: str = "out_dir", overwrite_name: str = "overwrite") -> list[Path]:
    """Remove the previous generate run in ``out``, and the folder, as ``overwrite`` replaces one: only
    a folder holding nothing but its manifest and the files that lists (:func:`previous_run_files`;
    anything else is a BadInput and nothing is deleted). For a caller whose new run leaves the folder
    out (the demo with no alignment drops its ``aligned/``). Returns the entries removed ([] when
    ``out`` did not exist); a RuntimeError when files appear in ``out`` meanwhile (they are kept)."""
    previous = previous_run_files(out, True, name, overwrite_name)
    _empty_folder(out, previous, f"{out} changed while its previous generate run was removed (it holds new "
                  "files); they were kept")
    return previous


def _commit(staging: Path, out_dir: Path, previous: list[Path]) -> None:
    """Replace the previous run's files (if any) and move the finished staging folder to ``out_dir``
    in one rename; ``out_dir`` must then be absent or empty (never overwritten)."""
    _empty_folder(out_dir, previous, f"{out_dir} changed while the job ran (it holds files again); the new "
                  "assets were not moved there")
    os.replace(staging, out_dir)


def _empty_folder(folder: Path, previous: list[Path], changed: str) -> None:
    """Remove ``previous`` (a run's listed entries) and then ``folder`` itself, which must then be empty;
    RuntimeError(``changed``) when it is not (files appeared meanwhile: they are kept)."""
    _remove_entries(previous)
    if folder.exists():
        try:
            folder.rmdir()
        except OSError:
            raise RuntimeError(changed) from None


# -- the job ------------------------------------------------------------------------------------
def load_job_model(job: GenerateJob):
    """The job's model with its adapter applied, and the seconds it took (the CLI's; the worker keeps
    a cache). An adapter that does not fit the model is BadInput."""
    from ..models import load_model

    t0 = time.perf_counter()
    model = load_model(job.model, job.model_path, device=job.device)
    if job.adapter is not None:
        from ..align.lora import load_adapter

        try:
            load_adapter(model, str(job.adapter), weight=job.adapter_weight)
        except ValueError as exc:  # AdapterError: another model's adapter, corrupt files
            raise BadInput(f"cannot use adapter {job.adapter}: {exc}") from exc
    return model, time.perf_counter() - t0


def run_generate(
    job: GenerateJob,
    *,
    model=None,
    load_s: float = 0.0,
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    preview: Callable[[PreviewMessage], None] | None = None,
    staging_tag: str | None = None,
    tiles: list | None = None,
) -> GenerateResult:
    """Run ``job``: sample its assets, write their files, the manifest and the preview into ``out_dir``.

    ``model``: an already loaded model (with the job's adapter applied, if any; ``load_s`` the
    seconds that took), else :func:`load_job_model` loads it. ``progress(fraction, message)`` along
    the way; ``should_cancel()`` polled between steps (``Cancelled`` is raised, nothing is left);
    ``preview(message)`` once the contact sheet is in place. ``staging_tag`` names the staging
    folder (the worker passes the job id, :func:`engine.worker.protocol.staging_dir`; default random).
    ``tiles``: a list the preview's tile images ((3, R, R) in [0, 1], one per asset) are appended to,
    for a caller composing a larger sheet (the demo's before/after) without rendering twice.
    Returns the manifest record with ``out_dir`` set. Everything but the rename happens in the
    staging folder, so ``out_dir`` shows the whole run or, after any failure, what it held before.
    """
    from ..pipeline import generate
    from ..sampling.sampler import Cancelled, SamplerConfig

    def say(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    def check_cancel() -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled("generate job cancelled")

    t_start = time.perf_counter()
    previous = previous_run_files(job.out_dir, job.overwrite)  # again: the folder may have changed since
    remove_stale_staging(job.out_dir.parent)
    if model is None:
        say(0.0, "loading model")
        model, load_s = load_job_model(job)
    try:
        sampler = SamplerConfig(steps=job.steps, guidance=job.guidance, scheduler=job.scheduler, eta=job.eta).for_model(model)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    check_cancel()
    end_of_sampling = 0.8 if job.preview else 0.9
    if job.variation_strength is not None:  # variations of one asset (engine/variation_assets.py)
        from ..variation_assets import generate_variations

        gen = generate_variations(model, job.prompts[0], job.seed, job.variation_strength, job.count, sampler,
                                  job.batch_size, job.variation_start, job.variation_parent,
                                  progress=lambda f, m: say(0.05 + (end_of_sampling - 0.05) * f, m),
                                  should_cancel=should_cancel, keep_splats=SPLAT_FORMAT in job.formats)
    else:
        gen = generate(model, job.prompt_list, job.seed_list, sampler, job.batch_size,
                       progress=lambda f, m: say(0.05 + (end_of_sampling - 0.05) * f, m),
                       should_cancel=should_cancel, keep_splats=SPLAT_FORMAT in job.formats)
    check_cancel()

    t0 = time.perf_counter()
    job.out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(job.out_dir, staging_tag or secrets.token_hex(8))
    staging.mkdir()
    try:
        assets = []
        for i, asset in enumerate(gen.assets):
            check_cancel()
            assets.append(_write_asset(asset, staging, job))
            say(end_of_sampling + 0.1 * (i + 1) / len(gen.assets), f"wrote {i + 1} of {len(gen.assets)}")
        if job.gallery:  # thumbnails, latents and gallery.json for the Blender gallery and picks.json
            check_cancel()
            from ..gallery_files import write_job_gallery

            variation = None if job.variation_strength is None else {
                "strength": job.variation_strength, "parent": [list(s) for s in job.variation_parent],
                "first_index": job.variation_start}
            write_job_gallery(model, gen.assets, assets, staging, variation, batch=job.batch_size)
        export_s = time.perf_counter() - t0
        sheet, preview_s = None, 0.0
        if job.preview:
            check_cancel()
            say(end_of_sampling + 0.1, "rendering the preview sheet")
            t1 = time.perf_counter()
            sheet = _write_preview(model, gen.assets, staging / PREVIEW_NAME, job, tiles)
            preview_s = time.perf_counter() - t1
        total_s = time.perf_counter() - t_start + load_s
        result = GenerateResult(
            prompts=list(job.prompts), seed=job.seed, count=job.count, model=model.name,
            model_path=None if job.model_path is None else str(job.model_path),
            adapter=None if job.adapter is None else AdapterUse(str(job.adapter), job.adapter_weight),
            sampler=_sampler_json(sampler), formats=list(job.formats), assets=assets, preview=sheet,
            extra_files=_other_files(staging, assets, sheet),
            timings={"load_s": round(load_s, 3), "sample_s": round(gen.timings.sample_s, 3),
                     "mesh_s": round(gen.timings.mesh_s, 3), "export_s": round(export_s, 3),
                     "preview_s": round(preview_s, 3), "total_s": round(total_s, 3),
                     "per_asset_s": round(total_s / len(assets), 3)},
            out_dir=str(job.out_dir),
        )
        from ..fileio import write_json

        write_json(staging / MANIFEST_NAME, result.to_json())
        check_cancel()  # the last cancellation point: after this the job's output exists
        _commit(staging, job.out_dir, previous)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    say(1.0, f"wrote {len(assets)} assets")
    if sheet is not None and preview is not None:
        preview(PreviewMessage(str(job.out_dir / sheet.file), "image", f"{len(assets)} x {', '.join(job.prompts)}"[:120]))
    return result


def _other_files(folder: Path, assets: list[GeneratedAsset], sheet: PreviewSheet | None) -> list[str]:
    """The files in ``folder`` (recursively, as POSIX paths) that no asset or the preview names: the
    manifest lists them too, so it always accounts for every file of its folder."""
    named = {f for a in assets for f in a.files.values()} | ({sheet.file} if sheet is not None else set())
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    return [f for f in present if f not in named and f != MANIFEST_NAME]


def _sampler_json(sampler) -> dict:
    from dataclasses import asdict

    return asdict(sampler)


def _write_asset(asset, folder: Path, job: GenerateJob) -> GeneratedAsset:
    """Write one asset's files into ``folder``: ``<slug>_seed<N>.<fmt>`` per mesh format and, for 3dgs,
    ``<slug>_seed<N>.3dgs.ply`` (not ``.ply``, the mesh PLY's name; splat viewers look for the suffix)."""
    from ..geometry.mesh import asset_name, save_mesh, save_npz
    from ..geometry.splat_ply import SUFFIX, write_3dgs_ply
    from ..naming import slug

    from ..gallery_files import lineage_suffix

    suffix = lineage_suffix(getattr(asset, "lineage", ()))  # "_v3" for variation 3: never a seed's own files
    stem = f"{slug(asset.prompt)}_seed{asset.seed}{suffix}"
    name = asset_name(asset.prompt, asset.seed) + suffix
    files = {}
    for fmt in job.mesh_formats:
        if fmt == "npz":
            files[fmt] = save_npz(asset.mesh, folder / f"{stem}.npz").name
        else:
            files[fmt] = save_mesh(asset.mesh, folder / f"{stem}.{fmt}", name=name).name
    gaussians = None
    if SPLAT_FORMAT in job.formats:
        if asset.splats is None:
            raise RuntimeError("3dgs: the generate job kept no Gaussians for this asset")
        files[SPLAT_FORMAT] = write_3dgs_ply(folder / f"{stem}{SUFFIX}", asset.splats).name
        gaussians = int(asset.splats.means.shape[1])
    return GeneratedAsset(asset.prompt, asset.seed, name, files, int(len(asset.mesh.vertices)),
                          int(len(asset.mesh.faces)), gaussians)


def preview_columns(job: GenerateJob, n: int) -> int:
    return job.preview_columns or min(PREVIEW_COLUMNS, n)


def _write_preview(model, assets, path: Path, job: GenerateJob, tiles: list | None = None) -> PreviewSheet:
    """A contact sheet of ``assets`` (one tile each, from the same three-quarter camera) at ``path``."""
    from ..imaging import contact_sheet, save_png

    images, renderer = render_preview_tiles(model, assets, job)
    if tiles is not None:
        tiles.extend(images)
    labels = [f"{a.prompt.removeprefix('a ').removeprefix('an ')} #{a.seed}" for a in assets]
    columns = preview_columns(job, len(assets))
    save_png(contact_sheet(images, labels=labels, columns=columns), path)
    return PreviewSheet(path.name, renderer, columns)


def render_preview_tiles(model, assets, job: GenerateJob) -> tuple[list, str]:
    """One (3, R, R) image in [0, 1] per asset and the renderer that made them: Cycles on the meshes
    where bpy imports (and ``preview_renderer`` allows), else the model's differentiable renderer on
    the decoded latents."""
    from ..gallery_files import render_thumbnails, three_quarter_camera

    if job.preview_renderer in ("auto", "cycles"):
        from ..render.cycles import CyclesConfig, CyclesUnavailable, render_meshes_cycles

        try:
            out = render_meshes_cycles([a.mesh for a in assets], three_quarter_camera(),
                                       CyclesConfig(resolution=job.preview_resolution, samples=job.preview_samples))
            return [views[0] for views in out.rgb], "cycles"
        except CyclesUnavailable:
            if job.preview_renderer == "cycles":
                raise
    return render_thumbnails(model, [a.latent for a in assets], job.preview_resolution, job.batch_size, samples=64), "volume"


__all__ = ["GenerateJob", "run_generate", "load_job_model", "previous_run_files", "remove_previous_run",
           "remove_stale_staging", "render_preview_tiles", "cli_names", "json_names", "STAGING_STALE_AFTER_S",
           "STAGING_NAME"]
