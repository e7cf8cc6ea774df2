"""Client side of the background worker: start it, send jobs, read its messages without blocking.

Pure standard library (no torch, no bpy): Blender's own process imports this module and keeps
the heavy work in the worker process, so a crash or an out-of-memory kill there costs a job,
not the artist's scene.

``WorkerClient`` is made for a ``bpy.app.timers`` callback on Blender's main thread: ``submit``,
``cancel`` and ``poll`` return at once (two reader threads move the worker's stdout messages into
a queue and keep the tail of its stderr). ``run_job_sync`` is the blocking path for
``blender -b`` and batch scripts, where timers do not run.

The worker is started as ``[python, "-m", "engine.worker"]`` with the folder that contains
``engine/`` (the extension's root) as working directory and first ``PYTHONPATH`` entry, set in the
child's environment only; nothing here edits ``sys.path``.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import protocol

ENGINE_ROOT = Path(__file__).resolve().parents[2]  # the folder that contains engine/


class WorkerNotRunning(RuntimeError):
    """``submit`` on a client whose worker was never started, has exited or is stopping."""


class JobError(RuntimeError):
    """A job ended with an ``error`` message. ``kind``: bad_input, runtime, crash or protocol."""

    def __init__(self, message: str, kind: str = "runtime", job_id: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.job_id = job_id
        self.details = details or {}


class JobCancelled(RuntimeError):
    """A job ended with a ``cancelled`` message."""

    def __init__(self, job_id: str):
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


def _jsonable(value: Any) -> Any:
    """Paths become strings, tuples lists; everything else is left for ``protocol.encode`` to judge."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


