"""DiffSplat-PixArt-Sigma (Lin et al., ICLR 2025; MIT) through diffusers: text -> 3D Gaussians.

It implements ``engine.models.protocol.DiffusionModel`` with stock diffusers and transformers
classes, loaded offline from a folder (loading.py; ``scripts/convert_diffsplat.py`` assembles it):

* prompts: T5 (``T5EncoderModel``), padded to ``max_token_length`` tokens as PixArt-Sigma does, the
  attention mask carried in ``PromptEmbeds.mask``; the unconditional embedding is the empty prompt's.
  Each prompt set is encoded once per model instance (a small LRU cache).
* denoiser: ``PixArtTransformer2DModel`` with the multi-view self-attention processor (attention.py).
  A latent is the V views' latents (V, C, h, w); ``denoise`` appends the 6 Plücker channels of each
  view's rays, repeats the prompt per view, and keeps the first C output channels (the rest is
  PixArt's learned variance, unused by DiffSplat).
* schedulers: DDIM, DDPM and first-order SDE-DPM-Solver++ (the paper's sampler) from the folder's
  scheduler config, with DiffSplat's timestep spacing (settings.py).
* decoder: the GSVAE decodes each view's splatter image (12, 8h, 8w), made into pixel-aligned
  Gaussians in the engine's world (splatter.py, frames.py), drawn by the splat rasteriser.
* meshes: engine.geometry.splat_mesh.

Usage and what is not measured without real weights: docs/backbones.md.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch

from ...geometry.mesh import Mesh
from ...render.types import GaussianSplats
from .. import model_spec
from ..prompts import ChecksPrompts
from ..protocol import PromptEmbeds
from ..schedulers import with_float64_alphas
from .attention import use_multiview_attention
from .cameras import latent_plucker, orbit_camera_to_world
from .loading import PLUCKER_CHANNELS, DiffSplatParts, load_parts
from .settings import DiffSplatSettings
from .splatter import splatter_to_gaussians


class DiffSplatModel(ChecksPrompts):
    name = "diffsplat"
    # peft names of the Linear layers the official alignment code (nabla-R2D3,
    # train_nabla_r2d3_diffsplat_pas.py) adapts in every block, and the output projection.
    lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_out")
    # ... and what its targets "linear", "linear_1", "linear_2" and "proj" also hit outside the blocks:
    # the AdaLN-single and timestep-embedder Linears, the caption projection, the patch-embedding conv.
    lora_conditioning_modules = ("adaln_single.linear", "adaln_single.emb.timestep_embedder.linear_1",
                                 "adaln_single.emb.timestep_embedder.linear_2", "caption_projection.linear_1",
                                 "caption_projection.linear_2", "pos_embed.proj")
    prompt_rules = model_spec("diffsplat").prompts
    training_schedulers = ("ddim", "ddpm", "dpmsolver-sde")

    def __init__(self, parts: DiffSplatParts, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.settings: DiffSplatSettings = parts.settings
        self.denoiser = parts.transformer.to(self.device).eval()
        self.vae = parts.vae.to(self.device).eval()
        self.text_encoder = parts.text_encoder.to(self.device).eval()
        for module in (self.denoiser, self.vae, self.text_encoder):
            module.requires_grad_(False)
        self.tokenizer = parts.tokenizer
        self.scheduler_config = dict(parts.scheduler_config)
        self.prediction_type = str(self.scheduler_config.get("prediction_type", "epsilon"))
        self.default_guidance = self.settings.default_guidance
        views = len(self.settings.azimuths)
        use_multiview_attention(self.denoiser, views)
        size = int(self.denoiser.config.sample_size)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.latent_shape = (views, self.latent_channels, size, size)
        upsampling = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.splatter_resolution = size * upsampling
        self.cameras = orbit_camera_to_world(self.settings)  # (V, 4, 4) float64, DiffSplat frame
        self.plucker = latent_plucker(self.cameras, self.settings.focal,
                                      self.settings.plucker_resolution or self.splatter_resolution, (size, size),
                                      self.settings.plucker_bug)  # (V, 6, h, w) float64
        vae_cfg = self.vae.config
        scaling = self.settings.scaling_factor if self.settings.scaling_factor is not None else vae_cfg.scaling_factor
        shift = self.settings.shift_factor if self.settings.shift_factor is not None else vae_cfg.shift_factor
        self.scaling_factor = float(scaling if scaling is not None else 1.0)
        self.shift_factor = float(shift if shift is not None else 0.0)
        self._prompt_cache: OrderedDict[tuple[str, ...], PromptEmbeds] = OrderedDict()

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None) -> "DiffSplatModel":
        """Load from ``directory`` (loading.py's layout), never from the network. ``dtype``: the
        weights' precision (None: as saved)."""
        return cls(load_parts(directory, dtype), device)

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    # -- prompts ---------------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> PromptEmbeds:
        self.validate_prompts(prompts)
        return self._encode(tuple(prompts))

    def unconditional_embeds(self, batch: int) -> PromptEmbeds:
        empty = self._encode(("",))
        return PromptEmbeds(hidden=empty.hidden.expand(batch, -1, -1), mask=empty.mask.expand(batch, -1))

    def _encode(self, prompts: tuple[str, ...]) -> PromptEmbeds:
        """T5 hidden states (B, L, D) and their mask (B, L), once per prompt tuple."""
        if prompts in self._prompt_cache:
            self._prompt_cache.move_to_end(prompts)
            return self._prompt_cache[prompts]
        texts = [p.lower().strip() for p in prompts]  # PixArt's preprocessing without caption cleaning
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.settings.max_token_length,
                                truncation=True, add_special_tokens=True, return_tensors="pt")
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        with torch.no_grad():
            hidden = self.text_encoder(ids, attention_mask=mask)[0]
        embeds = PromptEmbeds(hidden=hidden.to(torch.promote_types(hidden.dtype, torch.float32)), mask=mask)
        self._prompt_cache[prompts] = embeds
        while len(self._prompt_cache) > self.settings.prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return embeds

    # -- denoiser --------------------------------------------------------------------------------
    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeds: PromptEmbeds) -> torch.Tensor:
        """latents (B, V, C, h, w), timesteps (B,) -> the transformer's prediction (B, V, C, h, w) in
        the latents' dtype (the transformer runs in its own)."""
        b, v, c, h, w = latents.shape
        if (v, c, h, w) != self.latent_shape:
            raise ValueError(f"DiffSplat latents must be (B, {', '.join(map(str, self.latent_shape))}), "
                             f"got {tuple(latents.shape)}")
        rays = self.plucker.to(device=latents.device, dtype=latents.dtype).expand(b, -1, -1, -1, -1)
        x = torch.cat([latents, rays], 2).reshape(b * v, c + PLUCKER_CHANNELS, h, w).to(self.dtype)
        t = timesteps.reshape(-1).expand(b).repeat_interleave(v)
        hidden = embeds.hidden.to(self.dtype).repeat_interleave(v, 0)
        mask = None if embeds.mask is None else embeds.mask.repeat_interleave(v, 0)
        out = self.denoiser(x, encoder_hidden_states=hidden, encoder_attention_mask=mask, timestep=t,
                            added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        return out[:, :c].reshape(b, v, c, h, w).to(latents.dtype)

    def make_scheduler(self, kind: str = "ddim"):
        """The folder's betas (PixArt-Sigma's) with DiffSplat's spacing: "ddim" (eta 1 in the engine's
        sampler, no clipping: latents are not images), "ddpm", "dpmsolver-sde" (first order)."""
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

        common = dict(timestep_spacing=self.settings.timestep_spacing, prediction_type=self.prediction_type,
                      rescale_betas_zero_snr=self.settings.rescale_betas_zero_snr)
        config = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        if kind == "ddim":
            scheduler = DDIMScheduler.from_config(_known(DDIMScheduler, config), **common, clip_sample=False,
                                                  set_alpha_to_one=False)
        elif kind == "ddpm":
            scheduler = DDPMScheduler.from_config(_known(DDPMScheduler, config), **common, clip_sample=False,
                                                  variance_type="fixed_small")
        elif kind == "dpmsolver-sde":
            scheduler = DPMSolverMultistepScheduler.from_config(
                _known(DPMSolverMultistepScheduler, config), **common, algorithm_type="sde-dpmsolver++", solver_order=1)
        else:
            raise ValueError(f"unknown scheduler {kind!r}; DiffSplat samples with {', '.join(model_spec(self.name).schedulers)}")
        return with_float64_alphas(scheduler)

    # -- geometry --------------------------------------------------------------------------------
    def decode_splatter(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, V, C, h, w) -> splatter images (B, V, 12, H, W) in [-1, 1], in at least float32:
        un-scaled as the official code does (``/ scaling_factor + shift_factor``), decoded by the GSVAE
        ``decode_chunk`` views at a time, clamped."""
        b, v, c, h, w = latents.shape
        z = (latents / self.scaling_factor + self.shift_factor).reshape(b * v, c, h, w).to(self.vae.dtype)
        step = self.settings.decode_chunk
        images = torch.cat([self.vae.decode(z[i : i + step]).sample for i in range(0, b * v, step)])
        images = images.clamp(-1.0, 1.0).to(torch.promote_types(latents.dtype, torch.float32))
        return images.reshape(b, v, *images.shape[1:])

    def decode(self, latents: torch.Tensor, detail: float = 1.0) -> GaussianSplats:
        """latents (B, V, C, h, w) -> B assets of V * H * W Gaussians in the engine's world.
        ``detail`` is ignored: the GSVAE's cost is fixed by its architecture and the rasteriser's by
        the render resolution, which the aligner already scales with ``detail``."""
        images = self.decode_splatter(latents)
        return splatter_to_gaussians(images, self.cameras.to(images.device), self.settings)

    def extract_meshes(self, representation: GaussianSplats) -> list[Mesh]:
        from ...geometry.splat_mesh import splats_to_meshes

        return splats_to_meshes(representation, resolution=self.settings.mesh_resolution)

    def latents_to_meshes(self, latents: torch.Tensor) -> list[Mesh]:
        with torch.no_grad():
            return self.extract_meshes(self.decode(latents))


def _known(scheduler_cls, config: dict) -> dict:
    """The keys of ``config`` that ``scheduler_cls`` takes: a DPM-Solver config (PixArt's) read into a
    DDIM scheduler would otherwise log every foreign key."""
    import inspect

    accepted = set(inspect.signature(scheduler_cls.__init__).parameters)
    return {k: v for k, v in config.items() if k in accepted}
