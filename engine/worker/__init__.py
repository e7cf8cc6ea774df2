"""Background worker: long engine jobs in a separate process, driven over JSON lines.

``python -m engine.worker`` runs the worker (``server.py``, jobs in ``jobs.py``); the protocol is
in ``protocol.py`` and ``docs/worker_protocol.md``. This package's top level and ``client.py``
import only the standard library, so Blender's process can use the client without torch::

    client = WorkerClient(env={"PYTHONPATH": wheels_site_packages}).start()
    job = client.submit("generate", {"prompt": "a red cube", "count": 4, "out_dir": "/abs/new/folder"})
    for msg in client.poll(): ...           # from a bpy.app.timers callback; never blocks

    data = run_job_sync(sys.executable, "generate", params)   # blocking: blender -b, batch scripts
"""
from .client import ENGINE_ROOT, JobCancelled, JobError, WorkerClient, WorkerNotRunning, run_job_sync
from .protocol import ERROR_KINDS, PROTOCOL_VERSION, BadInput, ProtocolError

__all__ = [
    "ENGINE_ROOT",
    "ERROR_KINDS",
    "PROTOCOL_VERSION",
    "BadInput",
    "JobCancelled",
    "JobError",
    "ProtocolError",
    "WorkerClient",
    "WorkerNotRunning",
    "run_job_sync",
]
