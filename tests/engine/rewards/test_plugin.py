import textwrap
from pathlib import Path

import pytest
import torch

from engine.rewards import build_reward
from engine.rewards.plugin import PluginReward, RewardPluginError

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "reward_plugin.py"


def write_plugin(directory: Path, body: str, name: str = "my_reward.py") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(body))
    return path


def test_per_view_plugin_scores_and_metadata(tmp_path, red_sphere_blue_cube):
    path = write_plugin(
        tmp_path,
        """
        NAME = "redness"
        def reward(images, alpha, depth, normal, prompts):
            a = alpha[:, :, 0]
            return (images[:, :, 0] * a).sum((-1, -2)) / a.sum((-1, -2))
        """,
    )
    plugin = PluginReward(path)
    r = red_sphere_blue_cube
    views = plugin.score_views(r, ["a red sphere", "a blue cube"])
    a = r.alpha[:, :, 0]
    assert torch.allclose(views, (r.rgb[:, :, 0] * a).sum((-1, -2)) / a.sum((-1, -2)))
    assert plugin(r, ["", ""]).shape == (2,) and views[0].mean() > views[1].mean()
    assert plugin.name == "redness" and plugin.differentiable


def test_per_asset_output_is_broadcast_and_extras_are_passed(tmp_path, red_sphere_blue_cube):
    path = write_plugin(
        tmp_path,
        """
        import torch
        DIFFERENTIABLE = False
        seen = {}
        def reward(images, alpha, depth, normal, prompts, albedo, cameras):
            seen["prompts"], seen["views"], seen["albedo"] = prompts, len(cameras), albedo.shape
            return torch.tensor([float(len(p)) for p in prompts])
        """,
    )
    plugin = PluginReward(path)
    views = plugin.score_views(red_sphere_blue_cube, ["ab", "abcd"])
    assert views.shape == (2, 2) and views.tolist() == [[2.0, 2.0], [4.0, 4.0]]
    assert plugin.module.seen == {"prompts": ["ab", "abcd"], "views": 2, "albedo": red_sphere_blue_cube.albedo.shape}
    assert plugin.name == "my_reward" and not plugin.differentiable


def test_plugin_gradients_reach_the_field(tmp_path, differentiable_render):
    path = write_plugin(tmp_path, "def reward(images, alpha, depth, normal, prompts, **kwargs):\n    return (kwargs['albedo'][:, :, 1] - depth[:, :, 0]).mean((-1, -2))\n")
    grid, out = differentiable_render
    build_reward("plugin", {"path": str(path)})(out, [""]).sum().backward()
    assert torch.isfinite(grid.grad).all() and grid.grad[0, 0].abs().sum() > 0 and grid.grad[0, 2].abs().sum() > 0


def test_same_file_name_in_two_folders_does_not_collide(tmp_path, red_sphere_blue_cube):
    one = PluginReward(write_plugin(tmp_path / "a", "import torch\ndef reward(images, alpha, depth, normal, prompts):\n    return torch.ones(len(prompts))\n"))
    two = PluginReward(write_plugin(tmp_path / "b", "import torch\ndef reward(images, alpha, depth, normal, prompts):\n    return torch.full((len(prompts),), 2.0)\n"))
    assert one.module.__name__ != two.module.__name__
    assert one(red_sphere_blue_cube, ["", ""]).tolist() == [1.0, 1.0]
    assert two(red_sphere_blue_cube, ["", ""]).tolist() == [2.0, 2.0]


def test_documented_example_plugin_works(red_sphere_blue_cube):
    plugin = PluginReward(EXAMPLE)
    score = plugin(red_sphere_blue_cube, ["a red sphere", "a blue cube"])
    assert plugin.name == "warm-and-framed" and torch.isfinite(score).all()
    assert score[0] > score[1]  # red is warmer than blue


