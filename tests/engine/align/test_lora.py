"""LoRA through peft: switched off it is the base model bit for bit; adapters round-trip; misfits are refused."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.align.lora import (AdapterError, add_lora, has_lora, load_adapter, lora_disabled, lora_parameters,
                               remove_lora, save_adapter, set_lora_scale)
from engine.models.embedded.model import EmbeddedConfig, EmbeddedModel
from engine.models.toy import GaussianToyModel


def _inputs(model, b=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, *model.latent_shape, generator=g)
    t = torch.tensor([900, 120])
    return x, t, model.encode_prompts(["a red cube", "a tall blue cylinder"])


def _perturb(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return EmbeddedModel(EmbeddedConfig())


def test_lora_wraps_every_target_and_only_lora_trains(model):
    add_lora(model, rank=4)
    wrapped = {n.rsplit(".", 1)[-1] for n, _ in model.denoiser.named_modules() if n.endswith("lora_A")}
    assert wrapped  # peft created LoRA branches
    names = [n for n, p in model.denoiser.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert {"to_q", "to_k", "to_v", "proj", "proj_out"} <= targets | {"proj"}


def test_disabled_lora_is_the_base_model_bit_for_bit(model):
    x, t, e = _inputs(model)
    with torch.no_grad():
        base = model.denoise(x, t, e)
    add_lora(model, rank=4)
    _perturb(model)
    with torch.no_grad():
        tuned = model.denoise(x, t, e)
        with lora_disabled(model):
            off = model.denoise(x, t, e)
        back_on = model.denoise(x, t, e)
    assert not torch.equal(tuned, base)
    assert torch.equal(off, base)
    assert torch.equal(back_on, tuned)
    assert all(p.requires_grad for p in lora_parameters(model))  # switching back on restores training
    remove_lora(model)
    assert not has_lora(model)
    with torch.no_grad():
        assert torch.equal(model.denoise(x, t, e), base)


def test_blend_weight_interpolates(model):
    x, t, e = _inputs(model)
    add_lora(model, rank=4)
    _perturb(model)
    with torch.no_grad():
        full = model.denoise(x, t, e)
        with lora_disabled(model):
            base = model.denoise(x, t, e)
        set_lora_scale(model, 0.0)
        zero = model.denoise(x, t, e)
        set_lora_scale(model, 0.5)
        half = model.denoise(x, t, e)
    assert torch.allclose(zero, base, atol=1e-6)
    # LoRA is linear in its scale up to the attention nonlinearity; half lies between the two.
    assert (half - base).norm() < (full - base).norm()


def test_adapter_round_trip(tmp_path, model):
    x, t, e = _inputs(model)
    add_lora(model, rank=4)
    _perturb(model)
    with torch.no_grad():
        tuned = model.denoise(x, t, e)
    folder = save_adapter(model, tmp_path / "adapter", {"reward": "dnc"})
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "nabla_adapter.json"}
    assert json.loads((folder / "nabla_adapter.json").read_text())["reward"] == "dnc"
    torch.manual_seed(0)
    fresh = EmbeddedModel(EmbeddedConfig())  # same seed: the same base weights
    load_adapter(fresh, folder)
    with torch.no_grad():
        assert torch.equal(fresh.denoise(x, t, e), tuned)
    # Saving again over the same folder replaces it whole.
    save_adapter(model, folder)
    assert (folder / "adapter_model.safetensors").is_file()


def test_adapter_for_another_model_or_shape_is_refused(tmp_path, model):
    toy = GaussianToyModel()
    add_lora(toy, rank=2)
    save_adapter(toy, tmp_path / "toy")
    with pytest.raises(AdapterError, match="trained for model 'toy-gaussian'"):
        load_adapter(model, tmp_path / "toy")
    assert not has_lora(model)

    add_lora(model, rank=4)
    folder = save_adapter(model, tmp_path / "emb")
    remove_lora(model)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    key = next(iter(tensors))
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match="does not fit"):
        load_adapter(model, folder)
    assert not has_lora(model)  # a refused adapter leaves the model as it was

    (folder / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterError, match="cannot read"):
        load_adapter(model, folder)
    with pytest.raises(AdapterError, match="not an adapter folder"):
        load_adapter(model, tmp_path / "missing")


def test_lora_conditioning_also_adapts_the_timestep_embedder_and_adaln_and_trains_them():
    from engine.align.config import AlignConfig
    from engine.align.objective import LinearReward
    from engine.align.trainer import Aligner
    from engine.models.embedded.model import EmbeddedConfig, EmbeddedModel
    from engine.models.toy import GaussianToyModel

    model = EmbeddedModel(EmbeddedConfig())
    names = lambda m: {n for n, _ in m.denoiser.named_parameters() if "lora_" in n}
    al = Aligner(model, LinearReward(torch.zeros(model.latent_shape).flatten()), ["a red cube"],
                 AlignConfig(lora_rank=2, lora_conditioning=True, steps=1))
    wrapped = names(model)
    for module in model.lora_conditioning_modules:
        assert any(f"{module}.lora_A" in n for n in wrapped), module
    assert any("to_q.lora_A" in n for n in wrapped)
    with pytest.raises(ValueError, match="declares no conditioning layers"):
        Aligner(GaussianToyModel(), LinearReward(torch.tensor([1.0, 0.0])), ["x"], AlignConfig(lora_conditioning=True))
    assert al.params and all(p.requires_grad for p in al.params)
