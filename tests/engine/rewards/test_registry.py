import sys

import numpy as np
import pytest
import torch

from engine.rewards import (
    DepthNormalConsistency,
    PaletteReward,
    ReferenceImageReward,
    RewardConfigError,
    RewardModelMissing,
    WeightedSum,
    build_reward,
    build_reward_expression,
    format_reward_list,
    list_rewards,
    parse_option_assignments,
)
from engine.rewards.registry import parse_reward_expression

RED = (0.85, 0.12, 0.10)  # the albedo of the red sphere in conftest's renders
BLUE = (0.12, 0.25, 0.85)  # and of the blue cube

BUILT_INS = ["dnc", "palette", "reference", "plugin", "aesthetic", "hpsv2", "pickscore", "clip-score", "critic"]
PROMPTS = ["a red sphere", "a blue cube"]


def test_every_built_in_is_listed_with_its_options():
    specs = {spec.name: spec for spec in list_rewards()}
    assert list(specs)[: len(BUILT_INS)] == BUILT_INS
    text = format_reward_list()
    for spec in specs.values():
        assert spec.description and spec.description in text
        for opt in spec.options:
            assert opt.name in text and opt.help in text
    assert "palette.palette=" in text  # how to pass an option on a command line


def test_the_reward_list_says_which_rewards_only_some_models_take():
    """The critic (RewardSpec.models: the embedded model) was listed like any other reward, and the
    limit showed only as a refusal when run with another model."""
    specs = {spec.name: spec for spec in list_rewards()}
    assert specs["critic"].models == ("embedded",) and specs["palette"].models is None
    blocks = format_reward_list().split("\n\n")
    critic = next(b for b in blocks if b.lstrip().startswith("critic "))
    assert "only with --model embedded" in critic
    palette = next(b for b in blocks if b.lstrip().startswith("palette "))
    assert "only with" not in palette


def test_cli_strings_build_the_same_reward_as_python_values(red_sphere_blue_cube):
    r = red_sphere_blue_cube
    direct = PaletteReward([RED, BLUE], softness=0.1)(r, PROMPTS)
    for palette in ("0.85,0.12,0.10;0.12,0.25,0.85", [RED, BLUE]):
        built = build_reward("palette", {"palette": palette, "softness": "0.1"})
        assert isinstance(built, PaletteReward) and torch.allclose(built(r, PROMPTS), direct)
    hexes = build_reward("palette", {"palette": "#ff0000, #00f"})
    assert torch.allclose(hexes.palette, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    names = build_reward("palette", {"palette": "red,blue"})
    assert torch.allclose(names.palette, torch.tensor([RED, BLUE]))
    assert build_reward("dnc", {"alpha_threshold": "0.7"}).alpha_threshold == 0.7
    assert build_reward("dnc").alpha_threshold == 0.5  # defaults fill in


def test_reference_and_plugin_build_from_paths(tmp_path, red_sphere_blue_cube):
    from PIL import Image

    png = tmp_path / "red.png"
    Image.new("RGB", (8, 8), tuple(round(c * 255) for c in RED)).save(png)
    ref = build_reward("reference", {"image": str(png), "bins": "6"})
    assert isinstance(ref, ReferenceImageReward) and ref.bins == 6
    score = ref(red_sphere_blue_cube, PROMPTS)
    assert score[0] > score[1]
    arr = build_reward("reference", {"image": np.full((4, 4, 3), 0.5, np.float32)})
    assert isinstance(arr, ReferenceImageReward)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("nope", {}, "unknown reward 'nope'; known rewards: dnc, palette, reference"),
        ("dnc", {"alpha": "0.5"}, "has no option 'alpha' \\(its options: alpha_threshold, detach_depth\\)"),
        ("dnc", {"alpha_threshold": "half"}, "bad value 'half' for option 'alpha_threshold' \\(float\\)"),
        ("dnc", {"alpha_threshold": "inf"}, "must be finite"),
        ("palette", {}, "needs option 'palette'"),
        ("palette", {"palette": "#ff00zz"}, "bad hex colour"),
        ("palette", {"palette": "1,0"}, "needs exactly 3 components"),
        ("palette", {"palette": "2,0,0"}, "must be 3 components in \\[0, 1\\]"),
        ("palette", {"palette": "crimson"}, "unknown colour 'crimson'"),
        ("palette", {"palette": "#ff0000", "softness": "-1"}, "reward 'palette': softness must be > 0"),
        ("dnc", {"alpha_threshold": "1.5"}, "reward 'dnc': alpha_threshold must be in \\[0, 1\\)"),
        ("reference", {"image": "x.png", "bins": "2.5"}, "bad value '2.5' for option 'bins' \\(int\\)"),
        ("reference", {"image": "/no/such.png"}, "reward 'reference': reference image not found"),
        ("hpsv2", {}, "needs option 'model_path'.*convert_open_clip"),
    ],
)
def test_bad_configuration_gives_clear_errors(name, options, message):
    with pytest.raises(RewardConfigError, match=message):
        build_reward(name, options)


