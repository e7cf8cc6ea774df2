"""The worker process: ``python -m engine.worker``. Protocol: :mod:`engine.worker.protocol`.

Threads: the main thread runs jobs one at a time from a FIFO queue; a reader thread parses stdin
and acts on ``cancel`` and ``shutdown`` at once (setting the running job's cancel flag, or taking
a queued job out), so a long job never delays them. SIGTERM and SIGINT only set a flag (a signal
handler must not take locks the interrupted code may hold); the main thread turns it into a
shutdown within 0.2 s, and the running job sees it at its next cancellation point.

A job that does not reach a cancellation point (a reward plugin stuck in a loop or a sleep) is
interrupted: :data:`INTERRUPT_AFTER_S` after its cancel, a :class:`JobInterrupted` is raised in the
main thread (an asynchronous exception, plus a SIGUSR1 to end a blocking sleep or wait). If even that
has not ended it after :data:`EXIT_AFTER_S` (stuck inside C code), the worker reports the job
cancelled and exits; the client reports its queued jobs as a crash and can start a fresh worker.
So Cancel ends any job within a few seconds.

The protocol gets a private copy of file descriptor 1; fd 1 itself is pointed at stderr, so a
stray ``print`` or a C library writing to stdout ends up in the log instead of corrupting the
message stream.
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from . import protocol
from .protocol import BadInput, ProtocolError


INTERRUPT_AFTER_S = 1.0  # after a cancel, a job still running is interrupted ...
EXIT_AFTER_S = 4.0  # ... and one still running this long after the cancel ends the worker


def _cancelled_class():
    from ..sampling.sampler import Cancelled

    return Cancelled


@functools.cache
def _job_interrupted() -> type:
    """The exception raised asynchronously in a job that ignored its cancel: a Cancelled, so every
    job's cleanup for cancellation runs. Built on first use: the sampler module imports torch."""

    class JobInterrupted(_cancelled_class()):
        def __init__(self, *args):
            super().__init__(*(args or (f"interrupted: the job did not stop within {INTERRUPT_AFTER_S:g} s of its cancel",)))

    return JobInterrupted


