"""LoRA on a model's denoiser through peft: add, switch off, scale, save and load adapters.

An adapter is saved in peft's own layout, a folder with ``adapter_config.json`` (a ``LoraConfig``
whose ``base_model_name_or_path`` is the model's ``name``) and ``adapter_model.safetensors`` (the
LoRA A/B matrices under peft's key names), so peft and diffusers tooling can read it. The folder is
written beside its destination and renamed into place: a crash leaves the old adapter or none.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from ..fileio import make_temp_dir, strict_json, write_safetensors

ADAPTER_NAME = "default"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


class AdapterError(ValueError):
    """An adapter that cannot be used with this model (missing, corrupt, other model, other shape)."""


def _lora_layers(model) -> list[LoraLayer]:
    return [m for m in model.denoiser.modules() if isinstance(m, LoraLayer)]


def has_lora(model) -> bool:
    return bool(_lora_layers(model))


def add_lora(model, rank: int = 8, alpha: float | None = None, target_modules: tuple[str, ...] | None = None,
             seed: int = 0) -> LoraConfig:
    """Wrap the denoiser's target Linear layers with LoRA (B = 0, so the model is unchanged).

    Only the LoRA matrices require grad afterwards. ``alpha`` defaults to ``rank`` (scale 1).
    ``seed`` fixes the random init of the A matrices, so runs are reproducible.
    """
    if has_lora(model):
        raise AdapterError("the model already has a LoRA adapter; unload it first")
    if rank < 1:
        raise ValueError("LoRA rank must be >= 1")
    config = LoraConfig(
        r=int(rank), lora_alpha=float(alpha if alpha is not None else rank),
        target_modules=list(target_modules or model.lora_target_modules), lora_dropout=0.0,
        base_model_name_or_path=model.name,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model.denoiser, adapter_name=ADAPTER_NAME)
    model.denoiser.requires_grad_(False)
    for p in lora_parameters(model):
        p.requires_grad_(True)
    return config


def lora_parameters(model) -> list[torch.nn.Parameter]:
    """The trainable LoRA matrices, in a fixed order."""
    return [p for n, p in model.denoiser.named_parameters() if "lora_" in n]


def lora_state_dict(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(
        model.denoiser, adapter_name=ADAPTER_NAME, save_embedding_layers=False  # no hub lookup of the base config
    ).items()}


def remove_lora(model) -> None:
    """Strip every LoRA wrapper, leaving the base denoiser bit for bit."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.denoiser.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.denoiser.get_submodule(parent_name) if parent_name else model.denoiser
            setattr(parent, child, module.get_base_layer())
    if hasattr(model.denoiser, "peft_config"):
        del model.denoiser.peft_config


@contextlib.contextmanager
def lora_disabled(model):
    """Run the base model: every LoRA branch switched off inside the block (the frozen reference)."""
    layers = _lora_layers(model)
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def set_lora_scale(model, weight: float) -> None:
    """Blend the adapter in at ``weight`` (0: base model, 1: as trained)."""
    for layer in _lora_layers(model):
        layer.set_scale(ADAPTER_NAME, float(weight))


def save_adapter(model, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the adapter folder atomically; ``extra`` (JSON-able) goes into ``nabla_adapter.json``."""
    directory = Path(directory)
    config = model.denoiser.peft_config[ADAPTER_NAME]
    tmp = make_temp_dir(directory.parent, directory.name)  # creates the parent too
    try:
        write_safetensors(tmp / WEIGHTS_FILE, lora_state_dict(model), metadata={"format": "pt", "model": model.name})
        config.save_pretrained(str(tmp))  # JSON through open(): the umask's mode already
        info = {"model": model.name, "rank": config.r, "alpha": config.lora_alpha, **(extra or {})}
        (tmp / "nabla_adapter.json").write_text(strict_json(info, indent=2) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_adapter(directory: str | os.PathLike) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """Config and tensors of an adapter folder, with a clear error for anything unreadable."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise AdapterError(f"{directory} is not an adapter folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = LoraConfig.from_pretrained(str(directory))
        tensors = load_file(str(directory / WEIGHTS_FILE))
    except Exception as exc:  # corrupt JSON or safetensors: report, never crash the caller
        raise AdapterError(f"cannot read adapter {directory}: {exc}") from exc
    return config, tensors


def load_adapter(model, directory: str | os.PathLike, weight: float = 1.0) -> LoraConfig:
    """Add the adapter saved in ``directory`` to ``model`` (which must not have one yet).

    Raises AdapterError if it was trained for another model or its tensors do not fit.
    """
    config, tensors = read_adapter(directory)
    if config.base_model_name_or_path != model.name:
        raise AdapterError(
            f"adapter {directory} was trained for model {config.base_model_name_or_path!r}, not {model.name!r}"
        )
    add_lora(model, config.r, config.lora_alpha, tuple(config.target_modules))
    expected = lora_state_dict(model)
    problems = [k for k in expected if k not in tensors] + [k for k in tensors if k not in expected]
    problems += [f"{k}: {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in tensors and tensors[k].shape != v.shape]
    if problems:
        remove_lora(model)
        raise AdapterError(f"adapter {directory} does not fit this model: {'; '.join(problems[:5])}")
    set_peft_model_state_dict(model.denoiser, tensors, adapter_name=ADAPTER_NAME)
    set_lora_scale(model, weight)
    model.denoiser.requires_grad_(False)
    return config
