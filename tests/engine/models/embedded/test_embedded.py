import pytest
import torch
from safetensors.torch import save_file

from engine.models.embedded.grammar import PromptError
from engine.models.embedded.model import WEIGHTS_DIR, EmbeddedConfig, EmbeddedModel, ModelLoadError
from engine.models.protocol import DiffusionModel
from engine.pipeline import generate
from engine.sampling.sampler import SamplerConfig


@pytest.fixture(scope="module")
def model():
    return EmbeddedModel.load()


def test_implements_protocol_and_is_small(model):
    assert isinstance(model, DiffusionModel)
    total = sum(f.stat().st_size for f in WEIGHTS_DIR.iterdir())
    assert total < 12 * 2**20
    names = {n.split(".")[-1] for n, _ in model.denoiser.named_modules()} | {n for n, _ in model.denoiser.named_modules()}
    for target in model.lora_target_modules:
        assert any(n.endswith(target) for n in names), target


def test_missing_and_mismatched_weights_give_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        EmbeddedModel.load(tmp_path)
    (tmp_path / "config.json").write_text(EmbeddedConfig().to_json())
    save_file({"denoiser.proj_out.weight": torch.zeros(3, 3)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="do not match"):
        EmbeddedModel.load(tmp_path)


def _config_with(change) -> bytes:
    import json

    raw = json.loads((WEIGHTS_DIR / "config.json").read_text())
    change(raw)
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    "config, words",
    [
        (_config_with(lambda raw: raw.update(colour_space="srgb")), "unknown key(s) colour_space"),
        (_config_with(lambda raw: raw.pop("scaling_factor")), "missing key(s) scaling_factor"),  # not a silent 1.0
        (_config_with(lambda raw: raw["denoiser"].pop("heads")), "missing key(s) denoiser.heads"),
        (_config_with(lambda raw: raw["denoiser"].update(width="wide")), "denoiser.width must be a positive integer"),
        ((WEIGHTS_DIR / "config.json").read_bytes()[:40], "Unterminated string starting at: line 3"),  # truncated
        (b'{"scaling_factor": "\xff\xfe"}', "can't decode byte 0xff"),  # not UTF-8
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_a_bad_config_json_is_one_line_naming_the_file(tmp_path, capsys, config, words):
    import shutil

    from engine.cli import main

    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, folder)
    (folder / "config.json").write_bytes(config)
    with pytest.raises(ModelLoadError) as info:
        EmbeddedModel.load(folder)
    assert str(info.value).startswith(f"{folder / 'config.json'} is not an embedded model configuration: ")
    assert words in str(info.value)
    code = main(["generate", "--prompt", "a red cube", "--count", "1", "--model-path", str(folder), "--out", str(tmp_path / "o")])
    lines = capsys.readouterr().err.strip().splitlines()  # a progress line may come first
    assert code == 2 and lines[-1] == f"error: {info.value}"  # bad input, as a missing folder
    assert [line for line in lines if "error" in line.lower()] == lines[-1:]  # one line, no traceback
    assert not (tmp_path / "o").exists()


def test_prompts_are_validated(model):
    with pytest.raises(PromptError):
        model.encode_prompts(["a red cube", "a plaid cube"])


def test_generated_assets_follow_their_prompts(model):
    # One seed per shape family and colour pair on the diagonal: a quick fidelity check; the
    # full 48-prompt measurement is scripts/evaluate_embedded.py.
    prompts = ["a red cube", "an orange sphere", "a yellow cylinder", "a green cone", "a blue torus", "a purple pyramid", "a white sphere", "a black cube"]
    result = generate(model, prompts, list(range(500, 508)), SamplerConfig(steps=20))
    reports = [model.judge_mesh(a.mesh, a.prompt) for a in result.assets]  # the geometric judge
    assert sum(r.colour_ok for r in reports) >= 7, [(r.prompt.text, r.colour) for r in reports]
    assert sum(r.shape_ok for r in reports) >= 6, [(r.prompt.text, r.shape) for r in reports]


def test_auto_device_resolves_to_an_available_one():
    import torch

    from engine.models import load_model, resolve_device

    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    model = load_model("embedded", device="auto")
    assert next(model.denoiser.parameters()).device.type == expected


def test_decoded_grid_is_the_field_queried_at_the_grid_points():
    """decode_grid interpolates the feature grid with F.interpolate (faster); it must be the same field
    as the point query the renderer-free paths use, at every resolution."""
    from engine.models.embedded.procedural import grid_points
    from engine.models.embedded.autoencoder import FieldAutoencoder

    torch.manual_seed(0)
    ae = FieldAutoencoder()
    x = torch.randn(2, 4, 8, 8, 8)
    for res in (9, 16, 33):
        grid = ae.decode_grid(x, res)
        pts = grid_points(res).reshape(1, -1, 3).expand(2, -1, -1)
        queried = ae.query(ae.features(x), pts).transpose(1, 2).reshape(2, 4, res, res, res)
        assert torch.allclose(grid, queried, atol=1e-5), res


def test_prompt_embeds_carry_an_optional_mask_and_may_be_pooled_only():
    import torch

    from engine.models.protocol import PromptEmbeds

    e = PromptEmbeds(torch.ones(2, 3, 4), mask=torch.tensor([[1, 1, 0], [1, 0, 0]]))
    both = PromptEmbeds.cat([e, e])
    assert len(both) == 4 and both.mask.shape == (4, 3) and both.pooled is None
    assert torch.equal(both[1:3].mask, torch.tensor([[1, 0, 0], [1, 1, 0]]))
    pooled = PromptEmbeds(pooled=torch.zeros(5, 7))  # Shap-E conditions on a projection only
    assert len(pooled) == 5 and pooled[:2].pooled.shape == (2, 7) and pooled.to("cpu").hidden is None
    with pytest.raises(ValueError, match="needs hidden or pooled"):
        PromptEmbeds()
    with pytest.raises(ValueError, match="a mask belongs to hidden"):
        PromptEmbeds(pooled=torch.zeros(1, 2), mask=torch.ones(1, 3))