class WorkerClient:
    """One worker process and the jobs sent to it.

    ``python``: the interpreter that runs the worker (it needs torch and the engine's other
    dependencies). ``env``: variables merged over ``os.environ`` for the child; a ``PYTHONPATH``
    given here is kept after the engine root (inside Blender, pass the folder where the
    extension's wheels are installed). ``cwd``: the child's working directory (default: the
    engine root). ``log_path``: if given, the worker's stderr is appended to this file.

    Every job submitted gets exactly one terminal message from ``poll()``: ``result``, ``error``
    or ``cancelled``. If the worker dies, each of its unfinished jobs gets an ``error`` of kind
    ``crash`` with ``returncode`` and ``stderr_tail`` fields (after ``stop()``: ``cancelled``).
    """

    def __init__(
        self,
        python: str | os.PathLike = sys.executable,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        log_path: str | os.PathLike | None = None,
        stderr_lines: int = 40,
    ):
        self.python = os.fspath(python)
        self.env = dict(env or {})
        self.cwd = os.fspath(cwd) if cwd is not None else str(ENGINE_ROOT)
        self.log_path = os.fspath(log_path) if log_path is not None else None
        self._stderr_lines = stderr_lines
        self._messages: queue.Queue[dict] = queue.Queue()
        self._lock = threading.Lock()  # guards the current session's fields and stdin writes
        self._session: _Session | None = None

    # -- life cycle ------------------------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        """The worker's environment: ``os.environ``, then ``env``, engine root first on PYTHONPATH."""
        env = dict(os.environ)
        env.update(self.env)
        paths = [str(ENGINE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env["PYTHONUNBUFFERED"] = "1"  # log lines reach stderr_tail as they are written
        return env

    def start(self) -> "WorkerClient":
        """Launch the worker; returns at once (its ``ready`` message comes later through poll).
        A client whose worker exited can be started again."""
        with self._lock:
            if self.alive:
                raise RuntimeError("this client's worker is already running; stop() it first")
            try:
                proc = subprocess.Popen(
                    [self.python, "-m", "engine.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=self.cwd,
                    env=self.child_env(),
                    bufsize=0,
                    creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # no console window on Windows
                )
            except OSError as exc:
                raise WorkerNotRunning(f"cannot start the worker with {self.python!r}: {exc}") from exc
            try:
                os.set_blocking(proc.stdin.fileno(), False)  # see _write
            except (OSError, AttributeError):  # Windows pipes before Python 3.12
                pass
            # Each process gets its own session, so a previous process's readers, still settling
            # its jobs, never touch this one's state.
            session = self._session = _Session(proc, deque(maxlen=self._stderr_lines))
        err = threading.Thread(target=self._read_stderr, args=(session,), name="worker-client-stderr", daemon=True)
        out = threading.Thread(target=self._read_stdout, args=(session, err), name="worker-client-stdout", daemon=True)
        session.threads = [err, out]
        err.start()
        out.start()
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """Ask the worker to shut down (it cancels its jobs), wait ``timeout`` seconds, then
        terminate, then kill. Blocks up to about ``timeout`` + 3 s. Returns the exit code."""
        session = self._session
        if session is None:
            return None
        proc = session.proc
        with self._lock:
            session.stopping = True
            if proc.poll() is None:
                self._write(session, protocol.shutdown())
            try:
                proc.stdin.close()  # end of stdin is a shutdown too
            except (OSError, ValueError):
                pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in session.threads:
            thread.join(5.0)
        return proc.returncode

    def __enter__(self) -> "WorkerClient":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """The worker process is running (it may still be importing torch: see ``info``)."""
        return self._session is not None and self._session.proc.poll() is None

    @property
    def info(self) -> dict | None:
        """The worker's ``ready`` message (pid, version, jobs, ...), None until it arrived."""
        return None if self._session is None else self._session.info

    @property
    def ready_after_s(self) -> float | None:
        """Seconds from ``start()`` to the ``ready`` message, None until it arrived."""
        return None if self._session is None else self._session.ready_after_s

    @property
    def returncode(self) -> int | None:
        return None if self._session is None else self._session.proc.poll()

    @property
    def pending(self) -> list[str]:
        """Ids of the jobs without a terminal message yet, oldest (the running one) first."""
        with self._lock:
            return [] if self._session is None else list(self._session.pending)

    def stderr_tail(self) -> str:
        """The last lines the worker wrote to its log (stderr)."""
        return "" if self._session is None else "\n".join(self._session.stderr)

    # -- jobs ------------------------------------------------------------------------------
    @staticmethod
    def _write(session: "_Session", message: dict, timeout: float = 1.0) -> bool:
        """Write one line to the worker's stdin (non-blocking where the OS allows). False when
        the worker is gone, or has not taken the line within ``timeout``: a frozen worker must
        not freeze Blender. The stdout reader settles the jobs of a worker that is gone."""
        data = memoryview(protocol.encode(message))
        deadline = time.monotonic() + timeout
        while data:
            try:
                n = session.proc.stdin.write(data)  # None (or BlockingIOError) when the pipe is full
            except BlockingIOError as exc:
                n = exc.characters_written
            except (OSError, ValueError):
                return False
            data = data[n or 0 :]
            if data:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.002)  # the worker's reader thread is behind
        return True

    def submit(self, kind: str, params: dict[str, Any]) -> str:
        """Queue a job and return its id at once. Raises ``ValueError``/``TypeError`` for params
        that are not JSON (``os.PathLike`` values are turned into strings), ``WorkerNotRunning``
        when there is no worker to take it."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict, got {type(params).__name__}")
        job_id = uuid.uuid4().hex[:12]
        message = protocol.job(job_id, kind, _jsonable(params))
        protocol.encode(message)  # not JSON: the caller's error, raised here
        with self._lock:
            session = self._session
            if session is None or session.dead or session.stopping:
                raise WorkerNotRunning("the worker is not running; start() it first")
            session.pending[job_id] = kind
            staging = _staging_of(kind, message["params"], job_id)
            if staging is not None:
                session.staging[job_id] = staging
            if not self._write(session, message):
                del session.pending[job_id]
                session.staging.pop(job_id, None)
                raise WorkerNotRunning(f"the worker {_describe_exit(session.proc.poll())}")
        return job_id

    def cancel(self, job_id: str) -> None:
        """Ask for a job to be cancelled; its ``cancelled`` (or its result, if it was just
        finishing) comes through poll. A no-op when the worker is gone."""
        with self._lock:
            if self._session is not None and not self._session.dead:
                self._write(self._session, protocol.cancel(job_id))

    def poll(self) -> list[dict]:
        """Every message received since the last call, oldest first. Never blocks."""
        out = []
        while True:
            try:
                out.append(self._messages.get_nowait())
            except queue.Empty:
                return out

    def wait_message(self, timeout: float | None) -> dict | None:
        """The next message, waiting up to ``timeout`` seconds (None: forever); None on timeout.
        Blocking: for batch code and ``run_job_sync``, not for Blender's main thread."""
        try:
            return self._messages.get(timeout=timeout)
        except queue.Empty:
            return None

    # -- reader threads ----------------------------------------------------------------------
    def _read_stderr(self, session: "_Session") -> None:
        log = open(self.log_path, "a", encoding="utf-8") if self.log_path else None
        try:
            for raw in iter(session.proc.stderr.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                session.stderr.append(line)
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
        finally:
            if log is not None:
                log.close()
            session.proc.stderr.close()

    def _read_stdout(self, session: "_Session", stderr_reader: threading.Thread) -> None:
        proc = session.proc
        for raw in iter(proc.stdout.readline, b""):
            try:
                msg = protocol.decode_event(raw)
            except protocol.ProtocolError as exc:
                session.stderr.append(f"[client] ignored a line from the worker: {exc}")
                continue
            # State first for terminal messages (a job polled as finished is no longer pending),
            # queue first for ready (once ``info`` is set, poll() can return the message).
            if msg["type"] in protocol.TERMINAL_TYPES:
                with self._lock:
                    session.pending.pop(msg.get("id"), None)
                    session.staging.pop(msg.get("id"), None)
            self._messages.put(msg)
            if msg["type"] == "ready":
                with self._lock:
                    session.info = msg
                    session.ready_after_s = time.perf_counter() - session.started_at
        proc.stdout.close()
        # End of stdout: the worker exited (or is exiting). Settle every unfinished job.
        try:
            code = proc.wait(10.0)
        except subprocess.TimeoutExpired:  # stdout closed but still alive: unusable, end it
            proc.kill()
            code = proc.wait()
        stderr_reader.join(2.0)  # the complete log tail for the message
        with self._lock:
            session.dead = True
            leftover = list(session.pending)
            session.pending.clear()
            stopping = session.stopping
            staging = [session.staging.pop(j) for j in leftover if j in session.staging]
        # The process has exited: a staging folder of its unfinished jobs has no writer left (a
        # SIGKILL mid-export leaves one, hidden, with the meshes written so far). Remove it now
        # rather than wait for a later job's stale-folder sweep, an hour on.
        for folder in staging:
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
        tail = "\n".join(session.stderr)
        for i, job_id in enumerate(leftover):
            if stopping:
                self._messages.put(protocol.cancelled(job_id))
                continue
            state = "running" if i == 0 else "queued"
            message = f"the worker process {_describe_exit(code)} while this job was {state}"
            if tail:
                message += f"; last log lines:\n{tail}"
            self._messages.put(protocol.error(job_id, message, "crash", returncode=code, stderr_tail=tail))


@dataclass
class _Session:
    """One worker process and what the client knows about it."""

    proc: subprocess.Popen
    stderr: deque
    pending: dict[str, str] = field(default_factory=dict)  # job id -> kind, in submission order
    threads: list[threading.Thread] = field(default_factory=list)
    started_at: float = field(default_factory=time.perf_counter)
    info: dict | None = None
    ready_after_s: float | None = None
    stopping: bool = False
    dead: bool = False
    staging: dict[str, Path] = field(default_factory=dict)  # generate job id -> its staging folder


def _staging_of(kind: str, params: dict, job_id: str) -> Path | None:
    """The staging folder a ``generate`` job writes into (None when its out_dir is not an absolute
    path: the worker refuses such a job before writing anything)."""
    out_dir = params.get("out_dir") if kind == "generate" else None
    if not isinstance(out_dir, str) or not out_dir:
        return None
    out = Path(out_dir).expanduser()
    return protocol.staging_dir(out, job_id) if out.is_absolute() else None


def run_job_sync(
    client_or_python: WorkerClient | str | os.PathLike | None,
    kind: str,
    params: dict[str, Any],
    on_message: Callable[[dict], None] | None = None,
    timeout: float | None = None,
) -> dict:
    """Run one job to the end and return its result data (blocking).

    ``client_or_python``: a ``WorkerClient`` (started here if it is not running; left running
    afterwards) or an interpreter path (None: ``sys.executable``) for a worker that lives only
    for this job. ``on_message`` sees every message read meanwhile, the terminal one included
    (on a shared client, other jobs' messages too: they are not put back). Raises ``JobError``
    (``.kind``, ``.message``) for an ``error``, ``JobCancelled`` for a ``cancelled``, and
    ``TimeoutError`` after ``timeout`` seconds (the job is cancelled first). On
    KeyboardInterrupt the job is cancelled before the exception propagates.
    """
    own = not isinstance(client_or_python, WorkerClient)
    client = WorkerClient(python=client_or_python or sys.executable) if own else client_or_python
    if not client.alive:
        client.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    job_id = None
    try:
        job_id = client.submit(kind, params)
        while True:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                client.cancel(job_id)
                _wait_terminal(client, job_id, on_message, 10.0)
                raise TimeoutError(f"job {job_id} ({kind}) did not finish within {timeout} s and was cancelled")
            msg = client.wait_message(wait)
            if msg is None:
                continue
            if on_message is not None:
                on_message(msg)
            if msg.get("id") == job_id and msg["type"] in protocol.TERMINAL_TYPES:
                return _outcome(msg)
    except KeyboardInterrupt:
        if job_id is not None and client.alive:
            client.cancel(job_id)
            _wait_terminal(client, job_id, on_message, 10.0)
        raise
    finally:
        if own:
            client.stop()


def _outcome(msg: dict) -> dict:
    if msg["type"] == "result":
        return msg.get("data", {})
    if msg["type"] == "cancelled":
        raise JobCancelled(msg["id"])
    details = {k: v for k, v in msg.items() if k not in ("type", "id", "message", "kind")}
    raise JobError(msg.get("message", "unknown error"), msg.get("kind", "runtime"), msg["id"], details)


def _wait_terminal(client: WorkerClient, job_id: str, on_message, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = client.wait_message(left)
        if msg is None:
            return
        if on_message is not None:
            on_message(msg)
        if msg.get("id") == job_id and msg["type"] in protocol.TERMINAL_TYPES:
            return
