"""Assemble the folder ``load_model("diffsplat", DIR)`` reads from DiffSplat's official release.

    python scripts/convert_diffsplat.py --out DIR                     # downloads (a connected machine)
    python scripts/convert_diffsplat.py --out DIR --release R --pixart P   # from folders already downloaded

Downloads (only without --release/--pixart; needs ``huggingface_hub``, and ``sentencepiece`` to turn
T5's tokenizer into the tokenizer.json the engine reads):

* from ``chenguolin/DiffSplat``: the PixArt-Sigma denoiser ``gsdiff_gobj83k_pas_fp16__render/`` and
  its GSVAE ``gsvae_gobj265k_sdxl_fp16/`` (what the official ``download_ckpt.py --model_type pas``
  fetches, less GSRecon, which generation does not use);
* from ``PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers`` (what the official inference code loads):
  the T5 text encoder and tokenizer, the scheduler config and the SDXL VAE's config.

It writes, in the engine's layout (engine/models/diffsplat/loading.py):

* ``transformer/``: the EMA transformer's weights unchanged (their keys are stock diffusers keys),
  its config translated: ``PixArtTransformerMV2DModel`` -> ``PixArtTransformer2DModel``, DiffSplat's
  own keys (``view_concat_condition``, ``input_concat_plucker``, ``input_concat_binary_mask``, ...)
  checked and dropped;
* ``vae/``: the GSVAE's ``vae.*`` weights without the prefix (its tiny decoder is dropped), the SDXL
  VAE config with 12 input and output channels;
* ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and ``diffsplat.json`` (the official settings,
  with the VAE's scaling factor written out).

Nothing at run time downloads anything; this is the one step that does.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RELEASE_REPO = "chenguolin/DiffSplat"
TRANSFORMER_DIR = "gsdiff_gobj83k_pas_fp16__render"
GSVAE_DIR = "gsvae_gobj265k_sdxl_fp16"
PIXART_REPO = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"
# DiffSplat's config keys with the values a text-conditioned PixArt-Sigma DiffSplat has.
DIFFSPLAT_KEYS = {"input_concat_plucker": True, "view_concat_condition": False, "input_concat_binary_mask": False}
DROPPED_KEYS = ("zero_init_conv_in",)
LATENT_CHANNELS, PLUCKER_CHANNELS, SPLATTER_CHANNELS = 4, 6, 12


class ConversionError(ValueError):
    """The release does not look like DiffSplat-PixArt-Sigma's; the message says what differs."""


def translate_transformer_config(official: dict) -> dict:
    """The official transformer config -> a stock ``PixArtTransformer2DModel`` config."""
    name = official.get("_class_name")
    if name not in ("PixArtTransformerMV2DModel", "PixArtTransformer2DModel"):
        raise ConversionError(f"expected a PixArtTransformerMV2DModel config, got {name!r}")
    for key, wanted in DIFFSPLAT_KEYS.items():
        if key in official and bool(official[key]) != wanted:
            raise ConversionError(f"{key}={official[key]!r}: only text-conditioned DiffSplat with Plücker input "
                                  f"({', '.join(f'{k}={v}' for k, v in DIFFSPLAT_KEYS.items())}) is supported")
    wanted_in = LATENT_CHANNELS + PLUCKER_CHANNELS
    if official.get("in_channels") != wanted_in or official.get("out_channels") != 2 * LATENT_CHANNELS:
        raise ConversionError(f"expected in_channels {wanted_in} and out_channels {2 * LATENT_CHANNELS}, got "
                              f"{official.get('in_channels')} and {official.get('out_channels')}")
    config = {k: v for k, v in official.items() if k not in DIFFSPLAT_KEYS and k not in DROPPED_KEYS}
    config["_class_name"] = "PixArtTransformer2DModel"
    return config


def gsvae_vae_weights(state: dict) -> dict:
    """A GSAutoencoderKL state dict -> the AutoencoderKL's (``vae.`` prefix removed, the tiny decoder dropped)."""
    weights = {k.removeprefix("vae."): v for k, v in state.items() if k.startswith("vae.")}
    if not weights:
        raise ConversionError("no 'vae.*' weights in the GSVAE checkpoint")
    for key in ("encoder.conv_in.weight", "decoder.conv_out.weight"):
        if key not in weights:
            raise ConversionError(f"the GSVAE checkpoint has no {key}")
    if weights["encoder.conv_in.weight"].shape[1] != SPLATTER_CHANNELS or \
            weights["decoder.conv_out.weight"].shape[0] != SPLATTER_CHANNELS:
        raise ConversionError(f"the GSVAE's convolutions do not take and give {SPLATTER_CHANNELS} channels")
    return weights


