"""Closed-form "diffusion models" with exact denoisers: the aligner's test beds.

Data ``x0 ~ sum_k pi_k N(mu_k, s^2 I)`` in 2-D (one component: the Gaussian toy), forward process
``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps``. The posterior over components and the posterior mean of
the noise are closed form,

    P(k | x_t) ∝ pi_k N(x_t; sqrt(a_t) mu_k, v_t I),   v_t = a_t s^2 + 1 - a_t
    eps_hat(x_t) = sqrt(1 - a_t) sum_k P(k | x_t) (x_t - sqrt(a_t) mu_k) / v_t

so the base denoiser is exact. Tilting the data by a linear reward ``exp(beta c.x)`` gives another
mixture of the same family: every mean moves by ``beta s^2 c`` and the weights become
``∝ pi_k exp(beta c.mu_k)`` (:meth:`MixtureToyModel.tilted`). The component means and log-weights
are ``nn.Linear`` layers (``means``, ``logits``), so a LoRA on them can represent the tilted model
exactly; ``proj_out`` (zero weights) maps time and state features to an additive correction of the
output, which also spans the Gaussian toy's tilt (its time profile is one of the features) and
any smooth per-step offset (Fourier features of t). :class:`AnisotropicToyModel` gives each component
its own diagonal covariance (unequal variances, anisotropic modes); its tilt moves every mean by
``beta Sigma_k c`` and reweights by ``pi_k exp(beta c.mu_k + beta^2 c^T Sigma_k c / 2)``. The toys
implement the model protocol; their "representation" is the 2-D point itself, and prompts are
ignored.
"""
from __future__ import annotations

import math

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from torch import nn

from .prompts import ChecksPrompts, OpenText
from .protocol import PromptEmbeds


TIME_FREQUENCIES = 4


