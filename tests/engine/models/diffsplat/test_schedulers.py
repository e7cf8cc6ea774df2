"""DiffSplat's schedulers: what the official code's scheduler set-up computes on the installed
diffusers, and that the engine's reproduce it."""
from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from engine.models import load_model

PIXART_SIGMA = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000,
                    prediction_type="epsilon", solver_order=2)


def test_the_official_post_hoc_config_edits_change_the_spacing_but_not_the_betas():
    """src/infer_gsdiff_pas.py builds PixArt's scheduler, then assigns config.timestep_spacing and
    config.rescale_betas_zero_snr: the first is read at set_timesteps, the second only in __init__."""
    official = DPMSolverMultistepScheduler(**PIXART_SIGMA)
    official.config.timestep_spacing = "trailing"
    official.config.rescale_betas_zero_snr = True
    official.config.algorithm_type = "sde-dpmsolver++"
    plain = DPMSolverMultistepScheduler(**PIXART_SIGMA)
    assert torch.equal(official.alphas_cumprod, plain.alphas_cumprod)
    assert float(official.alphas_cumprod[-1]) == pytest.approx(4.04e-5, rel=1e-2)  # not zero SNR
    official.set_timesteps(20)
    assert official.timesteps[:3].tolist() == [999, 949, 899]  # trailing


@pytest.fixture(scope="module")
def model(tiny_diffsplat):
    return load_model("diffsplat", tiny_diffsplat)


@pytest.mark.parametrize("kind", ["ddim", "ddpm", "dpmsolver-sde"])
def test_every_scheduler_has_the_official_betas_spacing_and_prediction_type(model, kind):
    scheduler = model.make_scheduler(kind)
    plain = DPMSolverMultistepScheduler(**PIXART_SIGMA)
    assert scheduler.alphas_cumprod.dtype == torch.float64
    assert torch.allclose(scheduler.alphas_cumprod, plain.alphas_cumprod.double(), rtol=1e-6)
    assert scheduler.config.prediction_type == model.prediction_type == "v_prediction"  # the tiny folder's
    scheduler.set_timesteps(20)
    assert int(scheduler.timesteps[0]) == 999 and int(scheduler.timesteps[1]) == 949
    if kind == "dpmsolver-sde":
        assert scheduler.config.algorithm_type == "sde-dpmsolver++" and scheduler.config.solver_order == 1
    if kind == "ddim":
        assert not scheduler.config.clip_sample and not scheduler.config.set_alpha_to_one


def test_settings_can_switch_on_zero_snr_and_unknown_kinds_are_refused(tiny_diffsplat, tmp_path):
    import shutil

    folder = tmp_path / "zero-snr"
    shutil.copytree(tiny_diffsplat, folder)
    (folder / "diffsplat.json").write_text('{"rescale_betas_zero_snr": true, "max_token_length": 16}')
    zero = load_model("diffsplat", folder)
    assert float(zero.make_scheduler("ddim").alphas_cumprod[-1]) == 0.0
    with pytest.raises(ValueError, match="DiffSplat samples with ddim, ddpm, dpmsolver-sde"):
        zero.make_scheduler("heun")