def test_bad_configuration_errors_are_value_errors():
    with pytest.raises(ValueError):
        build_reward("nope")


def test_critic_reports_when_it_is_not_available(monkeypatch, tmp_path):
    with pytest.raises(RewardConfigError, match="mode must be 'log_prob' or 'prob'"):
        build_reward("critic", {"mode": "logits"})
    with pytest.raises(RewardModelMissing, match="reward 'critic': critic weights not found"):
        build_reward("critic", {"weights": str(tmp_path / "missing.safetensors")})
    monkeypatch.setitem(sys.modules, "engine.rewards.critic", None)  # makes the import fail
    with pytest.raises(RewardConfigError, match="critic is not available"):
        build_reward("critic")


def test_expression_parsing():
    assert parse_reward_expression("dnc") == [(1.0, "dnc")]
    assert parse_reward_expression(" 0.5*dnc + 2 * palette - 1e-2*clip-score + -dnc") == [
        (0.5, "dnc"),
        (2.0, "palette"),
        (-0.01, "clip-score"),
        (-1.0, "dnc"),
    ]
    for bad, message in [
        ("", "empty"),
        ("0.5 dnc", "expected '\\*' after the weight"),
        ("dnc palette", "expected '\\+' or '-'"),
        ("dnc +", "expected a reward name"),
        ("2*", "expected a reward name"),
        ("dnc / 2", "cannot parse"),
        ("1e999*palette", "the weight 1e999 is too large"),  # inf: every reward would be non-finite
        ("dnc - 1e7*palette", "the weight 1e7 is too large \\(at most 1e\\+06"),
    ]:
        with pytest.raises(RewardConfigError, match=message):
            parse_reward_expression(bad)


def test_expression_builds_the_weighted_sum(red_sphere_blue_cube):
    r = red_sphere_blue_cube
    options = {"palette": {"palette": "red"}}
    combined = build_reward_expression("0.5*dnc + 2*palette - 0.25*dnc", options)
    assert isinstance(combined, WeightedSum) and [w for w, _ in combined.parts] == [0.25, 2.0]
    expected = 0.25 * DepthNormalConsistency()(r, PROMPTS) + 2 * PaletteReward([RED])(r, PROMPTS)
    assert torch.allclose(combined(r, PROMPTS), expected)
    assert isinstance(build_reward_expression("dnc"), DepthNormalConsistency)  # a lone term is the reward itself
    with pytest.raises(RewardConfigError, match="unknown reward 'palete'"):
        build_reward_expression("dnc + palete", options)
    with pytest.raises(RewardConfigError, match="does not use"):
        build_reward_expression("dnc", options)
    with pytest.raises(RewardConfigError, match="unknown reward 'dnc-palette'"):  # hyphens belong to names
        build_reward_expression("dnc-palette")


def test_option_assignments_from_a_command_line():
    parsed = parse_option_assignments(["palette.palette=#ff0000,#00ff00", "palette.softness=0.1", "dnc.alpha_threshold = 0.6"])
    assert parsed == {"palette": {"palette": "#ff0000,#00ff00", "softness": "0.1"}, "dnc": {"alpha_threshold": "0.6"}}
    for bad in ("palette=#ff0000", "palette.palette", ".x=1"):
        with pytest.raises(RewardConfigError, match="<reward>.<option>=<value>"):
            parse_option_assignments([bad])
