"""What every model's ``make_scheduler`` does to the diffusers schedulers it builds."""
from __future__ import annotations


def with_float64_alphas(scheduler):
    """``scheduler`` with its cumulative alphas in float64, returned for chaining.

    Schedules whose alpha_bar falls near zero at the first step (the embedded model's cosine: 1e-9;
    Shap-E's: exp(-12)) make DDIM's sqrt(1 - alpha_prev - sigma^2) a square root of a negative
    number in float32. Only these scalar coefficients are promoted; latents keep their dtype.
    """
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    return scheduler