def gsvae_config(sdxl_vae_config: dict) -> dict:
    """The SDXL VAE's config with the GSVAE's 12 input and output channels."""
    return {**sdxl_vae_config, "_class_name": "AutoencoderKL", "in_channels": SPLATTER_CHANNELS,
            "out_channels": SPLATTER_CHANNELS}


def settings_for(vae_config: dict) -> dict:
    """diffsplat.json: the official settings, the VAE's latent normalisation written out."""
    from engine.models.diffsplat.settings import DiffSplatSettings

    settings = DiffSplatSettings().to_dict()
    settings["scaling_factor"] = float(vae_config.get("scaling_factor") or 1.0)
    settings["shift_factor"] = float(vae_config.get("shift_factor") or 0.0)
    return settings


def latest_checkpoint(run: Path, subfolder: str | None = None) -> Path:
    """``run/checkpoints/<largest iteration>[/subfolder]``."""
    iterations = sorted((p for p in (run / "checkpoints").glob("*") if re.fullmatch(r"\d+", p.name)),
                        key=lambda p: int(p.name))
    if not iterations:
        raise ConversionError(f"no checkpoints/<iteration>/ in {run}")
    return iterations[-1] / subfolder if subfolder else iterations[-1]


def assemble(release: Path, pixart: Path, out: Path) -> Path:
    """Write the engine's folder ``out`` from a downloaded release (``release``, holding
    TRANSFORMER_DIR and GSVAE_DIR) and PixArt-Sigma's diffusers folder (``pixart``). Written beside
    ``out`` and renamed into place, so a failure leaves no half folder."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from engine.fileio import make_temp_dir, strict_json

    tmp = make_temp_dir(out.parent, out.name)
    try:
        source = latest_checkpoint(release / TRANSFORMER_DIR, "transformer_ema")
        (tmp / "transformer").mkdir()
        config = translate_transformer_config(json.loads((source / "config.json").read_text()))
        (tmp / "transformer" / "config.json").write_text(strict_json(config, indent=2) + "\n")
        weights = [p for p in source.iterdir() if p.name.endswith(".safetensors") or p.name.endswith(".index.json")]
        if not any(p.name.endswith(".safetensors") for p in weights):
            raise ConversionError(f"no safetensors weights in {source}")
        for path in weights:
            shutil.copy2(path, tmp / "transformer" / path.name)

        gsvae = latest_checkpoint(release / GSVAE_DIR) / "model.safetensors"
        if not gsvae.is_file():
            raise ConversionError(f"no GSVAE weights at {gsvae}")
        (tmp / "vae").mkdir()
        vae_config = gsvae_config(json.loads((pixart / "vae" / "config.json").read_text()))
        (tmp / "vae" / "config.json").write_text(strict_json(vae_config, indent=2) + "\n")
        save_file(gsvae_vae_weights(load_file(str(gsvae))), str(tmp / "vae" / "diffusion_pytorch_model.safetensors"))

        shutil.copytree(pixart / "text_encoder", tmp / "text_encoder")
        shutil.copytree(pixart / "scheduler", tmp / "scheduler")
        AutoTokenizer.from_pretrained(pixart / "tokenizer").save_pretrained(tmp / "tokenizer")  # writes tokenizer.json
        (tmp / "diffsplat.json").write_text(strict_json(settings_for(vae_config), indent=2) + "\n")
        if out.exists():
            raise ConversionError(f"{out} exists; choose a new folder")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def download(cache: Path) -> tuple[Path, Path]:
    from huggingface_hub import snapshot_download

    release = Path(snapshot_download(RELEASE_REPO, local_dir=cache / "DiffSplat",
                                     allow_patterns=[f"{TRANSFORMER_DIR}/*", f"{GSVAE_DIR}/*"]))
    pixart = Path(snapshot_download(PIXART_REPO, local_dir=cache / "pixart_sigma",
                                    allow_patterns=["text_encoder/*", "tokenizer/*", "scheduler/*", "vae/config.json"]))
    return release, pixart


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (must not exist)")
    parser.add_argument("--release", type=Path, help=f"a download of {RELEASE_REPO} (default: download it)")
    parser.add_argument("--pixart", type=Path, help=f"a download of {PIXART_REPO} (default: download it)")
    parser.add_argument("--cache", type=Path, default=Path("out/diffsplat_download"), help="where downloads go")
    args = parser.parse_args(argv)
    out = args.out.expanduser()
    if out.exists():
        print(f"{out} exists; choose a new folder", file=sys.stderr)
        return 2
    release, pixart = args.release, args.pixart
    if release is None or pixart is None:
        downloaded = download(args.cache)
        release, pixart = release or downloaded[0], pixart or downloaded[1]
    try:
        assemble(release.expanduser(), pixart.expanduser(), out)
    except (ConversionError, OSError) as exc:
        print(f"cannot convert: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}; use it with --model diffsplat --model-path {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
