"""Checks for parameters that arrive untyped (a worker job's JSON, the dicts the CLI builds) and the
limits they are held to.

The CLI, the worker's jobs and the alignment job share these, so a value is refused within the same
bounds and with the same message wherever it comes in, before any model is loaded or file written.
Every check raises :class:`BadInput` naming the field: a ``ValueError``, which the CLI answers with
exit code 2 and the worker with an error of kind ``bad_input``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing

from .worker.protocol import BadInput

# Assets per generate call. Each asset's trajectory and mesh stay in memory until the call ends, so
# 10^9 assets fail only after minutes, with MemoryError; more assets are more calls with other seeds.
MAX_COUNT = 256
MAX_SAMPLING_STEPS = 1000
MAX_GUIDANCE = 100.0
MAX_ADAPTER_WEIGHT = 2.0  # 0: the base model, 1: as trained, 2: twice the trained change
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; asset i uses seed + i
# Reward scale of alignment. Sweeps used 1e2..3e5 (docs/alignment_table.md). The score-unit loss
# squares beta * w * g: on the palette reward the first round's loss is 4e-6 beta^2 (measured on the
# embedded model), inf in float32 (max 3.4e38) from about beta 1e22 on; 1e12 leaves 10 orders of
# magnitude for steeper rewards.
MAX_BETA = 1e12
# Learning rate of alignment. AdamW moves each LoRA weight by about lr per update; the defaults are
# 5e-4..5e-3. On the embedded model lr 10 diverged in 3 rounds and 1e30 turned the next round's
# trajectories into NaN before any loss existed to check (measured); 1 still trained.
MAX_LR = 1.0
# Held-out seeds per prompt of an alignment run: every held-out sample is drawn at once, scored from
# fixed cameras and put in the before/after sheets; 1e9 ended in MemoryError. 64 per prompt is a
# 256-tile sheet for four prompts.
MAX_EVAL_SEEDS = 64
# Weights of a reward expression set the mix between rewards (the overall scale is beta's); a weight
# beyond float32's range turns every reward into inf.
MAX_REWARD_WEIGHT = 1e6


def check_keys(params: dict, allowed: set[str], required: set[str], what: str = "parameter") -> None:
    """Refuse unknown keys (a misspelt one must not fall back to a default) and missing ones."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadInput(f"unknown {what}(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(params))
    if missing:
        raise BadInput(f"missing {what}(s) {', '.join(missing)}")


def check_int(name: str, value, lo: int | None = None, hi: int | None = None, nullable: bool = False) -> int | None:
    """An integer in lo..hi. JSON has one number type, so 4.0 is taken as 4, but 4.5 and True are not."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise BadInput(f"{name} must be an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadInput(f"{name} must be {_bounds(lo, hi, '{}..{}')}, got {value}")
    return value


def check_float(name: str, value, lo: float | None = None, hi: float | None = None, nullable: bool = False) -> float | None:
    """A finite number in [lo, hi]: NaN and infinities would reach the model and the files written."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInput(f"{name} must be a finite number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadInput(f"{name} must be {_bounds(lo, hi, '[{:g}, {:g}]')}, got {value:g}")
    return float(value)


def _bounds(lo, hi, both: str) -> str:
    if lo is not None and hi is not None:
        return "in " + both.format(lo, hi)
    return f">= {lo:g}" if lo is not None else f"<= {hi:g}"


def check_str(name: str, value, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false, got {value!r}")
    return value


def check_fields(name: str, values, kind) -> dict:
    """``values`` overriding fields of the dataclass ``kind``: every key a field, every value of the
    field's annotated type (a nested dataclass field takes a dict, checked the same way), so a wrong
    one is refused by name instead of failing as a TypeError inside the run."""
    if not isinstance(values, dict):
        raise BadInput(f"{name} must be an object of {kind.__name__} fields, got {values!r}")
    fields = {f.name for f in dataclasses.fields(kind)}
    check_keys(values, fields, set(), f"{name} field")
    hints = typing.get_type_hints(kind)
    return {key: _check_typed(f"{name}.{key}", value, hints[key]) for key, value in values.items()}


def _check_typed(name: str, value, hint):
    args = typing.get_args(hint)
    nullable = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if nullable else hint
    if base is bool:
        return None if value is None and nullable else check_bool(name, value)
    if base is int:
        return check_int(name, value, nullable=nullable)
    if base is float:
        return check_float(name, value, nullable=nullable)
    if base is str:
        return check_str(name, value, nullable=nullable)
    if dataclasses.is_dataclass(base) and isinstance(base, type):
        if isinstance(value, dict):
            return check_fields(name, value, base)
        if not isinstance(value, base) and not (value is None and nullable):  # e.g. "sampler": "ddim" would fail as an AttributeError mid-run
            raise BadInput(f"{name} must be an object of {base.__name__} fields, got {value!r}")
    return value  # tuples, unions of several types: left to the dataclass's own checks


def max_threads() -> int:
    """The most torch CPU threads a run may ask for: this machine's logical CPUs (the ones this process
    may use, where the OS says). More only compete for the same cores; 10^9 asked the OS for 10^9 threads."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on every OS
        return max(1, os.cpu_count() or 1)


def check_threads(name: str, value) -> int:
    """torch CPU threads: 0 (torch's default) up to :func:`max_threads`."""
    return check_int(name, value, 0, max_threads())


def available_devices() -> list[str]:
    """The devices this torch can run on, as ``device`` parameters name them ("auto" picks one)."""
    import torch

    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(value, name: str = "device") -> str:
    """A device this torch offers. Anything else fails late and obscurely (a CPU build of torch asserts
    "Torch not compiled with CUDA enabled" once the first tensor moves), so it is refused up front."""
    import torch

    text = check_str(name, value)
    offered = available_devices()
    try:
        device = torch.device(text) if text != "auto" else None
    except (RuntimeError, ValueError, TypeError):  # not a device string at all, e.g. "gpu"
        device = False
    if text == "auto" or (device and (device.type == "cpu" or str(device) in offered)):
        return text
    raise BadInput(f"{name} {text!r} is not available: this torch ({torch.__version__}) offers {', '.join(offered)}")
