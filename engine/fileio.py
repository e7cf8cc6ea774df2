"""Atomic file writes: every file the engine produces appears whole or not at all; JSON is strict."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Callable


_TEMP_ATTEMPTS = 100  # as tempfile.mkstemp: this many name clashes in a row mean something is wrong


def _create_temp(folder: Path, name: str) -> str:
    """Create an empty, new file ``.<name>.<random>.tmp`` in ``folder`` and return its path.

    Not ``tempfile.mkstemp``: that creates the file with mode 0600 whatever the umask, so every file
    renamed into place from it was private to its owner (a GLB another user or a web server could
    not read). Here the file is created with mode 0666 and the kernel applies the process umask
    (0644 under the usual 022), exactly as ``open(path, "w")`` would, with no need to read the umask
    (``os.umask`` can only be read by setting it, which races with other threads creating files)
    and honouring a default ACL of the folder where there is one. ``O_EXCL`` keeps mkstemp's
    guarantee that the name was new, so a planted file or symlink is never written through.
    """
    return str(_new_temp(folder, name, lambda path: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)), "file"))


def _new_temp(folder, name: str, create: Callable[[str], None], what: str) -> str:
    """``create(path)`` at the first free ``.<name>.<random>.tmp`` in ``folder`` (``create`` raises
    FileExistsError for a taken name); returns that path."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            create(tmp)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no unused temporary {what} name in {folder} after {_TEMP_ATTEMPTS} tries")


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` on a temp file beside ``path``, then rename it over ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give it (0666 less the umask),
    not the 0600 of ``tempfile.mkstemp``. ``writer`` must write to ``tmp_path`` in place (open it
    for writing), not replace it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path.parent, path.name)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def strict_json(obj, **kwargs) -> str:
    """``json.dumps`` that never writes NaN or Infinity: Python's default does, and strict JSON
    readers (browsers, jq, most other languages) then refuse the whole file. Every JSON text the
    engine writes goes through here; a non-finite number is a RuntimeError (a bug to report, not the
    user's input), raised before anything is written."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as exc:
        raise RuntimeError(f"refusing to write non-strict JSON: {exc}") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not strict JSON")


def strict_loads(text: str | bytes):
    """``json.loads`` that refuses NaN, Infinity and -Infinity (Python's reader takes them; strict
    JSON has no such numbers): the reading twin of :func:`strict_json`. A ValueError names the
    constant; callers add the file."""
    return json.loads(text, parse_constant=_refuse_constant)


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_bytes(path, (strict_json(obj, indent=2) + "\n").encode())


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> Path:
    """``tensors`` as a safetensors file, atomically and with the umask's mode.

    Not ``safetensors.torch.save_file``: it creates its file with mode 0600 whatever the umask
    (measured with safetensors 0.5 on Linux), so adapters and caches were private to their owner.
    """
    from safetensors.torch import save

    return write_bytes(path, save(tensors, metadata=metadata))


def make_temp_dir(parent: str | os.PathLike, name: str) -> Path:
    """A new, empty folder ``.<name>.<random>.tmp`` in ``parent``, to fill and rename into place.

    Not ``tempfile.mkdtemp``, whose 0700 would stay on the folder after the rename: ``os.mkdir``
    with 0777 lets the kernel apply the umask, as for :func:`atomic_write`'s files.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(_new_temp(parent, name, lambda path: os.mkdir(path, 0o777), "folder"))


def follow_umask(folder: str | os.PathLike) -> None:
    """Give every file under ``folder`` the mode a plain ``open(path, "w")`` would (0666 less the
    umask), for third-party writers that create theirs 0600 (``save_pretrained`` writes safetensors).

    The mode is read off a probe file the kernel creates, not from ``os.umask``, which can only be
    read by setting it (a race with other threads creating files).
    """
    folder = Path(folder)
    probe = _create_temp(folder, "umask-probe")
    try:
        mode = os.stat(probe).st_mode & 0o777
    finally:
        os.remove(probe)
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, mode)


class FolderBusy(ValueError):
    """Another live process holds the folder's lock (see :func:`folder_lock`). A ValueError: the
    CLI exits 2 and the worker answers ``bad_input``, before anything is written."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run", lock_name: str = ".lock"):
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block, or raise
    :class:`FolderBusy` at once if another process holds it.

    The lock is an OS lock on an open file (``flock``; ``msvcrt.locking`` on Windows), not the file's
    existence: the OS releases it when its holder dies, so a crashed or killed run never leaves the
    folder stuck. On POSIX the lock file is removed on release, while still held; a process that
    locked the removed file sees that its inode is no longer the path's and tries again. A folder
    created here and left empty is removed again, so a run refused later (a bad reward) writes nothing.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / lock_name
    fd = _lock_file(path, what)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for the refusal message of the next one
        yield path
    finally:
        if os.name != "nt":
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)  # releases the lock
        if created:
            with contextlib.suppress(OSError):  # only when empty: never removes a run's files
                folder.rmdir()


def _lock_file(path: Path, what: str) -> int:
    """An open descriptor of ``path`` holding its exclusive lock (see :func:`folder_lock`)."""
    for _ in range(_TEMP_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _try_lock(fd)
        except OSError:  # held by another process (BlockingIOError; PermissionError from msvcrt)
            try:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            by = f" (process {holder})" if holder.isdigit() else ""
            raise FolderBusy(f"{path.parent} is in use by another {what}{by}: wait for it to end, or choose another "
                             f"folder (its lock {path.name} is released when that process exits)") from None
        try:
            if os.name == "nt" or os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file its holder removed on release: lock the new one
    raise FolderBusy(f"could not lock {path} after {_TEMP_ATTEMPTS} tries")


def _try_lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