def _set_async_exc(thread_id: int, exc) -> None:
    """Raise ``exc`` (a class, or None to clear) in thread ``thread_id`` at its next bytecode."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None)


def log(message: str) -> None:
    print(f"[worker {os.getpid()}] {message}", file=sys.stderr, flush=True)


@dataclass
class _Job:
    id: str
    kind: str
    params: dict
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: bool = False  # guarded by Worker._cond
    interrupted: bool = False
    reported: bool = False  # its terminal message was sent


class FdLineReader:
    """``readline()`` over a file descriptor with plain ``os.read``.

    Not ``sys.stdin.buffer``: a daemon thread blocked inside a buffered reader holds its lock,
    and interpreter shutdown then aborts with "could not acquire lock for <stdin>".
    """

    def __init__(self, fd: int, chunk: int = 65536):
        self._fd = fd
        self._chunk = chunk
        self._buf = b""

    def readline(self) -> bytes:
        while b"\n" not in self._buf:
            data = os.read(self._fd, self._chunk)
            if not data:
                line, self._buf = self._buf, b""
                return line
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"


class Worker:
    """Serve requests read from ``rfile`` (``readline() -> bytes``), writing messages to ``wfile`` (binary)."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO, jobs: dict[str, Callable], poll_s: float = 0.2):
        self._rfile = rfile
        self._wfile = wfile
        self._jobs = jobs
        self._poll_s = poll_s
        self._out_lock = threading.Lock()
        self._cond = threading.Condition()  # guards _queue, _current, _shutdown
        self._queue: deque[_Job] = deque()
        self._current: _Job | None = None
        self._shutdown = False
        self._signal: int | None = None  # set by the signal handler only
        self._main_thread: int | None = None  # the thread that runs jobs (set by run)
        self.exit_code = 0

    # -- output ------------------------------------------------------------------------------
    def send(self, message: dict) -> None:
        data = protocol.encode(message)
        with self._out_lock:
            try:
                self._wfile.write(data)
                self._wfile.flush()
            except (BrokenPipeError, OSError, ValueError):
                # The client is gone: nobody will read results, so stop working for it.
                self._stop_everything("client closed the pipe", notify=False)

    # -- input (reader thread) ---------------------------------------------------------------
    def read_requests(self) -> None:
        try:
            for raw in iter(self._rfile.readline, b""):
                if not raw.strip():
                    continue
                try:
                    self.handle(protocol.decode_request(raw))
                except ProtocolError as exc:
                    self.send(protocol.error(exc.job_id, f"bad request: {exc}", "protocol"))
                except Exception as exc:  # this thread is the worker's only ear: no line may end it
                    log(f"request not handled:\n{traceback.format_exc()}")
                    self.send(protocol.error(None, f"bad request: {type(exc).__name__}: {exc}", "protocol"))
        finally:
            # End of stdin, or the reader itself failed: either way nobody can reach the worker any more.
            self._stop_everything("stdin closed")

    def handle(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "shutdown":
            self._stop_everything("shutdown requested")
            return
        job_id = msg["id"]
        with self._cond:
            if kind == "cancel":
                if self._current is not None and self._current.id == job_id:
                    self._current.cancel.set()
                    self._watch(self._current)
                    return
                queued = next((j for j in self._queue if j.id == job_id), None)
                if queued is not None:
                    self._queue.remove(queued)
            else:
                queued = None
                if msg["kind"] not in self._jobs:
                    raise ProtocolError(f"unknown job kind {msg['kind']!r}; this worker runs {', '.join(sorted(self._jobs))}", job_id)
                if (self._current is not None and self._current.id == job_id) or any(j.id == job_id for j in self._queue):
                    # id None: an error carrying this id would read as the end of the other job
                    raise ProtocolError(f"a job with id {job_id!r} is already queued or running")
                if self._shutdown:
                    raise ProtocolError("the worker is shutting down", job_id)
                self._queue.append(_Job(job_id, msg["kind"], msg["params"]))
                self._cond.notify_all()
                return
        if queued is not None:
            self.send(protocol.cancelled(job_id))
        else:
            log(f"cancel for {job_id!r}, which is neither queued nor running (already finished?)")

    def _stop_everything(self, reason: str, notify: bool = True) -> None:
        """Cancel the running job, drop the queued ones (each gets ``cancelled``), end the loop."""
        with self._cond:
            first = not self._shutdown
            self._shutdown = True
            if self._current is not None:
                self._current.cancel.set()
                self._watch(self._current)
            dropped = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        if first:
            log(f"stopping: {reason}")
        if notify:
            for job in dropped:
                self.send(protocol.cancelled(job.id))

    # -- jobs that ignore their cancel (watchdog threads) ---------------------------------------
    def _watch(self, job: _Job) -> None:
        """After a cancel: interrupt ``job`` if it is still running in INTERRUPT_AFTER_S, end the worker
        if it still is in EXIT_AFTER_S. Caller holds _cond."""
        if job.interrupted or self._main_thread is None:
            return
        for delay, act in ((INTERRUPT_AFTER_S, self._interrupt), (EXIT_AFTER_S, self._give_up)):
            timer = threading.Timer(delay, act, args=(job,))
            timer.daemon = True
            timer.start()

    def _interrupt(self, job: _Job) -> None:
        with self._cond:
            if job.finished or job.interrupted or self._current is not job:
                return
            job.interrupted = True
            log(f"job {job.id} did not stop within {INTERRUPT_AFTER_S:g} s of its cancel; interrupting it")
            _set_async_exc(self._main_thread, _job_interrupted())
        if hasattr(signal, "pthread_kill") and hasattr(signal, "SIGUSR1"):
            try:  # wakes a blocking sleep or wait in the main thread, so the exception is raised now
                signal.pthread_kill(self._main_thread, signal.SIGUSR1)
            except (OSError, ValueError):
                pass

    def _give_up(self, job: _Job) -> None:
        with self._cond:
            if job.finished or self._current is not job:
                return
        log(f"job {job.id} is still running {EXIT_AFTER_S:g} s after its cancel (stuck outside Python); exiting")
        self.send(protocol.cancelled(job.id))
        os._exit(3)

    def _finish(self, job: _Job) -> None:
        """The job has left _run_job: no interrupt may reach the main loop after this."""
        with self._cond:
            job.finished = True
            self._current = None
            if job.interrupted and self._main_thread is not None:
                _set_async_exc(self._main_thread, None)  # one delivered too late is dropped here

    # -- signals (main thread, asynchronous) -------------------------------------------------
    def on_signal(self, signum: int, frame) -> None:
        # Only plain assignments and Event.set here: the interrupted code may hold _cond.
        self._signal = signum
        current = self._current
        if current is not None:
            current.cancel.set()

    # -- jobs (main thread) ------------------------------------------------------------------
    def run(self, **ready_info) -> int:
        self._main_thread = threading.get_ident()
        if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # only to wake a blocking call
        reader = threading.Thread(target=self.read_requests, name="worker-stdin", daemon=True)
        reader.start()
        self.send(protocol.ready(os.getpid(), jobs=sorted(self._jobs), **ready_info))
        while True:
            if self._signal is not None and not self._shutdown:
                self.exit_code = 128 + self._signal
                self._stop_everything(f"signal {self._signal}")
            with self._cond:
                if not self._queue and not self._shutdown:
                    self._cond.wait(self._poll_s)
                if not self._queue:
                    if self._shutdown:
                        break
                    continue
                job = self._current = self._queue.popleft()
            try:
                try:
                    self._run_job(job)
                finally:
                    self._finish(job)
            except _cancelled_class():  # an interrupt that landed after the job's own handler
                self._finish(job)
                if not job.reported:
                    self.send(protocol.cancelled(job.id))
        return self.exit_code

    def _run_job(self, job: _Job) -> None:
        from ..models.prompts import PromptError
        from ..sampling.sampler import Cancelled
        from .jobs import JobContext

        ctx = JobContext(job.id, self.send, lambda: job.cancel.is_set() or self._signal is not None)
        t0 = time.perf_counter()
        log(f"job {job.id} ({job.kind}) started")
        try:
            if ctx.should_cancel():
                raise Cancelled("cancelled before it started")
            data = self._jobs[job.kind](job.params, ctx)
            message = protocol.result(job.id, data)
            protocol.encode(message)  # a result that is not strict JSON is the job's failure
        except Cancelled:
            log(f"job {job.id} cancelled after {time.perf_counter() - t0:.2f} s")
            self._report(job, protocol.cancelled(job.id))
        except (BadInput, PromptError) as exc:
            log(f"job {job.id} refused: {str(exc).splitlines()[0]}")
            self._report(job, protocol.error(job.id, str(exc), "bad_input"))
        except Exception as exc:  # the worker outlives any job failure
            if job.cancel.is_set():  # e.g. the interrupt, wrapped by a reward plugin's error: the user asked to stop
                log(f"job {job.id} cancelled after {time.perf_counter() - t0:.2f} s ({type(exc).__name__}: {exc})")
                self._report(job, protocol.cancelled(job.id))
                return
            log(f"job {job.id} failed:\n{traceback.format_exc()}")
            self._report(job, protocol.error(job.id, f"{type(exc).__name__}: {exc}", "runtime"))
        else:
            log(f"job {job.id} done in {time.perf_counter() - t0:.2f} s")
            self._report(job, message)

    def _report(self, job: _Job, message: dict) -> None:
        job.reported = True  # first: an interrupt landing inside send must not add a second terminal message
        self.send(message)


def main() -> int:
    # Keep fd 1 for the protocol only; everything else printed goes to the log (stderr).
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    proto_in = FdLineReader(os.dup(sys.stdin.fileno()))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, sys.stdin.fileno())  # nothing else may read the requests
    os.close(devnull)

    t0 = time.perf_counter()
    import torch  # before "ready": the first job should not pay for it

    if "OMP_NUM_THREADS" not in os.environ:
        # One intra-op thread unless asked otherwise: on a few cores shared with Blender, two torch
        # threads gain at most ~20% when idle but run 10-75x slower when another process competes
        # (docs/alignment.md, "Threads").
        torch.set_num_threads(1)

    from .jobs import registry

    worker = Worker(proto_in, proto_out, registry())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, worker.on_signal)
    log(f"ready after {time.perf_counter() - t0:.2f} s (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    code = worker.run(torch=torch.__version__, python=sys.version.split()[0], threads=torch.get_num_threads())
    log(f"exiting with code {code}")
    return code
