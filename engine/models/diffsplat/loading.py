"""Reading a DiffSplat folder, offline: its layout, its components and the errors that say what to do.

The folder (``scripts/convert_diffsplat.py`` assembles it from the official release)::

    transformer/   diffusers PixArtTransformer2DModel (in_channels = latent channels + 6 Plücker)
    vae/           diffusers AutoencoderKL with 12 input and output channels (the GSVAE)
    text_encoder/  transformers T5EncoderModel
    tokenizer/     a T5 tokenizer with tokenizer.json
    scheduler/     scheduler_config.json
    diffsplat.json optional: DiffSplat's own settings (settings.py)

Nothing is downloaded (``local_files_only``) and no remote code runs.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..loading import quiet_loading
from .settings import SETTINGS_FILE, DiffSplatSettings, read_settings

PLUCKER_CHANNELS = 6
SPLATTER_CHANNELS = 12
REQUIRED = ("transformer/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer",
            "scheduler/scheduler_config.json")
LAYOUT = ("a folder with transformer/ (diffusers PixArtTransformer2DModel), vae/ (AutoencoderKL, 12 channels in "
          "and out), text_encoder/ (T5EncoderModel), tokenizer/ (T5, with tokenizer.json), "
          f"scheduler/scheduler_config.json and optionally {SETTINGS_FILE}")
CONVERT = "python scripts/convert_diffsplat.py --out DIR"


@dataclass
class DiffSplatParts:
    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    settings: DiffSplatSettings


def check_folder(directory: str | os.PathLike) -> Path:
    """``directory`` if it has the layout, else a ModelLoadError naming what is missing and the command."""
    directory = Path(directory).expanduser()
    missing = [name for name in REQUIRED if not (directory / name).exists()]
    if missing:
        raise ModelLoadError(f"no DiffSplat weights in {directory} (missing {', '.join(missing)}); expected {LAYOUT}. "
                             f"On a connected machine, assemble it from the official release: `{CONVERT}`")
    return directory


@contextlib.contextmanager
def _load_errors(directory: Path):
    try:
        yield
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"could not load DiffSplat from {directory} ({LAYOUT}; `{CONVERT}` writes one): {exc}") from exc


def load_parts(directory: str | os.PathLike, dtype: torch.dtype | None = None) -> DiffSplatParts:
    """Every component of the folder, checked against each other. ``dtype``: the weights' precision
    (None: as saved)."""
    directory = check_folder(directory)
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import AutoTokenizer, T5EncoderModel

    # safetensors only: a pickled .bin can run code when loaded; it is refused with a ModelLoadError
    kw = dict(local_files_only=True, use_safetensors=True, **({} if dtype is None else {"torch_dtype": dtype}))
    with quiet_loading(), _load_errors(directory):
        settings = read_settings(directory)
        transformer = PixArtTransformer2DModel.from_pretrained(directory, subfolder="transformer", **kw)
        vae = AutoencoderKL.from_pretrained(directory, subfolder="vae", **kw)
        text_encoder = T5EncoderModel.from_pretrained(directory / "text_encoder", **kw)
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True)
        scheduler_config = json.loads((directory / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    _check_consistent(directory, transformer, vae, text_encoder)
    return DiffSplatParts(transformer, vae, text_encoder, tokenizer, scheduler_config, settings)


def _check_consistent(directory: Path, transformer, vae, text_encoder) -> None:
    t, v = transformer.config, vae.config
    problems = []
    if v.in_channels != SPLATTER_CHANNELS or v.out_channels != SPLATTER_CHANNELS:
        problems.append(f"the VAE has {v.in_channels}/{v.out_channels} channels in/out, a GSVAE {SPLATTER_CHANNELS}")
    if t.in_channels != v.latent_channels + PLUCKER_CHANNELS:
        problems.append(f"the transformer takes {t.in_channels} channels, not the VAE's {v.latent_channels} latent "
                        f"channels + {PLUCKER_CHANNELS} Plücker channels")
    if t.out_channels not in (v.latent_channels, 2 * v.latent_channels):
        problems.append(f"the transformer gives {t.out_channels} channels for {v.latent_channels} latent channels")
    if t.caption_channels != text_encoder.config.d_model:
        problems.append(f"the transformer reads {t.caption_channels}-wide captions, the text encoder writes "
                        f"{text_encoder.config.d_model}")
    if problems:
        raise ModelLoadError(f"DiffSplat in {directory} does not fit together: {'; '.join(problems)}")
