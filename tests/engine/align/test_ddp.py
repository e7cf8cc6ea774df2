"""Two CPU processes under torchrun (gloo): after a few rounds both hold the same LoRA weights."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method", ["nabla", "draft"])
def test_two_processes_end_with_identical_lora_weights(tmp_path, method):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(Path(__file__).with_name("ddp_run.py")), str(tmp_path), method]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)
    metas = [safe_open(str(tmp_path / f"rank{r}.safetensors"), "pt").metadata() for r in (0, 1)]
    assert all(m["world"] == "2" for m in metas)
    assert metas[0]["reward"] != metas[1]["reward"]  # each process sampled its own trajectories


def test_align_command_under_torchrun_writes_one_set_of_outputs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "engine", "align", "--reward", "dnc", "--steps", "2",
           "--trajectories", "1", "--eval-seeds", "1", "--views", "2", "--resolution", "12", "--sampling-steps", "4",
           "--prompt", "a red cube", "--out", str(out)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("held-out reward") == 1  # rank 0 reports, rank 1 stays quiet
    assert (out / "report.json").is_file() and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
