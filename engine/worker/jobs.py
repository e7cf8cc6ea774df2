"""The jobs a worker runs: ``generate`` (text -> meshes on disk) and ``align`` (the lead's aligner).

A job is a function ``job(params: dict, ctx: JobContext) -> dict`` registered in :data:`JOBS`.
It validates ``params`` first (raising :class:`BadInput` or ``PromptError``: error kind
``bad_input``), reports through ``ctx.progress`` / ``ctx.preview``, polls ``ctx.should_cancel``
(the engine's loops raise ``engine.sampling.sampler.Cancelled``), and returns JSON-serialisable
result data. Anything else it raises is reported as kind ``runtime``.

The model is loaded once per worker and kept (:class:`ModelCache`); a job with another adapter
or device gets a freshly loaded model (the embedded model loads in about 20 ms once imported).
"""
from __future__ import annotations

import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..models import check_scheduler, prompt_rules
from ..fileio import write_json
from ..geometry.mesh import save_npz
from ..params import (MAX_ADAPTER_WEIGHT, MAX_COUNT, MAX_GUIDANCE, MAX_SAMPLING_STEPS, MAX_SEED, check_device,
                      check_float, check_int, check_keys, check_str)
from ..sampling.sampler import Cancelled, SamplerConfig
from . import protocol
from ..names import MODELS, SCHEDULERS
from ..naming import slug
from .protocol import BadInput

TEST_JOBS_ENV = "ENGINE_WORKER_TEST_JOBS"  # "1" registers the test-only job kinds (``_crash``, ``_stuck``)


class JobContext:
    """What a running job can do besides computing: report progress and previews, see cancels.

    ``send`` writes one protocol message; ``cancel_requested`` says whether the job was cancelled
    (by a ``cancel`` message, ``shutdown``, end of stdin or a signal). Progress is clamped to
    [0, 1], never goes down, and is sent at most every ``min_interval`` seconds (the first and
    the final 1.0 always), so a 1000-step job does not flood the client's queue.
    """

    def __init__(
        self,
        job_id: str,
        send: Callable[[dict], None],
        cancel_requested: Callable[[], bool] = lambda: False,
        min_interval: float = 0.1,
    ):
        self.job_id = job_id
        self._send = send
        self._cancel_requested = cancel_requested
        self._min_interval = min_interval
        self._fraction = 0.0
        self._last_sent: float | None = None

    def should_cancel(self) -> bool:
        return bool(self._cancel_requested())

    def check_cancel(self) -> None:
        """Raise ``Cancelled`` if the job was cancelled: a cancellation point between steps."""
        if self.should_cancel():
            raise Cancelled(f"job {self.job_id} cancelled")

    def progress(self, fraction: float, message: str = "") -> None:
        fraction = float(fraction)
        if not math.isfinite(fraction):
            return
        self._fraction = max(self._fraction, min(1.0, max(0.0, fraction)))
        now = time.monotonic()
        final = self._fraction >= 1.0
        if self._last_sent is None or final or now - self._last_sent >= self._min_interval:
            self._last_sent = now
            self._send(protocol.progress(self.job_id, self._fraction, str(message)))

    def preview(self, path: str | os.PathLike, label: str = "") -> None:
        """Tell the client a PNG is ready at ``path`` (written whole, e.g. with engine.imaging.save_png)."""
        self._send(protocol.preview(self.job_id, str(Path(path).resolve()), str(label)))


JobFn = Callable[[dict, JobContext], dict]


# -- parameter validation --------------------------------------------------------------------
def _absolute_out_dir(params: dict) -> Path:
    """``out_dir`` as an absolute path (``~`` expanded): the worker's cwd is the extension's own
    folder, which must never be written to, so a relative one is refused for every job kind."""
    out_dir = Path(check_str("out_dir", params.get("out_dir"))).expanduser()
    if not out_dir.is_absolute():
        raise BadInput(f"out_dir must be an absolute path, got {str(out_dir)!r}")
    return out_dir


