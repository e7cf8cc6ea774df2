"""Variations: strength 0 is the original asset, larger strengths move further, and the noise the
sampler sees stays standard normal (engine/sampling/variations.py)."""
import math

import pytest
import torch

from engine.models import load_model
from engine.sampling.sampler import SamplerConfig, sample
from engine.sampling.variations import PerturbedNoise, check_strength, sample_variations, variation_seed

CONFIG = SamplerConfig(steps=6)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model("embedded", None, device="cpu")  # the shipped weights: distances mean something


@pytest.mark.parametrize("scheduler", ["ddim", "dpmsolver-sde"])
def test_strength_zero_gives_the_original_latent_exactly(model, scheduler):
    config = SamplerConfig(steps=6, scheduler=scheduler)
    alone = sample(model, ["a red cube"], [5], config).latents[0]
    one = sample_variations(model, "a red cube", 5, 0.0, 1, config)
    assert torch.equal(one.latents[0], alone)
    batch = sample(model, ["a red cube"] * 3, [5] * 3, config).latents
    three = sample_variations(model, "a red cube", 5, 0.0, 3, config, first_index=4)
    assert torch.equal(three.latents, batch), "bit for bit in a batch of the same size"
    assert three.lineages == [((4, 0.0),), ((5, 0.0),), ((6, 0.0),)]


def test_larger_strength_moves_further_on_average(model):
    original = sample(model, ["a cone"], [2], CONFIG).latents[0]
    distances = []
    for strength in (0.1, 0.4, 1.0):
        v = sample_variations(model, "a cone", 2, strength, 6, CONFIG)
        distances.append(float((v.latents - original).flatten(1).norm(dim=1).mean()))
        assert not any(torch.equal(z, original) for z in v.latents)
    assert distances[0] < distances[1] < distances[2], distances
    independent = sample(model, ["a cone"] * 6, list(range(100, 106)), CONFIG).latents
    scale = float((independent - original).flatten(1).norm(dim=1).mean())
    assert distances[0] < 0.3 * scale, (distances, scale)  # small strength: close to the original
    assert distances[2] > 0.6 * scale, (distances, scale)  # strength 1: as far as another seed


@pytest.mark.parametrize("strength", [0.0, 0.3, 0.8, 1.0])
def test_the_perturbed_noise_stays_standard_normal(strength):
    shape = (4, 8, 8, 8)
    seeds = [11, 12, 13, 14]
    noise = PerturbedNoise(7, [((k, strength),) for k in range(1, 5)])
    plain = [torch.Generator().manual_seed(7) for _ in seeds]
    originals = [torch.Generator().manual_seed(7) for _ in seeds]
    draws, base = [], []
    for _ in range(5):  # the sampler calls it once for x_T and once per transition
        draws.append(noise(plain, shape, "cpu"))
        base.append(torch.stack([torch.randn(shape, generator=g) for g in originals]))
    z, z0 = torch.stack(draws).flatten(), torch.stack(base).flatten()  # 40960 values
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1.0) < 0.03
    fourth = float(((z - z.mean()) ** 4).mean() / z.var() ** 2)
    assert abs(fourth - 3.0) < 0.15, "Gaussian kurtosis"
    corr = float(torch.corrcoef(torch.stack([z, z0]))[0, 1])
    assert abs(corr - math.sqrt(1 - strength**2)) < 0.03, corr
    if strength == 0.0:
        assert torch.equal(z, z0)


def test_variation_seeds_are_stable_and_distinct():
    assert variation_seed(3, (1,)) == variation_seed(3, (1,)) == 8551057301353393297  # pinned: a changed formula changes every stored variation
    seeds = {variation_seed(s, p) for s in range(5) for p in [(1,), (2,), (1, 2), (2, 1)]}
    assert len(seeds) == 20 and all(0 <= x < 2**63 for x in seeds)


def test_a_variation_of_a_variation_stays_near_its_parent(model):
    parent = sample_variations(model, "a cone", 2, 0.5, 1, CONFIG, first_index=3)
    assert parent.lineages == [((3, 0.5),)]
    same = sample_variations(model, "a cone", 2, 0.0, 1, CONFIG, parent=parent.lineages[0])
    assert torch.equal(same.latents, parent.latents), "strength 0 gives the parent variation back"
    children = sample_variations(model, "a cone", 2, 0.1, 4, CONFIG, parent=parent.lineages[0])
    assert children.lineages[0] == ((3, 0.5), (1, 0.1))
    original = sample(model, ["a cone"], [2], CONFIG).latents[0]
    to_parent = (children.latents - parent.latents[0]).flatten(1).norm(dim=1).mean()
    to_original = (children.latents - original).flatten(1).norm(dim=1).mean()
    assert to_parent < to_original


def test_chained_noise_stays_standard_normal():
    noise = PerturbedNoise(5, [((1, 0.9), (2, 0.9), (3, 0.9))] * 2)
    z = torch.cat([noise([torch.Generator().manual_seed(5)] * 2, (16, 16, 16), "cpu").flatten() for _ in range(3)])
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1.0) < 0.03


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), True, "0.3"])
def test_bad_strength_is_refused(model, bad):
    with pytest.raises(ValueError, match="strength"):
        check_strength(bad)
    with pytest.raises(ValueError, match="strength"):
        sample_variations(model, "a cube", 0, bad, 1, CONFIG)


def test_bad_count_or_lineage_is_refused(model):
    with pytest.raises(ValueError, match="count"):
        sample_variations(model, "a cube", 0, 0.3, 0, CONFIG)
    for bad in ([(0, 0.3)], [(1, 2.0)], [(1,)], "1", [(True, 0.1)]):
        with pytest.raises(ValueError, match="lineage|index|strength"):
            sample_variations(model, "a cube", 0, 0.3, 1, CONFIG, parent=bad)
