"""Atomic writes and strict JSON."""
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from engine.fileio import atomic_write, strict_json, write_bytes, write_json


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_write_json_refuses_nan_and_infinity_and_writes_nothing(tmp_path, value):
    with pytest.raises(RuntimeError, match="non-strict JSON"):
        write_json(tmp_path / "report.json", {"reward": {"mean": value}})
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file


def test_write_json_writes_strict_json(tmp_path):
    path = write_json(tmp_path / "manifest.json", {"a": [1, 2.5, None]})
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict constant {c}")) == {"a": [1, 2.5, None]}
    assert strict_json({"x": 1.0}) == '{"x": 1.0}'


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back, whatever the test does."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def test_atomic_writes_follow_the_umask_like_a_plain_open(tmp_path, umask, mask, mode):
    """mkstemp's 0600 was renamed into place: a GLB or manifest nobody else could read, whatever the umask."""
    from engine.geometry.mesh import Mesh, save_mesh

    umask(mask)
    written = [
        write_json(tmp_path / "manifest.json", {"a": 1}),
        write_bytes(tmp_path / "table.md", b"| a |\n"),
        save_mesh(Mesh(np.eye(3), np.array([[0, 1, 2]]), np.full((3, 3), 0.5)), tmp_path / "m.glb"),
    ]
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what an ordinary open() gives under this umask
    assert stat.S_IMODE(plain.stat().st_mode) == mode
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.glb", "manifest.json", "plain.txt", "table.md"]


def test_atomic_write_never_writes_through_an_existing_temp_name(tmp_path, monkeypatch):
    """A name that already exists (a planted file or symlink) is skipped, not opened: O_EXCL, as mkstemp."""
    import engine.fileio as fileio

    target = tmp_path / "victim.txt"
    target.write_text("keep")
    tokens = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(fileio.secrets, "token_hex", lambda n: next(tokens))
    planted = tmp_path / ".out.json.aaaaaaaaaaaa.tmp"
    planted.symlink_to(target)
    write_json(tmp_path / "out.json", {"b": 2})
    assert target.read_text() == "keep" and planted.is_symlink()
    assert json.loads((tmp_path / "out.json").read_text()) == {"b": 2}
    assert not (tmp_path / ".out.json.bbbbbbbbbbbb.tmp").exists()


def test_writer_failure_leaves_no_temp_file(tmp_path):
    def fail(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "x.bin", fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def test_safetensors_and_adapter_folders_follow_the_umask(tmp_path, umask, mask, mode):
    """safetensors' save_file makes 0600 files and mkdtemp 0700 folders: a saved adapter or the
    shipped critic was unreadable to anyone else, whatever the umask."""
    import torch
    from safetensors.torch import load_file

    from engine.align.lora import add_lora, save_adapter
    from engine.fileio import write_safetensors
    from engine.models.toy import GaussianToyModel

    umask(mask)
    path = write_safetensors(tmp_path / "w.safetensors", {"x": torch.arange(3.0)}, metadata={"k": "v"})
    assert stat.S_IMODE(path.stat().st_mode) == mode and torch.equal(load_file(path)["x"], torch.arange(3.0))
    model = GaussianToyModel()
    add_lora(model, rank=2)
    folder = save_adapter(model, tmp_path / "adapter")
    assert stat.S_IMODE(folder.stat().st_mode) == mode | 0o111 & ~mask  # a folder: x where r
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == mode, f.name


def test_a_folder_lock_refuses_a_second_holder_and_leaves_nothing_behind(tmp_path):
    from engine.fileio import FolderBusy, folder_lock

    fresh = tmp_path / "new" / "run"
    with folder_lock(fresh, "alignment run") as lock:
        assert lock == fresh / ".lock" and lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(FolderBusy, match=rf"{fresh} is in use by another alignment run \(process {os.getpid()}\)"):
            with folder_lock(fresh, "alignment run"):  # a second open file description: refused like another process
                pass
        (fresh / "result.txt").write_text("kept")
    assert sorted(p.name for p in fresh.iterdir()) == ["result.txt"]  # the lock file is gone, the run's files stay
    empty = tmp_path / "refused_later"
    with pytest.raises(RuntimeError, match="bad reward"):
        with folder_lock(empty):
            raise RuntimeError("bad reward")
    assert not empty.exists()  # made for the lock and left empty: removed again
    with folder_lock(fresh):  # free again once released
        pass
