"""scripts/convert_diffsplat.py on a tiny fake of the official release (its folder layout, config
keys and GSVAE state-dict prefix), built here from the tiny DiffSplat's components."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import convert_diffsplat as convert  # noqa: E402

from engine.models import load_model  # noqa: E402


def _fake_release(tiny: Path, root: Path) -> tuple[Path, Path]:
    from safetensors.torch import load_file, save_file

    release, pixart = root / "release", root / "pixart"
    ema = release / convert.TRANSFORMER_DIR / "checkpoints" / "002000" / "transformer_ema"
    (release / convert.TRANSFORMER_DIR / "checkpoints" / "000100").mkdir(parents=True)  # an older one
    shutil.copytree(tiny / "transformer", ema)
    config = json.loads((ema / "config.json").read_text())
    config.update(_class_name="PixArtTransformerMV2DModel", view_concat_condition=False, input_concat_plucker=True,
                  input_concat_binary_mask=False, zero_init_conv_in=True)
    (ema / "config.json").write_text(json.dumps(config))
    gsvae = release / convert.GSVAE_DIR / "checkpoints" / "004000"
    gsvae.mkdir(parents=True)
    state = {f"vae.{k}": v for k, v in load_file(str(tiny / "vae" / "diffusion_pytorch_model.safetensors")).items()}
    state["tiny_decoder.layers.0.weight"] = torch.zeros(2, 2)
    save_file(state, str(gsvae / "model.safetensors"))
    for part in ("text_encoder", "tokenizer", "scheduler"):
        shutil.copytree(tiny / part, pixart / part)
    vae_config = json.loads((tiny / "vae" / "config.json").read_text())
    vae_config.update(in_channels=3, out_channels=3, scaling_factor=0.13025)  # the image VAE's config
    (pixart / "vae").mkdir(parents=True)
    (pixart / "vae" / "config.json").write_text(json.dumps(vae_config))
    return release, pixart


def test_assembles_a_folder_the_engine_loads_with_the_same_weights(tiny_diffsplat, tmp_path):
    release, pixart = _fake_release(tiny_diffsplat, tmp_path)
    out = tmp_path / "converted"
    assert convert.main(["--out", str(out), "--release", str(release), "--pixart", str(pixart)]) == 0
    assert json.loads((out / "transformer" / "config.json").read_text())["_class_name"] == "PixArtTransformer2DModel"
    settings = json.loads((out / "diffsplat.json").read_text())
    assert settings["scaling_factor"] == 0.13025 and settings["radius"] == 1.4 and settings["plucker_bug"] is True
    converted, tiny = load_model("diffsplat", out), load_model("diffsplat", tiny_diffsplat)
    for a, b in ((converted.denoiser, tiny.denoiser), (converted.vae, tiny.vae), (converted.text_encoder, tiny.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert converted.scaling_factor == 0.13025 and converted.settings.max_token_length == 300
    # An existing folder is never overwritten.
    assert convert.main(["--out", str(out), "--release", str(release), "--pixart", str(pixart)]) == 2


def test_the_translation_refuses_what_is_not_text_conditioned_diffsplat_pixart():
    base = {"_class_name": "PixArtTransformerMV2DModel", "in_channels": 10, "out_channels": 8, "num_layers": 28,
            "input_concat_plucker": True, "view_concat_condition": False, "input_concat_binary_mask": False}
    assert convert.translate_transformer_config(base) == {"_class_name": "PixArtTransformer2DModel", "in_channels": 10,
                                                          "out_channels": 8, "num_layers": 28}
    for change, match in (({"view_concat_condition": True}, "text-conditioned"),
                          ({"input_concat_binary_mask": True, "in_channels": 11}, "text-conditioned"),
                          ({"_class_name": "UNetMV2DConditionModel"}, "PixArtTransformerMV2DModel"),
                          ({"in_channels": 4}, "in_channels 10")):
        with pytest.raises(convert.ConversionError, match=match):
            convert.translate_transformer_config({**base, **change})
    with pytest.raises(convert.ConversionError, match="vae"):
        convert.gsvae_vae_weights({"tiny_decoder.x": torch.zeros(1)})
    with pytest.raises(convert.ConversionError, match="12 channels"):
        convert.gsvae_vae_weights({"vae.encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
                                   "vae.decoder.conv_out.weight": torch.zeros(3, 8, 3, 3)})


def test_a_release_without_checkpoints_is_refused_without_a_half_folder(tiny_diffsplat, tmp_path, capsys):
    release, pixart = _fake_release(tiny_diffsplat, tmp_path)
    shutil.rmtree(release / convert.GSVAE_DIR)
    out = tmp_path / "converted"
    assert convert.main(["--out", str(out), "--release", str(release), "--pixart", str(pixart)]) == 1
    assert "no checkpoints" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixart", "release"]  # no output, no temporary folder
