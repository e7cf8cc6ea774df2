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
import sys
import time
from pathlib import Path
from typing import Callable

from ..generate.job import GenerateJob
from ..generate.job import run_generate as run_generate_job
from ..generate.records import BLENDER_FORMATS
from ..params import check_str
from ..sampling.sampler import Cancelled
from . import protocol
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

    def preview(self, path: str | os.PathLike, label: str = "", kind: str | None = None) -> None:
        """Tell the client a file is ready at ``path`` (written whole, e.g. with engine.imaging.save_png):
        ``kind`` mesh, image or curve (engine.generate.records.PREVIEW_KINDS); None: by its suffix."""
        self._send(protocol.preview(self.job_id, str(Path(path).resolve()), str(label), kind))


JobFn = Callable[[dict, JobContext], dict]


# -- parameter validation --------------------------------------------------------------------
def _absolute_out_dir(params: dict) -> Path:
    """``out_dir`` as an absolute path (``~`` expanded): the worker's cwd is the extension's own
    folder, which must never be written to, so a relative one is refused for every job kind."""
    out_dir = Path(check_str("out_dir", params.get("out_dir"))).expanduser()
    if not out_dir.is_absolute():
        raise BadInput(f"out_dir must be an absolute path, got {str(out_dir)!r}")
    return out_dir


# The worker's files per asset when a job names none: the .npz Blender builds its mesh from, and the
# GLB the object keeps a link to (docs/worker_protocol.md).
WORKER_FORMATS = BLENDER_FORMATS


def generate_job(params: dict) -> GenerateJob:
    """The :class:`GenerateJob` of a worker ``generate`` job's params: paths must be absolute (the
    worker's cwd is the extension's own folder) and ``formats`` defaults to :data:`WORKER_FORMATS`.
    Raises :class:`BadInput` or ``PromptError`` (both ``bad_input``)."""
    if isinstance(params, dict) and "formats" not in params:
        params = {**params, "formats": list(WORKER_FORMATS)}
    return GenerateJob.from_params(params, absolute_paths=True)


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
def run_generate(params: dict, ctx: JobContext) -> dict:
    """The generate job (:func:`engine.generate.job.run_generate`) on the worker's cached model.

    Files are staged in the hidden folder named after the job's id (:func:`protocol.staging_dir`, so
    the client can remove it if this worker dies) and renamed to ``out_dir`` when everything
    succeeded. Result data: the manifest (:class:`engine.generate.records.GenerateResult`) with
    ``out_dir`` (absolute) added; a ``preview`` job also sends its sheet as an image preview.
    """
    job = generate_job(params)
    ctx.progress(0.0, "loading model")
    model, load_s = MODEL_CACHE.get(job.device, job.adapter, job.adapter_weight, job.model, job.model_path)
    ctx.check_cancel()
    result = run_generate_job(job, model=model, load_s=load_s, progress=ctx.progress, should_cancel=ctx.should_cancel,
                              preview=lambda m: ctx.preview(m.path, m.label, m.kind), staging_tag=ctx.job_id)
    return result.to_json(with_out_dir=True)


# -- align -----------------------------------------------------------------------------------
ALIGN_REWARD_CURVE = "reward_curve.png"  # the file engine.align.job rewrites with the live reward curve


def align_preview_kind(path) -> str:
    """What an alignment preview shows, where ``run_alignment`` did not say: its reward curve file is
    the curve, an ``.npz`` a mesh, anything else an image. Said here, in the message, so the Blender
    layer never guesses from a label."""
    from ..generate.records import PreviewMessage

    return "curve" if Path(path).name == ALIGN_REWARD_CURVE else PreviewMessage.kind_of(path)


def run_align(params: dict, ctx: JobContext) -> dict:
    """Run ``engine.align.run_alignment(params, progress, should_cancel, preview) -> dict``.

    Its contract: bad parameters raise ``ValueError`` before any work, so a ``ValueError`` raised
    before the first ``progress`` call is reported as ``bad_input``, a later one as ``runtime``.
    ``Cancelled`` once ``should_cancel()`` is true. It owns its outputs' atomicity. A relative
    ``out_dir`` is refused here, as for ``generate`` (the CLI's alignment may write relative to its cwd).
    With ``fit_preference`` the preference reward is first fitted from a picks file
    (:func:`engine.align.from_picks.run_alignment_from_picks`).
    """
    if isinstance(params, dict) and "fit_preference" in params:  # fit the preference from picks first
        from ..align.from_picks import run_alignment_from_picks as run_alignment
    else:
        from ..align import run_alignment
    if "out_dir" in params:  # a missing one is run_alignment's to refuse
        params = {**params, "out_dir": str(_absolute_out_dir(params))}
    started = False

    def progress(fraction: float, message: str = "") -> None:
        nonlocal started
        started = True
        ctx.progress(fraction, message)

    def preview(path, label: str = "", kind: str | None = None) -> None:
        ctx.preview(path, label, kind or align_preview_kind(path))

    try:
        data = run_alignment(params, progress, ctx.should_cancel, preview)
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
