import numpy as np
import pytest
import torch
from PIL import Image

from engine.render.volume import RenderOutput
from engine.rewards import ReferenceImageReward
from engine.rewards.appearance import load_reference_image

RED = (0.85, 0.12, 0.10)  # the albedo of the red sphere in conftest's renders
BLUE = (0.12, 0.25, 0.85)  # and of the blue cube


def solid(colour, size=16, alpha=None):
    """(H, W, 3) or (H, W, 4) float32 image of one colour."""
    img = np.broadcast_to(np.asarray(colour, np.float32), (size, size, 3))
    if alpha is not None:
        img = np.concatenate([img, np.full((size, size, 1), alpha, np.float32)], -1)
    return np.ascontiguousarray(img)


def test_matching_reference_scores_higher(red_sphere_blue_cube):
    prompts = ["", ""]
    red = ReferenceImageReward(solid(RED))(red_sphere_blue_cube, prompts)
    blue = ReferenceImageReward(torch.from_numpy(solid(BLUE)).permute(2, 0, 1))(red_sphere_blue_cube, prompts)  # (3, H, W)
    assert red.shape == blue.shape == (2,)
    assert red[0] > blue[0] + 0.3 and blue[1] > red[1] + 0.3, (red, blue)
    assert ((red >= 0) & (red <= 1.01)).all()


def test_render_against_its_own_albedo_scores_near_one(red_sphere_blue_cube):
    r = red_sphere_blue_cube
    alpha = r.alpha[0, 0].clamp(0, 1)  # (1, R, R)
    colour = (r.albedo[0, 0] / alpha.clamp_min(1e-6)).clamp(0, 1)
    own = torch.cat([colour, alpha]).permute(1, 2, 0)  # (R, R, 4): the reference's alpha masks the background
    score = ReferenceImageReward(own).score_views(r, ["", ""])
    assert score[0, 0] > 0.95, score
    assert score[0, 0] > score[1, 0] + 0.5  # the blue cube does not match the red sphere's colours


def test_reference_alpha_masks_pixels(red_sphere_blue_cube, tmp_path):
    # Left half red and opaque, right half blue and transparent: only red counts.
    img = solid(RED, alpha=1.0)
    img[:, 8:, :3] = BLUE
    img[:, 8:, 3] = 0.0
    masked = ReferenceImageReward(img)(red_sphere_blue_cube, ["", ""])
    assert masked[0] > masked[1] + 0.3
    # The same image as an RGBA PNG file gives the same score (8-bit rounding aside).
    path = tmp_path / "ref.png"
    Image.fromarray((img * 255).round().astype(np.uint8), "RGBA").save(path)
    from_file = ReferenceImageReward(str(path))(red_sphere_blue_cube, ["", ""])
    assert torch.allclose(masked, from_file, atol=0.02)


def test_two_colour_reference_does_not_reward_their_mix(red_sphere_blue_cube):
    half = solid(RED, size=16)
    half[8:] = BLUE
    reward = ReferenceImageReward(half)
    r = red_sphere_blue_cube
    purple = (torch.tensor(RED) + torch.tensor(BLUE)) / 2
    albedo_purple = purple.view(1, 1, 3, 1, 1) * r.alpha
    mixed = RenderOutput(r.rgb, albedo_purple, r.alpha, r.depth, r.normal, r.cameras)
    assert reward(r, ["", ""]).min() > reward(mixed, ["", ""]).max()


def test_gradients_reach_the_field(differentiable_render):
    grid, out = differentiable_render
    ReferenceImageReward(solid(RED))(out, [""]).sum().backward()
    assert torch.isfinite(grid.grad).all()
    assert grid.grad[0, 1:].abs().sum() > 0  # colour channels
    assert grid.grad[0, 0].abs().sum() > 0  # geometry, through alpha


def test_large_reference_is_downsampled():
    rgb, weight = load_reference_image(np.random.default_rng(0).random((600, 300, 3), dtype=np.float32))
    assert rgb.shape == (3, 256, 128) and weight.shape == (256, 128)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((8, 8)), "shape"),
        (np.zeros((5, 8, 8), np.float32), "shape"),
        (np.full((8, 8, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((8, 8, 3), np.nan, np.float32), "finite"),
        (solid(RED, alpha=0.0), "no opaque pixels"),
        (np.zeros((8, 8, 3), np.int64), "dtype"),
        ([[0.5, 0.5, 0.5]], "file path, a numpy array"),
        ("/no/such/reference.png", "not found"),
    ],
)
def test_bad_reference_is_rejected(image, message):
    with pytest.raises(ValueError, match=message):
        ReferenceImageReward(image)


def test_unreadable_file_and_bad_settings_are_rejected(tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read reference image"):
        ReferenceImageReward(str(bogus))
    with pytest.raises(ValueError, match="bins"):
        ReferenceImageReward(solid(RED), bins=1)
    with pytest.raises(ValueError, match="softness"):
        ReferenceImageReward(solid(RED), softness=0.0)


@pytest.mark.parametrize("side", [12, 16])  # 144 px: PIL's warning (1x-2x the limit); 256 px: its error (> 2x)
def test_a_decompression_bomb_is_bad_input_naming_the_file(tmp_path, monkeypatch, side):
    """Issue 22: a decompression-bomb reference image exited 1 with PIL's own error; now it is bad
    input (a ValueError: exit 2 on the CLI) naming the file. The limit is lowered so the test image
    stays small; PIL's check is the same one a 30000 x 30000 PNG meets."""
    from engine.rewards.registry import build_reward

    path = tmp_path / "bomb.png"
    Image.new("RGB", (side, side), (200, 30, 20)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match=rf"reference image {path} is too large to read safely"):
        build_reward("reference", {"image": str(path)})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert build_reward("reference", {"image": str(path)}) is not None
