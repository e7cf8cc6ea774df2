"""Data and training loop of the prompt-alignment critic, on tiny sets (seconds)."""
import pytest
import torch

from engine.models.embedded.grammar import COLOURS, SHAPES, parse_prompt
from engine.models.embedded.procedural import field_volume, sample_spec
from engine.rewards.critic import CriticConfig, CriticNet
from engine.training.critic import (
    DEGRADATIONS,
    CriticTrainConfig,
    GroundTruthConfig,
    RenderSet,
    SampleConfig,
    augment,
    cached_set,
    degrade,
    evaluate_critic,
    ground_truth_set,
    model_sample_set,
    train_critic,
)

TINY_NET = CriticConfig(channels=(8, 16), input_resolution=16, dropout=0.0)


@pytest.fixture(scope="module")
def field():
    return field_volume(sample_spec(torch.Generator().manual_seed(0), parse_prompt("a red cube")), 32)


@pytest.fixture(scope="module")
def model():
    from engine.models import load_model

    return load_model("embedded")


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_degradations_keep_a_valid_field_and_its_colour(field, kind, model):
    out = degrade(field, kind, torch.Generator().manual_seed(1), model.autoencoder)
    assert out.shape == field.shape and torch.isfinite(out).all()
    assert out[0].min() >= -1 and out[0].max() <= 1 and out[1:].min() >= 0 and out[1:].max() <= 1
    assert (out[0] < 0).any(), "the object must survive"
    # The colour class survives: the mean colour inside stays nearest to red in the palette.
    inside = field[0] < -0.5
    palette = torch.tensor(list(COLOURS.values()))
    mean = out[1:, inside].mean(1)
    assert list(COLOURS)[int((palette - mean).norm(dim=1).argmin())] == "red"
    assert (mean - field[1:, inside].mean(1)).abs().max() < 0.1
    if kind == "clean":
        assert torch.equal(out, field)
    else:
        assert (out - field).abs().max() > 0.05


def test_degrade_rejects_unknown_kind_and_missing_autoencoder(field):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(field, "sharpen", g)
    with pytest.raises(ValueError, match="autoencoder"):
        degrade(field, "autoencoder", g)


def _tiny_gt(**kw):
    cfg = GroundTruthConfig(("a red cube", "a tall blue cone", "a torus"), seeds_per_prompt=2, views=2, resolution=16, **kw)
    return ground_truth_set(cfg)


def test_ground_truth_set_is_labelled_and_reproducible():
    a, b = _tiny_gt(), _tiny_gt()
    assert a.images.shape == (6, 2, 3, 16, 16) and a.images.dtype == torch.uint8 and a.alpha.shape == (6, 2, 1, 16, 16)
    assert a.shape.tolist() == [SHAPES.index(s) for s in ("cube", "cube", "cone", "cone", "torus", "torus")]
    assert a.colour.tolist() == [list(COLOURS).index("red")] * 2 + [list(COLOURS).index("blue")] * 2 + [-1, -1]
    assert torch.equal(a.images, b.images)
    # Something is drawn in every view, on a white background.
    assert (a.alpha.flatten(2).amax(-1) > 200).all() and (a.images[..., 0, 0] == 255).all()
    with pytest.raises(ValueError, match="degradations"):
        _tiny_gt(degradations=(0.5, 0.5))


def test_augment_jitters_foreground_only_and_shifts_with_white_fill():
    gt = _tiny_gt()
    x = gt.float_images().flatten(0, 1)
    a = gt.alpha.float().flatten(0, 1) / 255
    g = torch.Generator().manual_seed(0)
    jittered = augment(x, a, CriticTrainConfig(low_res_prob=0.0, shift=0, colour_jitter=0.03), g)
    background = (a == 0).expand_as(x)
    assert torch.equal(jittered[background], x[background])
    assert 0 < (jittered - x).abs().max() <= 0.03 * 2 + 1e-6 and jittered.min() >= 0 and jittered.max() <= 1
    shifted = augment(x, a, CriticTrainConfig(low_res_prob=0.0, shift=2, colour_jitter=0.0), g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=1.0)
    r = x.shape[-1]
    for i in range(len(x)):  # each view is the input moved by at most 2 px, white coming in
        assert any(torch.allclose(shifted[i], padded[i, :, dy : dy + r, dx : dx + r], atol=1e-6) for dy in range(5) for dx in range(5))
    assert augment(x, a, CriticTrainConfig(low_res_prob=1.0), g).shape[-1] == 8


def test_training_fits_a_tiny_set_and_evaluation_reports_it():
    gt = _tiny_gt()
    cfg = CriticTrainConfig(epochs=40, batch=4, lr=5e-3, label_smoothing=0.0, low_res_prob=0.0, shift=0, colour_jitter=0.0)
    net, history = train_critic(gt, cfg, TINY_NET)
    assert not net.training and len(history) == 40
    assert history[-1]["loss_shape"] < 0.5 * history[0]["loss_shape"]
    m = evaluate_critic(net, gt)
    assert m.shape == 1.0 and m.colour == 1.0 and m.judge_shape_vs_prompt is None


def test_cache_is_keyed_by_recipe(tmp_path):
    gt = _tiny_gt()
    calls = []

    def build():
        calls.append(1)
        return gt

    first = cached_set(tmp_path, "x", {"a": 1}, build)
    again = cached_set(tmp_path, "x", {"a": 1}, build)
    assert len(calls) == 1 and torch.equal(first.images, again.images) and torch.equal(again.colour, gt.colour)
    cached_set(tmp_path, "x", {"a": 2}, build)
    assert len(calls) == 2
    for f in tmp_path.iterdir():  # a corrupt cache is rebuilt, not fatal
        f.write_bytes(b"junk")
    cached_set(tmp_path, "x", {"a": 1}, build)
    assert len(calls) == 3


def test_model_samples_are_labelled_by_the_judge(model):
    data = model_sample_set(model, SampleConfig(("a red cube", "a green torus"), (1000,), views=1, resolution=16))
    assert data.images.shape == (2, 1, 3, 16, 16) and (data.source == 1).all()
    assert data.prompt_shape.tolist() == [SHAPES.index("cube"), SHAPES.index("torus")]
    assert data.prompt_colour.tolist() == [list(COLOURS).index("red"), list(COLOURS).index("green")]
    assert ((data.shape >= -1) & (data.shape < len(SHAPES))).all()
    assert data.shape[1] == SHAPES.index("torus")  # the model's tori are always right (docs/embedded_model_eval.md)
    m = evaluate_critic(CriticNet(TINY_NET).eval(), RenderSet.cat([data, data]))
    assert m.objects == 4 and m.judge_shape_vs_prompt is not None