@dataclass(frozen=True)
class GenerateParams:
    """``generate`` job parameters. ``out_dir`` must be absolute and either absent or empty."""

    prompt: str
    out_dir: Path
    count: int = 1
    seed: int = 0  # asset i uses seed + i
    steps: int = 20
    guidance: float | None = None  # None: the model's default
    scheduler: str = "ddim"
    eta: float = 1.0
    adapter: Path | None = None  # LoRA adapter (folder) applied with engine.align.lora.load_adapter
    adapter_weight: float = 1.0  # the adapter's blend weight: 0 base model, 1 as trained
    batch_size: int = 8
    device: str = "cpu"
    model: str = "embedded"  # a name of the model registry
    model_path: Path | None = None  # folder of its weights (absolute); None: the bundled ones

    @classmethod
    def from_params(cls, params: dict) -> "GenerateParams":
        """Validate raw JSON params; raise :class:`BadInput` or ``PromptError`` (both ``bad_input``)."""
        fields = set(cls.__dataclass_fields__)
        check_keys(params, fields, {"prompt", "out_dir"})
        prompt = params["prompt"]
        if not isinstance(prompt, str):
            raise BadInput(f"prompt must be a string, got {prompt!r}")
        model = check_str("model", params.get("model", "embedded"))
        if model not in MODELS:
            raise BadInput(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
        prompt_rules(model).validate([prompt])  # PromptError says what the model takes
        model_path = check_str("model_path", params.get("model_path"), nullable=True)
        if model_path is not None:
            model_path = Path(model_path).expanduser()
            if not model_path.is_absolute() or not model_path.is_dir():
                raise BadInput(f"model_path {str(model_path)!r} must be an absolute path to a folder of model weights")
        out_dir = _absolute_out_dir(params)
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise BadInput(f"out_dir {str(out_dir)!r} exists and is not an empty folder; give a new folder per job")
        scheduler = check_str("scheduler", params.get("scheduler", "ddim"))
        if scheduler not in SCHEDULERS:
            raise BadInput(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        try:
            check_scheduler(model, scheduler)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        adapter = check_str("adapter", params.get("adapter"), nullable=True)
        if adapter is not None:
            adapter = Path(adapter).expanduser()
            if not adapter.is_absolute() or not adapter.exists():
                raise BadInput(f"adapter {str(adapter)!r} must be an absolute path to an existing adapter")
        adapter_weight = check_float("adapter_weight", params.get("adapter_weight", 1.0), 0.0, MAX_ADAPTER_WEIGHT)
        if adapter is None and "adapter_weight" in params:
            raise BadInput("adapter_weight needs an adapter")
        seed = check_int("seed", params.get("seed", 0), 0, MAX_SEED)
        count = check_int("count", params.get("count", 1), 1, MAX_COUNT)
        if seed + count - 1 > MAX_SEED:
            raise BadInput("seed + count - 1 must fit in 63 bits")
        return cls(
            prompt=prompt,
            out_dir=out_dir,
            count=count,
            seed=seed,
            steps=check_int("steps", params.get("steps", 20), 1, MAX_SAMPLING_STEPS),
            guidance=check_float("guidance", params.get("guidance"), 0.0, MAX_GUIDANCE, nullable=True),
            scheduler=scheduler,
            eta=check_float("eta", params.get("eta", 1.0), 0.0, 1.0),
            adapter=adapter,
            adapter_weight=adapter_weight,
            batch_size=check_int("batch_size", params.get("batch_size", 8), 1, MAX_COUNT),
            device=check_device(params.get("device", "cpu")),
            model=model,
            model_path=model_path,
        )


# -- model cache -----------------------------------------------------------------------------
class ModelCache:
    """One loaded model, kept across jobs; reloaded when the model, its folder, the device or the
    adapter changes.

    One slot only: a big backbone with and without an adapter should not sit in memory twice.
    The adapter key includes its files' mtimes and sizes so a retrained adapter is picked up.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._model = None

    @staticmethod
    def _folder_key(folder: Path | None) -> tuple | None:
        """Identifies a folder's content (an adapter, a model's weights): every file's name, mtime
        and size (a folder's own mtime misses files rewritten in place)."""
        if folder is None:
            return None
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        stamp = tuple((str(p.relative_to(folder.parent)), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        return (str(folder.resolve()), stamp)

    def get(self, device: str, adapter: Path | None, weight: float = 1.0, name: str = "embedded",
            path: Path | None = None):
        """The model ``name`` (from ``path``) for (device, adapter, weight) and the seconds spent
        loading it (0 when cached)."""
        key = (name, self._folder_key(path), device, self._folder_key(adapter), weight if adapter is not None else None)
        if key == self._key:
            return self._model, 0.0
        t0 = time.perf_counter()
        self._model = self._key = None  # drop the old one before loading the next
        from ..models import load_model

        model = load_model(name, path, device=device)
        if adapter is not None:
            _apply_adapter(model, adapter, weight)
        self._model, self._key = model, key
        return model, time.perf_counter() - t0


def _apply_adapter(model, adapter: Path, weight: float) -> None:
    """``engine.align.lora.load_adapter`` adds the adapter to the model in place."""
    from ..align.lora import load_adapter

    try:
        load_adapter(model, str(adapter), weight=weight)
    except ValueError as exc:  # AdapterError: another model's adapter, corrupt files: the user's to fix
        raise BadInput(f"cannot use adapter {adapter}: {exc}") from exc


MODEL_CACHE = ModelCache()


# -- generate --------------------------------------------------------------------------------
# A generate job writes into ``.<out_dir name>.partial-<8 hex>`` beside ``out_dir`` and renames it
# to ``out_dir`` at the end; a worker killed meanwhile (SIGKILL, out of memory, power loss) leaves
# it behind, hidden, with up to a few hundred MB of meshes. Each generate job removes such folders
# from its out_dir's parent when it starts, but only stale ones: another worker (a second Blender,
# a batch run) may be exporting into one right now. "Stale" is decided by age, not by a lock or a
# pid: a staging folder exists only while meshes are exported, and a live export touches it (a new
# temp file, a rename, a write) every few seconds, so one untouched for an hour has no writer left.
# A lock (flock) would free a killed job's folder at once, but fcntl does not exist on Windows,
# where the worker also runs, and a pid means nothing on a network drive shared by two machines.
STAGING_STALE_AFTER_S = 3600.0
_STAGING_NAME = re.compile(r"\..+\.partial-[0-9a-f]{8}")


def _new_staging_dir(out_dir: Path, job_id: str) -> Path:
    """A fresh, empty staging folder beside ``out_dir``, named as :data:`_STAGING_NAME` matches and
    after the job's id (:func:`protocol.staging_dir`): the client removes it if this worker dies."""
    staging = protocol.staging_dir(out_dir, job_id)
    staging.mkdir()
    return staging


def _last_touched(folder: Path) -> float:
    """The newest mtime (s since the epoch) of ``folder`` and of the entries directly in it.

    The folder's own mtime changes when an entry is created, renamed or removed; an entry's when
    it is written to (a long write into one temp file). Staging folders are flat.
    """
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
        if not _STAGING_NAME.fullmatch(entry.name):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or now - _last_touched(Path(entry.path)) < stale_after_s:
                continue
            shutil.rmtree(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _commit_dir(staging: Path, out_dir: Path) -> None:
    """Move the finished staging folder to ``out_dir`` in one rename (``out_dir`` absent or empty)."""
    if out_dir.exists():
        out_dir.rmdir()  # fails (OSError) if something appeared there meanwhile: never overwrite
    os.replace(staging, out_dir)


def run_generate(params: dict, ctx: JobContext) -> dict:
    """Sample ``count`` assets for one prompt and write, into ``out_dir``, per asset
    ``<slug>_seed<N>.npz`` (see :func:`engine.geometry.mesh.save_npz`) and ``<slug>_seed<N>.glb``, plus ``manifest.json``.

    Files are written into a hidden staging folder beside ``out_dir`` and renamed to ``out_dir``
    only when everything succeeded: a cancelled or failed job leaves nothing behind, and the
    folder of a killed one is removed by a later job (:func:`remove_stale_staging`).
    Result data: ``{"out_dir", "manifest_path", "assets": [{"prompt", "seed", "mesh_path",
    "glb_path", "vertices", "faces"}], "timings": {"load_s", "sample_s", "mesh_s", "export_s",
    "total_s"}, "sampler": {...}}``; paths are absolute.
    """
    from ..geometry.mesh import asset_name, save_mesh
    from ..pipeline import generate

    t_start = time.perf_counter()
    p = GenerateParams.from_params(params)
    remove_stale_staging(p.out_dir.parent)
    ctx.progress(0.0, "loading model")
    model, load_s = MODEL_CACHE.get(p.device, p.adapter, p.adapter_weight, p.model, p.model_path)
    try:
        sampler = SamplerConfig(steps=p.steps, guidance=p.guidance, scheduler=p.scheduler, eta=p.eta).for_model(model)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    ctx.check_cancel()

    seeds = [p.seed + i for i in range(p.count)]
    gen = generate(
        model, [p.prompt] * p.count, seeds, sampler, p.batch_size,
        progress=lambda f, m: ctx.progress(0.05 + 0.85 * f, m),
        should_cancel=ctx.should_cancel,
    )
    ctx.check_cancel()

    t0 = time.perf_counter()
    p.out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _new_staging_dir(p.out_dir, ctx.job_id)
    try:
        records = []
        for i, asset in enumerate(gen.assets):
            ctx.check_cancel()
            stem = f"{slug(asset.prompt)}_seed{asset.seed}"
            save_npz(asset.mesh, staging / f"{stem}.npz")
            save_mesh(asset.mesh, staging / f"{stem}.glb", name=asset_name(asset.prompt, asset.seed))
            records.append(
                {
                    "prompt": asset.prompt,
                    "seed": asset.seed,
                    "mesh_path": str(p.out_dir / f"{stem}.npz"),
                    "glb_path": str(p.out_dir / f"{stem}.glb"),
                    "vertices": int(len(asset.mesh.vertices)),
                    "faces": int(len(asset.mesh.faces)),
                }
            )
            ctx.progress(0.9 + 0.1 * (i + 1) / len(gen.assets), f"wrote {i + 1} of {len(gen.assets)}")
        export_s = time.perf_counter() - t0
        data = {
            "out_dir": str(p.out_dir),
            "manifest_path": str(p.out_dir / "manifest.json"),
            "model": model.name,
            "adapter": str(p.adapter) if p.adapter else None,
            "adapter_weight": p.adapter_weight if p.adapter else None,
            "sampler": asdict(sampler),
            "assets": records,
            "timings": {
                "load_s": round(load_s, 3),
                "sample_s": round(gen.timings.sample_s, 3),
                "mesh_s": round(gen.timings.mesh_s, 3),
                "export_s": round(export_s, 3),
                "total_s": round(time.perf_counter() - t_start, 3),
            },
        }
        write_json(staging / "manifest.json", data)
        ctx.check_cancel()  # last cancellation point: after this the job's output exists
        _commit_dir(staging, p.out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return data


# -- align -----------------------------------------------------------------------------------
def run_align(params: dict, ctx: JobContext) -> dict:
    """Run ``engine.align.run_alignment(params, progress, should_cancel, preview) -> dict``.

    Its contract: bad parameters raise ``ValueError`` before any work, so a ``ValueError`` raised
    before the first ``progress`` call is reported as ``bad_input``, a later one as ``runtime``.
    ``Cancelled`` once ``should_cancel()`` is true. It owns its outputs' atomicity. A relative
    ``out_dir`` is refused here, as for ``generate`` (the CLI's alignment may write relative to its cwd).
    """
    from ..align import run_alignment

    if "out_dir" in params:  # a missing one is run_alignment's to refuse
        params = {**params, "out_dir": str(_absolute_out_dir(params))}
    started = False

    def progress(fraction: float, message: str = "") -> None:
        nonlocal started
        started = True
        ctx.progress(fraction, message)

    try:
        data = run_alignment(params, progress, ctx.should_cancel, ctx.preview)
    except ValueError as exc:
        if started:
            raise
        raise BadInput(str(exc)) from exc
    if not isinstance(data, dict):
        raise RuntimeError(f"run_alignment returned {type(data).__name__}, not a dict")
    return data


# -- test-only -------------------------------------------------------------------------------
def _crash(params: dict, ctx: JobContext) -> dict:
    """Die like an out-of-memory kill would: no message, no cleanup, a non-zero exit code."""
    ctx.progress(0.0, "about to crash")
    print(f"_crash: exiting with code {int(params.get('code', 3))}", file=sys.stderr, flush=True)
    os._exit(int(params.get("code", 3)))


def _stuck(params: dict, ctx: JobContext) -> dict:
    """Ignore cancellation like a stuck reward plugin: spin in Python ("spin") or block in a sleep ("sleep")."""
    ctx.progress(0.0, "stuck")
    if params.get("mode") == "sleep":
        time.sleep(1000)
    while True:
        pass


JOBS: dict[str, JobFn] = {"generate": run_generate, "align": run_align}


def registry() -> dict[str, JobFn]:
    """The job kinds this worker accepts; ``_crash`` and ``_stuck`` only with ENGINE_WORKER_TEST_JOBS=1."""
    jobs = dict(JOBS)
    if os.environ.get(TEST_JOBS_ENV) == "1":
        jobs["_crash"] = _crash
        jobs["_stuck"] = _stuck
    return jobs