@pytest.mark.parametrize(
    "body, message",
    [
        ("x = 1\n", "defines no function `reward"),
        ("reward = 3\n", "defines no function `reward"),
        ("raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
        ("def reward(images, alpha):\n    return images\n", "missing depth, normal, prompts"),
    ],
)
def test_bad_plugin_files_are_rejected(tmp_path, body, message):
    with pytest.raises(RewardPluginError, match=message):
        PluginReward(write_plugin(tmp_path, body))


@pytest.mark.parametrize(
    "returned, message",
    [
        ("torch.zeros(len(prompts), 3, 1)", r"shape \(2, 3, 1\); expected \(2, 2\)"),
        ("torch.zeros(3)", r"shape \(3,\)"),
        ("torch.full((len(prompts),), float('nan'))", "non-finite"),
        ("torch.full((len(prompts), 2), float('inf'))", "non-finite"),
        ("[1.0, 2.0]", "must return a torch.Tensor"),
        ("torch.ones(len(prompts), dtype=torch.long)", "float tensor"),
    ],
)
def test_bad_plugin_output_is_rejected(tmp_path, red_sphere_blue_cube, returned, message):
    plugin = PluginReward(write_plugin(tmp_path, f"import torch\ndef reward(images, alpha, depth, normal, prompts):\n    return {returned}\n"))
    with pytest.raises(RewardPluginError, match=message):
        plugin(red_sphere_blue_cube, ["", ""])


def test_missing_or_wrong_file_is_rejected(tmp_path):
    with pytest.raises(RewardPluginError, match="not found"):
        PluginReward(tmp_path / "nope.py")
    text = tmp_path / "reward.txt"
    text.write_text("def reward(): pass\n")
    with pytest.raises(RewardPluginError, match=r"\.py file"):
        PluginReward(text)
    with pytest.raises(ValueError, match="not found"):  # through the registry: still a ValueError
        build_reward("plugin", {"path": str(tmp_path / "nope.py")})


def test_a_plugin_that_raises_is_reported_as_its_error_with_its_file_and_line(tmp_path, red_sphere_blue_cube):
    body = "import torch\n\ndef helper(x):\n    return x / 0\n\ndef reward(images, alpha, depth, normal, prompts):\n    return torch.zeros(len(prompts)) + helper(1)\n"
    plugin = PluginReward(write_plugin(tmp_path, body))
    with pytest.raises(RewardPluginError) as info:
        plugin(red_sphere_blue_cube, ["", ""])
    assert str(info.value) == (f"reward plugin {tmp_path / 'my_reward.py'} raised ZeroDivisionError: division by zero "
                               "(at my_reward.py:4 in helper)")


def test_a_plugin_that_calls_sys_exit_is_an_error_naming_it(tmp_path, red_sphere_blue_cube, capsys):
    """``sys.exit(0)`` at import once ended ``align`` with exit 0 and no message at all."""
    from engine.cli import main

    path = write_plugin(tmp_path, "import sys\nsys.exit(0)\n", name="quitter.py")
    with pytest.raises(RewardPluginError, match=r"quitter\.py called sys\.exit\(0\) while being imported"):
        PluginReward(path)
    code = main(["align", "--reward", "plugin", "--option", f"plugin.path={path}", "--out", str(tmp_path / "run")])
    assert code == 2 and f"reward plugin {path} called sys.exit(0)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    inside = PluginReward(write_plugin(tmp_path, "import sys\ndef reward(images, alpha, depth, normal, prompts):\n    sys.exit(3)\n"))
    with pytest.raises(RewardPluginError, match=r"called sys\.exit\(3\) in `reward` \(at my_reward\.py:3 in reward\)"):
        inside(red_sphere_blue_cube, ["", ""])


def test_detached_scores_where_a_gradient_is_needed_name_the_plugin_and_differentiable(tmp_path, differentiable_render):
    body = "def reward(images, alpha, depth, normal, prompts):\n    return images.mean((1, 2, 3, 4)).detach()\n"
    plugin = PluginReward(write_plugin(tmp_path, body, name="detached.py"))
    _, out = differentiable_render
    with pytest.raises(RewardPluginError, match=r"detached\.py: `reward` returned scores without a gradient.*DIFFERENTIABLE = False"):
        plugin(out, [""])
    with torch.no_grad():  # scoring only (DDPO's rewards, held-out scores): no gradient needed, none asked for
        assert plugin(out, [""]).shape == (1,)
    honest = PluginReward(write_plugin(tmp_path, "DIFFERENTIABLE = False\n" + body, name="honest.py"))
    assert honest(out, [""]).shape == (1,)
