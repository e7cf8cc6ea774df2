"""A 2-D Gaussian "diffusion model" with an exact denoiser: the aligner's closed-form test bed.

Data ``x0 ~ N(m, s^2 I)`` in 2-D, forward process ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps``. The
posterior mean of the noise is linear in ``x_t``:

    eps_hat(x_t) = sqrt(1 - a_t) (x_t - sqrt(a_t) m) / (a_t s^2 + 1 - a_t)

so the base denoiser is exact. Tilting the data by a linear reward ``exp(beta c.x)`` gives
``N(m + beta s^2 c, s^2)``, whose exact denoiser differs from the base one by the offset
``-sqrt(a_t (1 - a_t)) / (a_t s^2 + 1 - a_t) * beta s^2 c``. ``proj_out`` (zero weights: the base is
exact) maps time and state features, this offset's time profile among them, to an additive
correction, so a LoRA on ``proj_out`` can represent the tilted model exactly and the aligner's
result can be compared with the analytic shift. The toy implements the model protocol; its
"representation" is the 2-D point itself, and prompts are ignored.
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from torch import nn

from .protocol import PromptEmbeds


class ToyDenoiser(nn.Module):
    """Exact epsilon-predictor for N(mean, std^2 I) plus a zero-initialised learnable correction."""

    def __init__(self, mean: torch.Tensor, std: float, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("alphas_cumprod", alphas_cumprod.float())
        self.std = float(std)
        self.proj_out = nn.Linear(6, 2)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x (B, 2), timesteps (B,) integer steps -> epsilon prediction (B, 2)."""
        a = self.alphas_cumprod[timesteps.long()].to(x.dtype)[:, None]
        denom = a * self.std**2 + 1 - a
        exact = (1 - a).sqrt() * (x - a.sqrt() * self.mean) / denom
        offset_profile = (a * (1 - a)).sqrt() / denom
        features = torch.cat([offset_profile, a.sqrt(), (1 - a).sqrt(), x * (1 - a).sqrt() / denom, torch.ones_like(a)], 1)
        return exact + self.proj_out(features)


class GaussianToyModel:
    name = "toy-gaussian"
    prediction_type = "epsilon"
    default_guidance = 1.0  # no classifier-free guidance: prompts carry no information
    latent_shape = (2,)
    lora_target_modules = ("proj_out",)

    def __init__(self, mean=(0.5, -0.5), std: float = 0.7, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = float(std)
        alphas = self.make_scheduler().alphas_cumprod
        self.denoiser = ToyDenoiser(self.mean, std, alphas).to(self.device).eval()

    def encode_prompts(self, prompts: list[str]) -> PromptEmbeds:
        return PromptEmbeds(torch.zeros(len(prompts), 1, 1, device=self.device))

    def unconditional_embeds(self, batch: int) -> PromptEmbeds:
        return PromptEmbeds(torch.zeros(batch, 1, 1, device=self.device))

    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeds: PromptEmbeds) -> torch.Tensor:
        return self.denoiser(latents, timesteps.expand(latents.shape[0]))

    def make_scheduler(self, kind: str = "ddim"):
        common = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", timestep_spacing="trailing")
        if kind == "ddim":
            return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False)
        if kind == "dpmsolver-sde":
            return DPMSolverMultistepScheduler(**common, algorithm_type="sde-dpmsolver++", solver_order=1)
        raise ValueError(f"the toy model samples with ddim or dpmsolver-sde, not {kind!r}")

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def extract_meshes(self, representation):
        raise NotImplementedError("the toy model has no geometry")

    def tilted_mean(self, beta: float, direction: torch.Tensor) -> torch.Tensor:
        """Mean (2,) of the target p(x) exp(beta direction.x): m + beta s^2 c."""
        return self.mean + beta * self.std**2 * direction.float()