class MixtureDenoiser(nn.Module):
    """Exact epsilon-predictor for a Gaussian mixture plus a zero-initialised correction.

    ``std`` is one float (isotropic components of one spread) or a (K, d) tensor of per-component,
    per-axis stds (diagonal covariances; :class:`AnisotropicToyModel`).
    """

    def __init__(self, means: torch.Tensor, weights: torch.Tensor, std, alphas_cumprod: torch.Tensor):
        super().__init__()
        k, d = means.shape
        self.register_buffer("alphas_cumprod", alphas_cumprod.float())
        self.register_buffer("eye", torch.eye(k))
        stds = torch.as_tensor(std, dtype=torch.float32)
        self.anisotropic = stds.dim() > 0
        # Diagonal covariances are fixed (a buffer): the tilt by a linear reward keeps them.
        self.register_buffer("variances", stds.expand(k, d).pow(2).clone())
        self.std = None if self.anisotropic else float(std)
        # Parameters as Linear layers so peft can put LoRA on them: means(eye) -> (K, d), logits(1) -> (K,).
        self.means = nn.Linear(k, d, bias=False)
        self.logits = nn.Linear(1, k, bias=False)
        with torch.no_grad():
            self.means.weight.copy_(means.float().T)
            self.logits.weight.copy_(weights.float().log()[:, None])
        self.proj_out = nn.Linear(d + 4 + 2 * TIME_FREQUENCIES, d)  # the features of forward()
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x (B, d), timesteps (B,) integer steps -> epsilon prediction (B, d)."""
        a = self.alphas_cumprod[timesteps.long()].to(x.dtype)[:, None]
        mu = self.means(self.eye.to(x.dtype))  # (K, d)
        logits = self.logits(torch.ones(1, 1, dtype=x.dtype, device=x.device))  # (1, K)
        diff = x[:, None, :] - a.sqrt()[:, :, None] * mu[None]  # (B, K, d)
        if self.anisotropic:
            vk = a[:, :, None] * self.variances.to(x.dtype)[None] + (1 - a)[:, :, None]  # (B, K, d)
            resp = torch.softmax(logits - (diff.pow(2) / vk).sum(-1) / 2 - vk.log().sum(-1) / 2, dim=1)
            exact = (1 - a).sqrt() * (resp[:, :, None] * diff / vk).sum(1)
            v = a * self.variances.mean().to(x.dtype) + 1 - a  # the features' scale: the mean variance
        else:
            v = a * self.std**2 + 1 - a
            resp = torch.softmax(logits - diff.pow(2).sum(-1) / (2 * v), dim=1)  # (B, K)
            exact = (1 - a).sqrt() * (resp[:, :, None] * diff).sum(1) / v
        offset_profile = (a * (1 - a)).sqrt() / v
        # Fourier features of t let a LoRA on proj_out make any smooth per-step offset, so the family
        # holds the tilt of the 20-step sampler's own distribution, not only the data-level tilt.
        tau = timesteps.to(x.dtype)[:, None] / 1000 * math.pi * torch.arange(1, TIME_FREQUENCIES + 1, dtype=x.dtype, device=x.device)
        features = torch.cat([offset_profile, a.sqrt(), (1 - a).sqrt(), x * (1 - a).sqrt() / v, torch.ones_like(a),
                              tau.sin(), tau.cos()], 1)
        return exact + self.proj_out(features)


class MixtureToyModel(ChecksPrompts):
    """A 2-D isotropic Gaussian mixture with an exact denoiser (see the module docstring)."""

    name = "toy-mixture"
    prediction_type = "epsilon"
    default_guidance = 1.0  # no classifier-free guidance: prompts carry no information
    latent_shape = (2,)
    lora_target_modules = ("means", "logits", "proj_out")
    prompt_rules = OpenText()  # prompts carry no information here
    training_schedulers = ("ddim", "dpmsolver-sde")  # Gaussian, stateless transitions

    def __init__(self, means=((-1.0, 0.0), (1.0, 0.0), (0.0, 1.0)), weights=(0.5, 0.2, 0.3), std: float = 0.3,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.means = torch.as_tensor(means, dtype=torch.float32).reshape(-1, 2)
        self.weights = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        if len(self.weights) != len(self.means) or not bool((self.weights > 0).all()):
            raise ValueError("one positive weight per component")
        self.weights = self.weights / self.weights.sum()
        self.std = float(std)
        alphas = self.make_scheduler().alphas_cumprod
        self.denoiser = MixtureDenoiser(self.means, self.weights, self.std, alphas).to(self.device).eval()

    @property
    def mean(self) -> torch.Tensor:
        """Mean (2,) of the data distribution."""
        return self.weights @ self.means

    def encode_prompts(self, prompts: list[str]) -> PromptEmbeds:
        return PromptEmbeds(torch.zeros(len(prompts), 1, 1, device=self.device))

    def unconditional_embeds(self, batch: int) -> PromptEmbeds:
        return PromptEmbeds(torch.zeros(batch, 1, 1, device=self.device))

    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeds: PromptEmbeds) -> torch.Tensor:
        return self.denoiser(latents, timesteps.expand(latents.shape[0]))

    def make_scheduler(self, kind: str = "ddim", final_sigmas_type: str = "zero"):
        common = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", timestep_spacing="trailing")
        if kind == "ddim":
            return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False)
        if kind == "dpmsolver-sde":
            return DPMSolverMultistepScheduler(**common, algorithm_type="sde-dpmsolver++", solver_order=1,
                                               final_sigmas_type=final_sigmas_type)
        raise ValueError(f"the toy model samples with ddim or dpmsolver-sde, not {kind!r}")

    def decode(self, latents: torch.Tensor, detail: float = 1.0) -> torch.Tensor:
        return latents

    def extract_meshes(self, representation):
        raise NotImplementedError("the toy model has no geometry")

    def latents_to_meshes(self, latents: torch.Tensor):
        raise NotImplementedError("the toy model has no geometry")

    def tilted(self, beta: float, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (K, 2) and weights (K,) of the data tilted by exp(beta direction.x) (closed form)."""
        c = torch.as_tensor(direction, dtype=torch.float32)
        logw = self.weights.log() + beta * (self.means @ c)
        return self.means + beta * self.std**2 * c, torch.softmax(logw, 0)

    def with_components(self, means: torch.Tensor, weights: torch.Tensor) -> "MixtureToyModel":
        """The same spread with other means and weights (e.g. :meth:`tilted`'s): the exact tilted model."""
        return MixtureToyModel(means, weights, self.std, self.device)

    def tilted_mean(self, beta: float, direction: torch.Tensor) -> torch.Tensor:
        """Mean (2,) of the data tilted by exp(beta direction.x)."""
        means, weights = self.tilted(beta, direction)
        return weights @ means

    def log_flow(self, x: torch.Tensor, t: int, beta: float, direction: torch.Tensor) -> torch.Tensor:
        """log F_t(x) = log E[exp(beta c.x0) | x_t = x] under the data posterior (B,), up to a constant.

        The exact flow of the continuous-time base; its gradient in x is the guidance that turns the
        base's transitions into the tilted model's (the "exact flow guidance" oracle).
        """
        c = torch.as_tensor(direction, dtype=x.dtype)
        a = float(self.denoiser.alphas_cumprod[int(t)]) if t >= 0 else 1.0
        v = a * self.std**2 + 1 - a
        diff = x[:, None, :] - math.sqrt(a) * self.means[None].to(x.dtype)
        log_resp = self.weights.log().to(x.dtype) - diff.pow(2).sum(-1) / (2 * v)  # unnormalised log P(k|x)
        x0_k = self.means[None].to(x.dtype) + math.sqrt(a) * self.std**2 / v * diff  # E[x0 | x, k]
        post_var = self.std**2 * (1 - a) / v
        log_f_k = beta * (x0_k @ c) + 0.5 * beta**2 * post_var * float(c @ c)
        return torch.logsumexp(log_resp + log_f_k, 1) - torch.logsumexp(log_resp, 1)


