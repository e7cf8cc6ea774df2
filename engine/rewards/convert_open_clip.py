"""Convert an OpenCLIP ViT checkpoint (e.g. HPSv2.1) into a transformers ``CLIPModel`` directory.

HPSv2.1 (``xswu/HPSv2``, file ``HPS_v2.1_compressed.pt``) is an OpenCLIP ViT-H-14 state dict; the
engine loads reward models with transformers only (open_clip needs torchvision). The architectures
are the same, so the conversion renames keys and splits OpenCLIP's fused attention projection, as
transformers' own ``convert_clip_original_pytorch_to_hf.py`` does for OpenAI's checkpoints:

- ``transformer.resblocks.i`` / ``visual.transformer.resblocks.i`` -> ``text_model`` /
  ``vision_model.encoder.layers.i``; ``attn.in_proj_{weight,bias}`` split into q, k, v; ``ln_1/2``
  -> ``layer_norm1/2``; ``mlp.c_fc/c_proj`` -> ``mlp.fc1/fc2``;
- ``text_projection`` and ``visual.proj`` (applied as ``x @ P``) become ``Linear`` weights ``P.T``;
- embeddings, ``ln_final``, ``visual.ln_pre/ln_post`` and ``logit_scale`` are renamed.

The architecture (sizes, activation, tokenizer, image mean/std) comes from a base transformers
directory of the same OpenCLIP model: for HPSv2.1 that is ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``,
of which only the JSON and text files are needed::

    hf download xswu/HPSv2 HPS_v2.1_compressed.pt --local-dir weights
    hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K --include "*.json" "*.txt" --local-dir weights/vit-h-14
    python -m engine.rewards.convert_open_clip weights/HPS_v2.1_compressed.pt --base weights/vit-h-14 --out weights/hpsv2.1

The checkpoint is read with ``torch.load(weights_only=True)``; the output directory (config.json,
model.safetensors, tokenizer, preprocessor_config.json) appears whole or not at all. Converting
ViT-H-14 needs about 8 GB of memory.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Mapping

import torch

from ..fileio import follow_umask, make_temp_dir
from .errors import RewardConfigError

# Keys OpenCLIP may store that carry no weights (the causal mask is rebuilt by transformers).
_IGNORED = {"attn_mask", "text.attn_mask"}
_BLOCK = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_PLAIN = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",  # sic: transformers' spelling
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}


def open_clip_to_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP ViT CLIP state dict -> transformers ``CLIPModel`` state dict (same tensors, renamed/split).

    Accepts a bare state dict, one under ``"state_dict"``, and keys prefixed ``module.`` (DDP).
    Raises :class:`RewardConfigError` on keys this plain-ViT mapping does not know (layer scale,
    attention pooling, custom text towers), rather than silently dropping weights.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for raw_key, value in state_dict.items():
        key = raw_key[len("module.") :] if raw_key.startswith("module.") else raw_key
        if key in _IGNORED:
            continue
        if key in _PLAIN:
            out[_PLAIN[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.T.contiguous()
        elif key.startswith(("transformer.resblocks.", "visual.transformer.resblocks.")):
            tower = "vision_model" if key.startswith("visual.") else "text_model"
            rest = key.split("resblocks.", 1)[1]
            index, name = rest.split(".", 1)
            prefix = f"{tower}.encoder.layers.{index}."
            if name in _BLOCK:
                out[prefix + _BLOCK[name]] = value
            elif name in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = name.rsplit("_", 1)[1]  # weight | bias
                for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
            else:
                unknown.append(raw_key)
        else:
            unknown.append(raw_key)
    if unknown:
        raise RewardConfigError(
            f"not a plain OpenCLIP ViT checkpoint: {len(unknown)} keys have no transformers CLIPModel equivalent "
            f"(first: {', '.join(unknown[:6])})"
        )
    if "visual_projection.weight" not in out or "text_projection.weight" not in out:
        raise RewardConfigError("not an OpenCLIP CLIP checkpoint: 'visual.proj' or 'text_projection' is missing")
    return out


def load_converted_model(state_dict: Mapping[str, torch.Tensor], config):
    """A ``CLIPModel(config)`` holding the converted OpenCLIP weights; every weight must be covered."""
    from transformers import CLIPModel

    model = CLIPModel(config).eval()
    converted = open_clip_to_transformers(state_dict)
    expected = set(model.state_dict())
    missing = sorted(expected - set(converted))
    unexpected = sorted(set(converted) - expected)
    if missing or unexpected:
        raise RewardConfigError(
            f"checkpoint does not match the base architecture: missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:  # shape mismatches: wrong base model for this checkpoint
        raise RewardConfigError(f"checkpoint does not match the base architecture: {exc}") from exc
    return model


def convert_open_clip_checkpoint(checkpoint: str | os.PathLike, base: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Convert ``checkpoint`` with the architecture and tokenizer of ``base`` into the directory ``out``.

    ``base`` is a transformers CLIP directory or a repo id in the local Hugging Face cache. ``out``
    must not exist yet; it is written to a temporary sibling and renamed into place when complete.
    """
    from transformers import CLIPConfig, CLIPTokenizer

    from .clip_rewards import resolve_model_dir

    out = Path(out)
    if out.exists():
        raise RewardConfigError(f"output {out} already exists; choose a new directory")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise RewardConfigError(f"checkpoint not found: {checkpoint}")
    base_dir = resolve_model_dir(base, "conversion base model")
    config = CLIPConfig.from_pretrained(base_dir, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(base_dir, local_files_only=True)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RewardConfigError(f"cannot read {checkpoint} as a weights-only torch checkpoint: {exc}") from exc
    if not isinstance(state, Mapping):
        raise RewardConfigError(f"{checkpoint} holds a {type(state).__name__}, not a state dict")
    model = load_converted_model(state, config)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, out.name)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        processor = base_dir / "preprocessor_config.json"
        if processor.is_file():
            shutil.copyfile(processor, tmp / "preprocessor_config.json")
        follow_umask(tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.rewards.convert_open_clip", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="OpenCLIP checkpoint, e.g. HPS_v2.1_compressed.pt")
    parser.add_argument("--base", required=True, help="transformers directory (or cached repo id) of the same architecture")
    parser.add_argument("--out", required=True, type=Path, help="new directory for the transformers model")
    args = parser.parse_args(argv)
    try:
        path = convert_open_clip_checkpoint(args.checkpoint, args.base, args.out)
    except RewardConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
