# SPDX-License-Identifier: GPL-3.0-or-later
"""The job manager: one engine worker process, a FIFO of jobs, results applied on the main thread.

No bpy call happens off the main thread (the client's pipe readers and the helper that waits for a
stopping worker never touch bpy). The worker (``python -m engine.worker``, docs/worker_protocol.md)
does the heavy work in its own process; :meth:`JobManager.tick` is a ``bpy.app.timers`` callback
that polls the worker's pipe without blocking, mirrors progress into ``WindowManager.nabla_r2d3``,
and applies a finished job's result a slice at a time (one asset per slice, within
:data:`APPLY_BUDGET_S`) so the interface never stalls on a large batch.

* One job runs at a time; more wait in the add-on's queue (dropping a queued job never involves
  the worker).
* Cancel: the worker is asked to stop the job; if it has not confirmed within
  :data:`CANCEL_GRACE_S` the worker process is stopped. Either way the job folder is deleted and
  nothing of the job reaches the scene.
* Previews say their kind (engine/generate/records.py ``PreviewMessage``): an ``image`` goes to the
  Previews panel, a ``curve`` to the live reward curve; a ``mesh`` (``.npz``) replaces the mesh of
  the job's one preview object in the scene
  (:mod:`.preview_object`, no undo step). A preview that cannot be shown is an error line in the
  Jobs panel, never the job's failure. Cancel or error removes the preview object, like everything
  else of the job; a finished job leaves it showing the last preview.
* A crash of the worker (or a message saying the job failed) becomes an error in the Jobs panel;
  the scene is untouched and the next job starts a fresh worker.
* In background Blender (``bpy.app.background``), where timers do not run while a script holds the
  main thread, :meth:`JobManager.run_sync` drives the same tick loop itself until the job is done.

State is kept here (Python objects, never saved); the WindowManager properties are only a mirror
for panels.
"""
from __future__ import annotations

import textwrap
import shutil
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import bpy

from ..engine.generate.records import PreviewMessage
from ..preferences import get_preferences
from . import cache, engine_python, paths
from .preview_object import PreviewObject

POLL_INTERVAL_S = 0.1  # timer period while a job runs: progress feels live, costs ~nothing
APPLY_BUDGET_S = 0.04  # main-thread time one tick may spend applying a result
CANCEL_GRACE_S = 5.0  # after this the worker is stopped if it has not confirmed a cancel
DEAD_GRACE_S = 3.0  # how long a dead worker's client may take to report its jobs
MAX_PREVIEWS = 24


class Applier(Protocol):
    """Applies one job's result to Blender data, in slices (main thread only)."""

    def step(self) -> bool:
        """Do a bounded piece of work; True when everything is applied."""

    def discard(self) -> None:
        """Undo what :meth:`step` created (the job was cancelled or a later slice failed)."""

    def finish(self, push_undo: bool) -> str:
        """After the last step: an undo step if asked, selection etc.; returns a one-line summary.
        May set an ``applied`` dict describing what it made (copied to ``Job.applied``)."""


@dataclass
class Job:
    """A job for the worker. ``make_applier(data)`` turns the result data into an :class:`Applier`."""

    kind: str
    params: dict
    label: str
    job_dir: Path | None
    make_applier: Callable[[dict], Applier]
    on_preview: Callable[[str, str], None] | None = None
    # where .npz previews go; None: made on the first one, next to the current scene's 3D cursor
    preview_object: PreviewObject | None = None
    preview_error: str = ""  # the Jobs panel error a failed preview set (cleared when the job ends)
    id: str | None = None
    started_at: float = 0.0
    cancel_at: float | None = None
    dead_since: float | None = None
    result: dict | None = None
    # outcome: "", "done", "cancelled", "error"
    outcome: str = ""
    message: str = ""
    history: list = field(default_factory=list)  # (time, fraction) pairs, for benchmarks
    applied: dict = field(default_factory=dict)  # what the applier made (object names, adapter, ...)