class GaussianToyModel(MixtureToyModel):
    """One component: N(m, s^2 I). The tilt is N(m + beta s^2 c, s^2); only ``proj_out`` is LoRA-adapted."""

    name = "toy-gaussian"
    lora_target_modules = ("proj_out",)

    def __init__(self, mean=(0.5, -0.5), std: float = 0.7, device: str | torch.device = "cpu"):
        super().__init__(means=(tuple(mean),), weights=(1.0,), std=std, device=device)


class AnisotropicToyModel(MixtureToyModel):
    """A 2-D mixture of Gaussians with diagonal, unequal covariances (per component and per axis).

    Default: a wide-across, narrow-along-c majority at (-0.8, 0) (std 0.2 / 0.6, weight 0.6) and a
    wide-along-c minority at (0.8, 0.3) (std 0.5 / 0.15, weight 0.4). A linear tilt exp(beta c.x)
    moves each mean by beta Sigma_k c, by a different amount per component, and reweights them by
    exp(beta c.mu_k + beta^2 c^T Sigma_k c / 2), so the minority becomes the majority.
    """

    name = "toy-anisotropic"

    def __init__(self, means=((-0.8, 0.0), (0.8, 0.3)), weights=(0.6, 0.4), stds=((0.2, 0.6), (0.5, 0.15)),
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.means = torch.as_tensor(means, dtype=torch.float32).reshape(-1, 2)
        self.weights = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        self.stds = torch.as_tensor(stds, dtype=torch.float32).reshape(-1, 2)
        if len(self.weights) != len(self.means) or not bool((self.weights > 0).all()):
            raise ValueError("one positive weight per component")
        if self.stds.shape != self.means.shape or not bool((self.stds > 0).all()) or not bool(torch.isfinite(self.stds).all()):
            raise ValueError("one positive, finite std per component and axis")
        self.weights = self.weights / self.weights.sum()
        self.std = None
        alphas = self.make_scheduler().alphas_cumprod
        self.denoiser = MixtureDenoiser(self.means, self.weights, self.stds, alphas).to(self.device).eval()

    def with_components(self, means: torch.Tensor, weights: torch.Tensor) -> "AnisotropicToyModel":
        """The same covariances with other means and weights (e.g. :meth:`tilted`'s): the exact tilted model."""
        return AnisotropicToyModel(means, weights, self.stds, self.device)

    def tilted(self, beta: float, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = torch.as_tensor(direction, dtype=torch.float32)
        var = self.stds.pow(2)
        logw = self.weights.log() + beta * (self.means @ c) + 0.5 * beta**2 * (var @ c.pow(2))
        return self.means + beta * var * c, torch.softmax(logw, 0)

    def log_flow(self, x: torch.Tensor, t: int, beta: float, direction: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(direction, dtype=x.dtype)
        a = float(self.denoiser.alphas_cumprod[int(t)]) if t >= 0 else 1.0
        var = self.stds.pow(2).to(x.dtype)[None]  # (1, K, d)
        v = a * var + 1 - a
        diff = x[:, None, :] - math.sqrt(a) * self.means[None].to(x.dtype)
        log_resp = self.weights.log().to(x.dtype) - (diff.pow(2) / v).sum(-1) / 2 - v.log().sum(-1) / 2
        x0_k = self.means[None].to(x.dtype) + math.sqrt(a) * var / v * diff
        post_var = var * (1 - a) / v
        log_f_k = beta * (x0_k @ c) + 0.5 * beta**2 * (post_var @ c.pow(2))
        return torch.logsumexp(log_resp + log_f_k, 1) - torch.logsumexp(log_resp, 1)
