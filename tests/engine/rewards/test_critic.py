"""The shipped prompt-alignment critic: loads, judges fresh ground-truth renders, gives gradients."""
import json
import math
import shutil
from dataclasses import replace

import pytest
import torch

from engine.models.embedded.grammar import PromptError
from engine.models.embedded.procedural import TRUNCATION, ShapeSpec, field_volume
from engine.models.fields import SDFGrid
from engine.render import OrbitConfig, VolumeRenderConfig, orbit_cameras, render
from engine.rewards.critic import (
    WEIGHTS_PATH,
    CriticConfig,
    CriticLoadError,
    CriticNet,
    PromptCritic,
    critic_features,
    load_critic,
    save_critic,
)

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
YAWED = ((0.8, -0.6, 0.0), (0.6, 0.8, 0.0), (0.0, 0.0, 1.0))
SPECS = {
    "a red cube": ShapeSpec("cube", "red", (0.85, 0.12, 0.10), (0.38, 0.36, 0.37), YAWED),
    "a blue sphere": ShapeSpec("sphere", "blue", (0.12, 0.25, 0.85), (0.55,), IDENTITY),
    "a yellow cone": ShapeSpec("cone", "yellow", (0.95, 0.85, 0.15), (0.45, 0.4), IDENTITY),
    "a green torus": ShapeSpec("torus", "green", (0.15, 0.70, 0.20), (0.55, 0.18), IDENTITY),
}
PROMPTS = list(SPECS)
# A second red cube, other proportions and yaw: for the feature-distance check.
OTHER_RED_CUBE = ShapeSpec("cube", "red", (0.80, 0.15, 0.12), (0.42, 0.40, 0.41), IDENTITY)


def _render(specs, resolution, grad=False):
    grid = torch.stack([field_volume(s, 32) for s in specs]).requires_grad_(grad)
    cams = orbit_cameras(OrbitConfig(views=2, azimuth_offset=30.0))
    out = render(SDFGrid(grid, TRUNCATION), cams, VolumeRenderConfig(resolution=resolution, samples=48))
    return grid, out


def _slice(out, n):
    return replace(out, rgb=out.rgb[:n], albedo=out.albedo[:n], alpha=out.alpha[:n], depth=out.depth[:n], normal=out.normal[:n])


@pytest.fixture(scope="module")
def critic():
    return load_critic()


@pytest.fixture(scope="module")
def renders64():
    return _render(list(SPECS.values()) + [OTHER_RED_CUBE], 64)[1]


def test_shipped_weights_are_small_safetensors(critic):
    assert WEIGHTS_PATH.stat().st_size < 2_000_000
    assert WEIGHTS_PATH.read_bytes()[8:9] == b"{"  # safetensors: u64 header length, then JSON
    assert isinstance(critic, CriticNet) and not critic.training
    assert not any(p.requires_grad for p in critic.parameters())


@pytest.mark.parametrize("resolution", [64, 32])
def test_right_prompt_scores_higher_than_wrong_ones(critic, renders64, resolution):
    out = _slice(renders64, 4) if resolution == 64 else _render(list(SPECS.values()), resolution)[1]
    reward = PromptCritic(critic)
    n = len(PROMPTS)
    # scores[i, j]: asset i scored against prompt j; the diagonal must win every row.
    scores = torch.stack([reward(out, [PROMPTS[j]] * n) for j in range(n)], 1)
    assert (scores.argmax(1) == torch.arange(n)).all(), scores
    shapes, colours = reward.predict(out)
    assert shapes == [SPECS[p].shape for p in PROMPTS]
    assert colours == [SPECS[p].colour for p in PROMPTS]
    # Swapping only the colour word, or only the shape word, also scores lower.
    assert reward(out, PROMPTS)[0] > reward(out, ["a blue cube", *PROMPTS[1:]])[0]
    assert reward(out, PROMPTS)[0] > reward(out, ["a red pyramid", *PROMPTS[1:]])[0]


def test_score_range_modes_and_open_colour(critic, renders64):
    out = renders64
    four = _slice(out, 4)
    log_p = PromptCritic(critic).score_views(four, PROMPTS)
    prob = PromptCritic(critic, mode="prob").score_views(four, PROMPTS)
    assert log_p.shape == (4, 2) and (log_p <= 0).all()
    assert torch.allclose(prob, log_p.exp()) and ((prob >= 0) & (prob <= 1)).all()
    # Leaving the colour open drops the (non-positive) colour term: the score can only rise.
    shape_only = PromptCritic(critic).score_views(four, ["a cube", "a sphere", "a cone", "a torus"])
    assert (shape_only >= log_p).all() and (shape_only > log_p).any()
    # Leaving the shape open ("object") drops the shape term: only the colour is scored, and with
    # neither the score is 0 (certain) on every view.
    colour_only = PromptCritic(critic).score_views(four, [p.replace(p.split()[-1], "object") for p in PROMPTS])
    assert torch.allclose(log_p, shape_only + colour_only, atol=1e-5)
    assert torch.equal(PromptCritic(critic).score_views(four, ["an object"] * 4), torch.zeros(4, 2))