def _default_client_factory(python: str, env: dict, cwd: str, log_path: str | None = None):
    from ..engine.worker.client import WorkerClient

    return WorkerClient(python=python, env=env, cwd=cwd, log_path=log_path)


class JobManager:
    def __init__(self, client_factory=_default_client_factory):
        self.client_factory = client_factory
        self.client = None
        self.ready = False
        self.queue: deque[Job] = deque()
        self.active: Job | None = None
        self.applier: Applier | None = None
        self.fraction = 0.0
        self.message = ""
        self.last_error = ""
        self.last_info = ""
        self.finished: list[Job] = []  # most recent last; kept short
        self.tick_durations: list[float] = []
        self.sync = False  # True while run_sync drives the loop (no undo push, no popups)
        # bpy.app.timers matches callbacks by identity: keep one bound method for register/unregister.
        self.timer_function = self.tick

    # -- public API --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.active is not None or bool(self.queue)

    def submit(self, job: Job) -> Job:
        self.queue.append(job)
        self.last_error = ""
        if job.job_dir is not None:
            self._prune_cache(job.job_dir.parent)
        self._ensure_timer()
        self._sync_state()
        return job

    def cancel_active(self) -> bool:
        """Ask the running job to stop; True if there was one."""
        job = self.active
        if job is None:
            return False
        if self.applier is not None:  # result already here, partly imported: take it back
            self._end(job, "cancelled", "Cancelled")
            return True
        if job.cancel_at is None:
            job.cancel_at = time.monotonic()
            self.message = "Cancelling..."
            if job.id is not None and self.client is not None and self.client.alive:
                try:
                    self.client.cancel(job.id)
                except Exception:  # noqa: BLE001 - a dead pipe: the grace timeout stops the worker
                    traceback.print_exc()
            else:
                self._end(job, "cancelled", "Cancelled")
        self._sync_state()
        return True

    def cancel_all(self) -> None:
        for job in list(self.queue):
            self._cleanup_dir(job)
            job.outcome, job.message = "cancelled", "Cancelled before it started"
            self.finished.append(job)
        self.queue.clear()
        self.cancel_active()
        self._sync_state()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel everything and stop the worker (unregister, file load)."""
        self.cancel_all()
        if self.active is not None:
            self._end(self.active, "cancelled", "Cancelled")
        self._stop_client(timeout)
        if bpy.app.timers.is_registered(self.timer_function):
            bpy.app.timers.unregister(self.timer_function)

    def run_sync(self, job: Job, timeout: float | None = None) -> Job:
        """Run ``job`` to its end on the calling (main) thread; returns it with ``outcome`` set.

        For background Blender and scripts. Ctrl+C cancels the job (and re-raises)."""
        self.sync = True
        try:
            self.submit(job)
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while job.outcome == "":
                    interval = self.tick()
                    if deadline is not None and time.monotonic() > deadline and job.cancel_at is None:
                        self.cancel_active()
                        job.message = f"timed out after {timeout} s"
                    if interval:
                        time.sleep(min(interval, 0.05))
            except KeyboardInterrupt:
                self.cancel_all()
                while job.outcome == "":
                    self.tick()
                    time.sleep(0.05)
                raise
        finally:
            self.sync = False
        return job

    # -- the timer ---------------------------------------------------------------------------
    def tick(self) -> float | None:
        """One timer step; returns seconds to the next, or None when there is nothing left to do."""
        t0 = time.perf_counter()
        try:
            interval = self._tick()
        except Exception as exc:  # noqa: BLE001 - a dead timer would leave the UI stuck "Running"
            traceback.print_exc()
            if self.active is not None:
                self._end(self.active, "error", f"Internal error: {exc}")
            interval = POLL_INTERVAL_S if self.busy else None
        self._sync_state()
        self.tick_durations.append(time.perf_counter() - t0)
        del self.tick_durations[:-10000]
        return interval

    def _tick(self) -> float | None:
        if self.applier is not None:
            return self._apply_slice()
        if self.active is not None:
            return self._poll()
        if self.queue:
            self._start(self.queue.popleft())
            return POLL_INTERVAL_S
        if not get_preferences().keep_engine_loaded:
            self._stop_client(5.0, background=True)
        return None

    def _start(self, job: Job) -> None:
        self.active = job
        self.fraction, self.message = 0.0, "Starting engine..."
        job.started_at = time.perf_counter()
        try:
            client = self._ensure_client()
            job.id = client.submit(job.kind, job.params)
        except Exception as exc:  # noqa: BLE001 - no usable engine: say why, keep the scene as it is
            self._stop_client(1.0)
            self._end(job, "error", str(exc))
            return
        self.message = "Waiting for the engine..." if not self.ready else "Started"

    def _ensure_client(self):
        if self.client is not None and self.client.alive:
            return self.client
        self.client = None
        prefs = get_preferences()
        python = engine_python.resolve(prefs)
        log_path = paths.cache_dir(prefs) / "engine.log"
        client = self.client_factory(python, engine_python.worker_env(prefs, python), str(engine_python.ADDON_ROOT),
                                     str(log_path))
        client.start()
        self.client, self.ready = client, False
        return client

    def _poll(self) -> float:
        job = self.active
        client = self.client
        messages = client.poll() if client is not None else []
        for msg in messages:
            self._handle(msg)
            if self.active is not job:
                return 0.0 if self.applier is not None else POLL_INTERVAL_S
        if self.active is job and (client is None or not client.alive):
            # The client reports every unfinished job of a dead worker as a "crash" error once its
            # reader has collected the log tail; wait a moment for that before saying it ourselves.
            job.dead_since = job.dead_since or time.monotonic()
            if client is not None and time.monotonic() - job.dead_since < DEAD_GRACE_S:
                return POLL_INTERVAL_S
            code = getattr(client, "returncode", None)
            self._stop_client(0.0)
            if job.cancel_at is not None:
                self._end(job, "cancelled", "Cancelled")
            else:
                self._end(job, "error", f"The engine process stopped unexpectedly (exit code {code}); "
                                        "the scene is unchanged. See the system console for its log.")
        elif self.active is job and job.cancel_at is not None and time.monotonic() - job.cancel_at > CANCEL_GRACE_S:
            print(f"Nabla-R2D3: job {job.id} did not stop within {CANCEL_GRACE_S} s; stopping the engine", file=sys.stderr)
            self._stop_client(1.0, background=True)
            self._end(job, "cancelled", "Cancelled (engine stopped)")
        return 0.0 if self.applier is not None else POLL_INTERVAL_S

    def _handle(self, msg: dict) -> None:
        job = self.active
        kind = msg.get("type")
        if kind == "ready":
            self.ready = True
            if job is not None and job.cancel_at is None:
                self.message = "Engine ready"
            return
        if job is None or msg.get("id") != job.id:
            if kind == "error" and msg.get("id") is None and job is not None:
                self._end(job, "error", msg.get("message", "engine error"))
            return  # a late message of a job already dealt with
        if kind == "progress":
            if job.cancel_at is None:
                self.fraction = float(msg.get("fraction", 0.0))
                self.message = str(msg.get("message", ""))
                job.history.append((time.perf_counter(), self.fraction))
        elif kind == "preview":
            try:
                preview = PreviewMessage.from_json(msg)
            except ValueError as exc:  # RecordError: a malformed message is an error line, not the job's end
                self.last_error = f"Preview not shown: {exc}"
                return
            path, label = preview.path, preview.label
            if job.on_preview is not None and job.cancel_at is None:
                job.on_preview(path, label)
            if preview.kind == "mesh":
                if job.cancel_at is None:  # a cancelled job's preview object is about to go
                    self._update_preview_object(job, path, label)
            else:
                self._add_preview(job, preview)
        elif kind == "result":
            if job.cancel_at is not None:
                self._end(job, "cancelled", "Cancelled")
                return
            job.result = msg.get("data") or {}
            self.message = "Importing..."
            try:
                self.applier = job.make_applier(job.result)
            except Exception as exc:  # noqa: BLE001 - a malformed result is this job's failure only
                traceback.print_exc()
                self._end(job, "error", f"Cannot use the engine's result: {exc}")
        elif kind == "error":
            text = str(msg.get("message", "unknown error"))
            if msg.get("kind") == "crash":
                self._stop_client(0.0)
                print(f"Nabla-R2D3: engine log:\n{msg.get('stderr_tail', '')}", file=sys.stderr)
                text = f"The engine process crashed; the scene is unchanged. {text.splitlines()[0]}"
            self._end(job, "error", text)
        elif kind == "cancelled":
            self._end(job, "cancelled", "Cancelled")

    def _apply_slice(self) -> float:
        job, applier = self.active, self.applier
        t_end = time.perf_counter() + APPLY_BUDGET_S
        try:
            while True:
                if applier.step():
                    summary = applier.finish(push_undo=not self.sync)
                    job.applied = dict(getattr(applier, "applied", {}))
                    self.applier = None
                    self._end(job, "done", summary)
                    if getattr(applier, "warning", ""):  # done, but with news the user must not miss
                        self._popup(applier.warning, icon='INFO')
                    return POLL_INTERVAL_S if self.queue else 0.0
                if time.perf_counter() >= t_end:
                    return 0.0
        except Exception as exc:  # noqa: BLE001 - bad mesh file etc.: nothing of the job stays
            traceback.print_exc()
            self._end(job, "error", f"Import failed, nothing was added: {exc}")
            return POLL_INTERVAL_S

    # -- endings -----------------------------------------------------------------------------
    def _end(self, job: Job, outcome: str, message: str) -> None:
        if job.outcome:
            return
        if self.applier is not None and outcome != "done":
            try:
                self.applier.discard()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
        if self.active is job:
            self.active, self.applier = None, None
        job.outcome, job.message = outcome, job.message or message
        if job.preview_error and self.last_error == job.preview_error:
            self.last_error = ""  # the outcome below says what matters now
        if outcome != "done" and job.preview_object is not None:
            try:
                job.preview_object.remove()
            except Exception:  # noqa: BLE001 - a leftover preview is no reason to fail the ending
                traceback.print_exc()
        if outcome in ("cancelled", "error"):
            self._cleanup_dir(job)
        self.fraction, self.message = 0.0, ""
        if outcome == "error":
            self.last_error = job.message
            self.last_info = ""
            print(f"Nabla-R2D3: {job.label}: {job.message}", file=sys.stderr)
            self._popup(job.message)
        else:
            self.last_info = job.message if outcome == "done" else f"{job.label}: {job.message}"
        self.finished.append(job)
        del self.finished[:-20]
        if self.queue:
            self._ensure_timer()

    def _prune_cache(self, jobs_root: Path) -> None:
        """Keep the cache within the preferences' limits (blender/cache.py); never fails a submit."""
        try:
            result = cache.prune(jobs_root, cache.folders_in_use(jobs_root, self), cache.CacheLimits.from_preferences(get_preferences()))
        except Exception:  # noqa: BLE001 - a full disk or odd permissions must not stop the new job
            traceback.print_exc()
            return
        if result.removed:
            print(f"Nabla-R2D3: removed {len(result.removed)} old job folder(s) from the cache "
                  f"({result.freed_bytes / 1e6:.1f} MB)", file=sys.stderr)

    def _cleanup_dir(self, job: Job) -> None:
        if job.job_dir is None:
            return
        # The worker stages its files beside out_dir (".<name>.partial-*") and removes them itself
        # when it stops; a worker killed after the grace period could not, so look for them too.
        for path in (job.job_dir, *job.job_dir.parent.glob(f".{job.job_dir.name}.partial-*")):
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def _stop_client(self, timeout: float, background: bool = False) -> None:
        """Stop the worker. ``background``: wait for it on a helper thread (it touches no bpy), so
        the timer never blocks Blender's main thread on a process that takes its time to exit."""
        client, self.client, self.ready = self.client, None, False
        if client is None:
            return

        def stop():
            try:
                client.stop(timeout)
            except Exception:  # noqa: BLE001
                traceback.print_exc()

        if background and not self.sync:
            threading.Thread(target=stop, name="nabla-r2d3-stop-engine", daemon=True).start()
        else:
            stop()

    # -- UI mirror ---------------------------------------------------------------------------
    def _ensure_timer(self) -> None:
        if self.sync:
            return
        if not bpy.app.timers.is_registered(self.timer_function):
            bpy.app.timers.register(self.timer_function, first_interval=0.0, persistent=True)

    def _update_preview_object(self, job: Job, path: str, label: str) -> None:
        """Show the mesh ``path`` as the job's preview object; a failure becomes an error line."""
        try:
            if job.preview_object is None:
                job.preview_object = PreviewObject.for_scene(bpy.context.scene)
            job.preview_object.update(path, label)
        except Exception as exc:  # noqa: BLE001 - a bad preview must not stop the job (or the timer)
            traceback.print_exc()
            job.preview_error = f"Preview mesh {Path(path).name} not shown: {exc}"
            self.last_error = job.preview_error
            return
        if job.preview_error and self.last_error == job.preview_error:
            self.last_error = ""  # a later preview worked
        job.preview_error = ""

    def _add_preview(self, job: Job, preview: PreviewMessage) -> None:
        """An image preview goes to the Previews panel, the reward curve (kind ``curve``) to the Jobs panel."""
        state = _state()
        path, label = preview.path, preview.label
        if state is None or not path:
            return
        if preview.kind == "curve":
            state.reward_curve = path
            return
        item = state.previews.add()
        item.name, item.path, item.job = label or Path(path).stem, path, job.id or ""
        while len(state.previews) > MAX_PREVIEWS:
            state.previews.remove(0)

    def _sync_state(self) -> None:
        state = _state()
        if state is None:
            return
        job = self.active
        if job is None:
            status = "IDLE"
        elif self.applier is not None:
            status = "IMPORTING"
        elif job.cancel_at is not None:
            status = "CANCELLING"
        elif not self.ready:
            status = "STARTING"
        else:
            status = "RUNNING"
        values = dict(status=status, job_label=job.label if job else "", progress=min(1.0, max(0.0, self.fraction)),
                      message=self.message, queued=len(self.queue), last_error=self.last_error,
                      last_info=self.last_info)
        changed = False
        for name, value in values.items():
            if getattr(state, name) != value:
                setattr(state, name, value)
                changed = True
        if changed:
            _redraw_sidebars()

    def _popup(self, text: str, icon: str = 'ERROR') -> None:
        if self.sync or bpy.app.background:
            return
        wm = bpy.context.window_manager
        if wm is None or not wm.windows:
            return

        def draw(menu, _context):
            for line in textwrap.wrap(text, 80):
                menu.layout.label(text=line)

        try:
            # Timers run without a window in their context; a popup needs one.
            with bpy.context.temp_override(window=wm.windows[0]):
                wm.popup_menu(draw, title="Nabla-R2D3", icon=icon)
        except Exception:  # noqa: BLE001 - no window to show it in: the Jobs panel still has it
            pass


def _state():
    wm = getattr(bpy.context, "window_manager", None)
    return getattr(wm, "nabla_r2d3", None) if wm is not None else None


def _redraw_sidebars() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == 'VIEW_3D':
                for region in area.regions:
                    if region.type == 'UI':
                        region.tag_redraw()


def run_synchronously() -> bool:
    """Background Blender: timers do not run while a script holds the main thread, so operators run
    their job to the end before returning."""
    return bool(bpy.app.background)


MANAGER = JobManager()
