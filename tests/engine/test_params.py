"""The shared parameter checks: finite numbers, typed dataclass overrides, devices this torch offers."""
import math

import pytest
import torch

from engine.align.config import AlignConfig
from engine.params import BadInput, check_device, check_fields, check_float, check_int


@pytest.fixture
def cpu_only_torch(monkeypatch):
    """A torch without CUDA or MPS, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1", True, None])
def test_check_float_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(BadInput, match="beta must be a finite number"):
        check_float("beta", value, 0.0)


def test_bounds_are_named_in_the_message():
    with pytest.raises(BadInput, match=r"count must be in 1\.\.256, got 1000000000"):
        check_int("count", 10**9, 1, 256)
    with pytest.raises(BadInput, match=r"beta must be in \[0, 1e\+12\], got 1e\+30"):
        check_float("beta", 1e30, 0.0, 1e12)
    with pytest.raises(BadInput, match="steps must be >= 0, got -1"):
        check_int("steps", -1, 0)
    assert check_int("steps", 4.0, 0) == 4 and check_float("lr", None, 0.0, nullable=True) is None


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"subsample": "half"}, "extra.subsample must be a finite number, got 'half'"),
        ({"checkpoint_every": 2.5}, "extra.checkpoint_every must be an integer"),
        ({"low_variance": "yes"}, "extra.low_variance must be true or false"),
        ({"clip_reward_grad": "x"}, "extra.clip_reward_grad must be a finite number"),
        ({"sampler": {"steps": "4"}}, "extra.sampler.steps must be an integer, got '4'"),
        ({"sampler": {"stpes": 4}}, "unknown extra.sampler field(s) stpes"),
        ({"stpes": 4}, "unknown extra field(s) stpes"),
    ],
)
def test_check_fields_names_the_wrong_field(extra, words):
    with pytest.raises(BadInput) as info:
        check_fields("extra", extra, AlignConfig)
    assert words in str(info.value)


def test_check_fields_keeps_good_values():
    extra = {"subsample": 1, "clip_reward_grad": None, "sampler": {"steps": 4.0}, "adam_betas": [0.9, 0.99]}
    assert check_fields("extra", extra, AlignConfig) == {"subsample": 1.0, "clip_reward_grad": None,
                                                         "sampler": {"steps": 4}, "adam_betas": [0.9, 0.99]}


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps", "gpu", ""])
def test_unavailable_device_names_the_devices_this_torch_offers(cpu_only_torch, device):
    with pytest.raises(BadInput) as info:
        check_device(device)
    message = str(info.value)
    assert "\n" not in message
    if device:
        assert message == f"device {device!r} is not available: this torch ({torch.__version__}) offers auto, cpu"


def test_available_devices_pass(monkeypatch, cpu_only_torch):
    assert [check_device(d) for d in ("cpu", "auto", "cpu:0")] == ["cpu", "auto", "cpu:0"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda") == "cuda" and check_device("cuda:0") == "cuda:0"
    with pytest.raises(BadInput, match="offers auto, cpu, cuda, cuda:0$"):
        check_device("cuda:1")


def test_threads_are_bounded_by_this_machines_cpus():
    import os

    from engine.params import BadInput, check_threads, max_threads

    cpus = max_threads()
    assert 1 <= cpus <= (os.cpu_count() or 1)
    assert check_threads("--threads", 0) == 0 and check_threads("--threads", cpus) == cpus
    with pytest.raises(BadInput, match=rf"--threads must be in 0..{cpus}, got {cpus + 1}"):
        check_threads("--threads", cpus + 1)
