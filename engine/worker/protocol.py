"""The worker's wire protocol: one JSON object per line over the worker's stdin and stdout.

This module is pure standard library (no torch, no bpy) so Blender's own process can import it.
Full description with examples: ``docs/worker_protocol.md``.

Client -> worker (the worker's stdin)::

    {"type": "job", "id": str, "kind": "generate" | "align" | ..., "params": {...}}
    {"type": "cancel", "id": str}
    {"type": "shutdown"}

Worker -> client (the worker's stdout; its stderr is a free-form log)::

    {"type": "ready", "pid": int, "version": int, ...}      once, when the worker can take jobs
    {"type": "progress", "id": str, "fraction": 0..1, "message": str}
    {"type": "preview", "id": str, "path": str, "kind": "mesh" | "image" | "curve", "label": str}
                                                            a file the job just wrote: an .npz mesh,
                                                            a PNG, or the PNG of the reward curve
    {"type": "result", "id": str, "data": {...}}            the job succeeded (terminal)
    {"type": "error", "id": str | None, "message": str, "kind": ERROR_KINDS}   (terminal)
    {"type": "cancelled", "id": str}                        (terminal)

Every job ends with exactly one terminal message. Jobs run one at a time in submission order; a
cancel removes a queued job at once or stops the running one at its next cancellation point.
``shutdown``, end of stdin, SIGTERM and SIGINT cancel the running and queued jobs (each gets its
``cancelled``) and end the worker. A line that is not a valid request gets an ``error`` of kind
``protocol`` (with the request's ``id`` when one could be read) and the worker carries on.

Error kinds: ``bad_input`` (parameters refused before work starts, e.g. a prompt outside the
vocabulary), ``runtime`` (the job failed while running), ``crash`` (the worker process died; made
by the client, which saw the exit, never sent by the worker), ``protocol`` (malformed or
unsupported request: bad JSON, missing fields, unknown job kind, duplicate id).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1

REQUEST_TYPES = ("job", "cancel", "shutdown")
EVENT_TYPES = ("ready", "progress", "preview", "result", "error", "cancelled")
TERMINAL_TYPES = ("result", "error", "cancelled")
ERROR_KINDS = ("bad_input", "runtime", "crash", "protocol")


class ProtocolError(ValueError):
    """A line that is not a valid message. ``job_id`` is the message's id when one was readable."""

    def __init__(self, message: str, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


class BadInput(ValueError):
    """Job parameters the worker refuses before doing any work; reported as kind ``bad_input``.

    Job functions (the worker's own, and ``engine.align.run_alignment``) raise it for parameters
    a user could fix. Any other exception is reported as kind ``runtime``.
    """


def staging_dir(out_dir: str | Path, job_id: str) -> Path:
    """Where the generate job ``job_id`` stages its files before renaming them to ``out_dir``
    (absolute): ``.<out_dir name>.partial-<8 hex of the id's hash>`` beside it. Derived from the id,
    so a client that sees its worker die mid-export can remove that job's folder at once."""
    out_dir = Path(out_dir)
    tag = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return out_dir.parent / f".{out_dir.name}.partial-{tag}"


def encode(message: dict[str, Any]) -> bytes:
    """One message as a UTF-8 JSON line (ASCII-only, no NaN/Infinity: strict JSON everywhere)."""
    return (json.dumps(message, ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n").encode("ascii")


def _parse_object(line: bytes | str) -> dict[str, Any]:
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"line is not UTF-8: {exc}") from None
    text = line.strip()
    if not text:
        raise ProtocolError("empty line")
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"line is not JSON ({exc.msg} at column {exc.colno}): {text[:200]!r}") from None
    except RecursionError:
        # Well-formed but nested deeper than the decoder's recursion limit: refuse the line, not the reader.
        raise ProtocolError(f"line is nested too deeply to decode: {text[:200]!r}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(msg).__name__}")
    return msg


def _readable_id(msg: dict[str, Any]) -> str | None:
    job_id = msg.get("id")
    return job_id if isinstance(job_id, str) and job_id else None


def decode_request(line: bytes | str) -> dict[str, Any]:
    """Parse and validate one client -> worker line. Raises :class:`ProtocolError`."""
    msg = _parse_object(line)
    job_id = _readable_id(msg)
    kind = msg.get("type")
    if kind not in REQUEST_TYPES:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {', '.join(REQUEST_TYPES)}", job_id)
    if kind == "shutdown":
        return {"type": "shutdown"}
    if job_id is None:
        raise ProtocolError(f"a {kind!r} message needs a non-empty string 'id'")
    if kind == "cancel":
        return {"type": "cancel", "id": job_id}
    if not isinstance(msg.get("kind"), str) or not msg["kind"]:
        raise ProtocolError("a 'job' message needs a non-empty string 'kind'", job_id)
    params = msg.get("params", {})
    if not isinstance(params, dict):
        raise ProtocolError(f"'params' must be a JSON object, got {type(params).__name__}", job_id)
    return {"type": "job", "id": job_id, "kind": msg["kind"], "params": params}


def decode_event(line: bytes | str) -> dict[str, Any]:
    """Parse one worker -> client line: a JSON object with a string ``type``.

    Unknown types are returned as they are (a newer worker may add some); raises
    :class:`ProtocolError` for anything that is not a JSON object with a type.
    """
    msg = _parse_object(line)
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("a message needs a string 'type'")
    return msg


# -- constructors: the only place message shapes are spelled out --------------------------------
def job(job_id: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"type": "job", "id": job_id, "kind": kind, "params": params}


def cancel(job_id: str) -> dict[str, Any]:
    return {"type": "cancel", "id": job_id}


def shutdown() -> dict[str, Any]:
    return {"type": "shutdown"}


def ready(pid: int, **info: Any) -> dict[str, Any]:
    return {"type": "ready", "pid": pid, "version": PROTOCOL_VERSION, **info}


def progress(job_id: str, fraction: float, message: str = "") -> dict[str, Any]:
    return {"type": "progress", "id": job_id, "fraction": min(1.0, max(0.0, float(fraction))), "message": message}


def preview(job_id: str, path: str, label: str = "", kind: str | None = None) -> dict[str, Any]:
    """``kind`` is what the file shows (engine.generate.records.PREVIEW_KINDS: mesh, image, curve);
    None: by its suffix (``.npz`` a mesh, else an image)."""
    from ..generate.records import PreviewMessage

    message = PreviewMessage(str(path), kind or PreviewMessage.kind_of(path), label)
    return {"type": "preview", "id": job_id, **message.to_json()}


def result(job_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "result", "id": job_id, "data": data}


def error(job_id: str | None, message: str, kind: str, **extra: Any) -> dict[str, Any]:
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}")
    return {"type": "error", "id": job_id, "message": message, "kind": kind, **extra}


def cancelled(job_id: str) -> dict[str, Any]:
    return {"type": "cancelled", "id": job_id}