def test_gradients_reach_pixels_and_field(critic):
    grid, out = _render([SPECS["a red cube"], SPECS["a blue sphere"]], 32, grad=True)
    rgb = out.rgb
    rgb.retain_grad()
    PromptCritic(critic)(out, ["a red cube", "a blue sphere"]).sum().backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert torch.isfinite(grid.grad).all() and grid.grad[:, 0].abs().sum() > 0 and grid.grad[:, 1:].abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())


def test_features_shape_and_meaning(critic, renders64):
    feats = critic_features(renders64, critic)
    assert feats.shape == (5, critic.config.feature_dim) and torch.isfinite(feats).all()
    assert not feats.requires_grad
    red_cube, blue_sphere, other_red_cube = feats[0], feats[1], feats[4]
    # Two red cubes sit closer in feature space than a red cube and a blue sphere.
    assert (red_cube - other_red_cube).norm() < (red_cube - blue_sphere).norm()
    # A bare (B, V, 3, R, R) tensor works as well as a RenderOutput.
    assert torch.allclose(critic_features(renders64.rgb, critic), feats)


def test_missing_or_corrupt_weights_give_clear_errors(tmp_path):
    with pytest.raises(CriticLoadError, match="train_critic.py"):
        load_critic(tmp_path / "nothing.safetensors")
    bad = tmp_path / "critic.safetensors"
    shutil.copy(WEIGHTS_PATH.with_suffix(".json"), bad.with_suffix(".json"))
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    with pytest.raises(CriticLoadError, match="unreadable"):
        load_critic(bad)
    # Valid safetensors from another architecture: a mismatch, not a crash deep in torch.
    save_critic(CriticNet(CriticConfig(channels=(8, 16))), bad)
    shutil.copy(WEIGHTS_PATH.with_suffix(".json"), bad.with_suffix(".json"))
    with pytest.raises(CriticLoadError, match="do not match"):
        load_critic(bad)
    bad.with_suffix(".json").write_text("{not json")
    with pytest.raises(CriticLoadError, match="config"):
        load_critic(bad)
    bad.with_suffix(".json").unlink()
    with pytest.raises(CriticLoadError, match="config not found"):
        load_critic(bad)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = CriticNet(CriticConfig(channels=(8, 16), input_resolution=16)).eval()
    path = save_critic(net, tmp_path / "c.safetensors", extra={"note": "test"})
    assert json.loads(path.with_suffix(".json").read_text())["note"] == "test"
    loaded = load_critic(path)
    x = torch.rand(3, 3, 24, 24)
    assert torch.equal(net(x)[0], loaded(x)[0]) and loaded.config == net.config


def test_bad_input_is_rejected(critic, renders64):
    reward = PromptCritic(critic)
    with pytest.raises(ValueError, match="prompts"):
        reward.score_views(renders64, ["a red cube"])
    with pytest.raises(PromptError):
        reward.score_views(_slice(renders64, 1), ["a red teapot"])
    with pytest.raises(ValueError, match="B, V, 3"):
        reward.score_views(renders64.rgb[:, 0], ["a red cube"] * 5)
    with pytest.raises(ValueError, match="mode"):
        PromptCritic(critic, mode="logit")
    assert math.isfinite(float(reward(_slice(renders64, 1), ["the red cube"])))


def test_vocabulary_is_the_embedded_models_and_matches_reads_prompts_like_the_score(critic):
    from engine.models.embedded.grammar import COLOURS, SHAPES

    # The shipped weights name the same words, in the same order, as the model whose prompts they read.
    assert critic.config.shapes == SHAPES and critic.config.colours == tuple(COLOURS)
    assert PromptCritic.matches("a red cube", "cube", "red")
    assert not PromptCritic.matches("a red cube", "cube", "blue")
    assert not PromptCritic.matches("a cone", "pyramid", "green")
    assert PromptCritic.matches("a tall cone", "cone", "green")  # no colour word: the shape alone decides
    assert PromptCritic.matches("a red object", "torus", "red") and not PromptCritic.matches("a red object", "cube", "blue")
    with pytest.raises(PromptError):
        PromptCritic.matches("a wooden chair", "cube", "red")
