"""Shap-E (OpenAI, MIT) through diffusers: an open-vocabulary text-to-3D latent diffusion model.

It implements ``engine.models.protocol.DiffusionModel`` with diffusers' and transformers' own
classes, loaded from a folder that ``ShapEPipeline.save_pretrained`` wrote (or the Hugging Face
cache), offline:

* prompts: ``CLIPTokenizer`` + ``CLIPTextModelWithProjection``; the projected text embedding,
  normalised and scaled to unit variance per dimension as ``ShapEPipeline`` does, is the pooled
  conditioning (``PromptEmbeds.pooled``); the unconditional embedding is zeros, as there.
* denoiser: ``PriorTransformer``, predicting the clean latent ("sample"); its second half of
  output channels (a variance the pipeline discards) is dropped.
* schedulers: the model's native Heun sampler for plain generation, and DDIM / DDPM /
  SDE-DPM-Solver++ on the same betas (Shap-E's "exp" schedule, 1024 steps) for trajectories,
  whose every transition is Gaussian.
* decoder: :class:`~engine.models.shap_e.field.ShapEField`, the renderer's MLP queried
  differentiably; meshes by marching cubes on its signed distance.

Nothing here is downloaded: a missing folder or cache entry is a :class:`ModelLoadError` that
names the layout and the download command for a connected machine. Usage, and what has not been
measured on real weights (speed, bf16, ``sdf_scale``, alignment numbers): docs/backbones.md.
"""
from __future__ import annotations

import contextlib
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from ...geometry.mesh import Mesh
from .. import model_spec
from ..errors import ModelLoadError
from ..loading import quiet_loading
from ..prompts import ChecksPrompts
from ..protocol import PromptEmbeds
from ..schedulers import with_float64_alphas
from .field import ShapEField

HUB_ID = "openai/shap-e"
SUBFOLDERS = ("prior", "text_encoder", "tokenizer", "scheduler", "shap_e_renderer")
LAYOUT = ("a folder written by diffusers' ShapEPipeline.save_pretrained: model_index.json and the subfolders "
          + ", ".join(SUBFOLDERS))
DOWNLOAD = f"hf download {HUB_ID} --local-dir DIR"


@dataclass(frozen=True)
class ShapESettings:
    """Engine-side numbers for Shap-E (not in its checkpoint).

    ``mesh_resolution``: marching-cubes grid a side (diffusers' decode_to_mesh uses 128; 64 is an
    eighth of the queries, still smooth for the prior's assets); ``sdf_scale``: world units per
    unit of the STF head's tanh-bounded distance (1: the head read as a distance, which it
    approximates near the surface; not tuned on real weights, none can be loaded here).
    """

    mesh_resolution: int = 64
    sdf_scale: float = 1.0


class ShapEModel(ChecksPrompts):
    name = "shap-e"
    prediction_type = "sample"
    # The guidance of diffusers' ShapEPipeline example and of the Shap-E paper's text-to-3D samples.
    default_guidance = 15.0
    # peft names (suffixes) of the PriorTransformer's attention and feed-forward Linear layers.
    lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
    lora_conditioning_modules = ("time_embedding.linear_1", "time_embedding.linear_2")
    prompt_rules = model_spec("shap-e").prompts
    training_schedulers = ("ddim", "ddpm", "dpmsolver-sde")

    def __init__(self, prior, text_encoder, tokenizer, renderer, scheduler_config: dict,
                 settings: ShapESettings = ShapESettings(), device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.settings = settings
        self.denoiser = prior.to(self.device).eval()
        self.text_encoder = text_encoder.to(self.device).eval()
        self.renderer = renderer.to(self.device).eval()
        for module in (self.denoiser, self.text_encoder, self.renderer):
            module.requires_grad_(False)
        self.tokenizer = tokenizer
        self.tokenizer.pad_token_id = 0  # as ShapEPipeline._encode_prompt sets it
        self.scheduler_config = dict(scheduler_config)
        cfg = prior.config
        self.latent_shape = (int(cfg.num_embeddings), int(cfg.embedding_dim))

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None, settings: ShapESettings = ShapESettings()) -> "ShapEModel":
        """Load from ``directory`` (``ShapEPipeline.save_pretrained`` layout) or, when None, from the
        Hugging Face cache (``openai/shap-e``), never from the network. ``dtype``: the weights'
        precision (None: as saved)."""
        directory = _local_folder(directory)
        from diffusers import HeunDiscreteScheduler, PriorTransformer
        from diffusers.pipelines.shap_e.renderer import ShapERenderer
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        # safetensors only: a pickled .bin (pytorch_model.bin) can run code when loaded, and is
        # refused with a ModelLoadError rather than unpickled.
        kw = dict(local_files_only=True, use_safetensors=True, **({} if dtype is None else {"torch_dtype": dtype}))
        with quiet_loading(), _load_errors(directory):
            prior = PriorTransformer.from_pretrained(directory, subfolder="prior", **kw)
            text_encoder = CLIPTextModelWithProjection.from_pretrained(directory / "text_encoder", **kw)
            tokenizer = CLIPTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True)
            renderer = ShapERenderer.from_pretrained(directory, subfolder="shap_e_renderer", **kw)
            scheduler = HeunDiscreteScheduler.from_pretrained(directory, subfolder="scheduler", local_files_only=True)
        if renderer.config.d_latent != prior.config.embedding_dim:
            raise ModelLoadError(f"Shap-E in {directory}: the renderer takes latents of width {renderer.config.d_latent}, "
                                 f"the prior makes {prior.config.embedding_dim}")
        return cls(prior, text_encoder, tokenizer, renderer, dict(scheduler.config), settings, device)

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    # -- prompts ---------------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> PromptEmbeds:
        self.validate_prompts(prompts)
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        with torch.no_grad():
            embeds = self.text_encoder(ids).text_embeds.float()
        # ShapEPipeline: unit norm, then sqrt(dim) so each dimension has unit variance.
        embeds = embeds / embeds.norm(dim=-1, keepdim=True) * math.sqrt(embeds.shape[1])
        return PromptEmbeds(pooled=embeds)

    def unconditional_embeds(self, batch: int) -> PromptEmbeds:
        dim = int(self.denoiser.config.embedding_proj_dim or self.denoiser.config.embedding_dim)
        return PromptEmbeds(pooled=torch.zeros(batch, dim, device=self.device))

    # -- denoiser --------------------------------------------------------------------------------
    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeds: PromptEmbeds) -> torch.Tensor:
        """latents (B, tokens, dim), timesteps (B,) -> predicted clean latents (B, tokens, dim), in
        the latents' dtype (the prior runs in its own)."""
        out = self.denoiser(latents.to(self.dtype), timestep=timesteps, proj_embedding=embeds.pooled.to(self.dtype)
                            ).predicted_image_embedding
        return out[..., : latents.shape[-1]].to(latents.dtype)  # the rest is the variance ShapEPipeline drops

    def make_scheduler(self, kind: str = "ddim"):
        """"heun": the checkpoint's own sampler (deterministic, for generation); "ddim" (eta 1 in the
        engine's sampler), "ddpm", "dpmsolver-sde": the same betas, Gaussian transitions."""
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, HeunDiscreteScheduler

        if kind == "heun":
            return HeunDiscreteScheduler.from_config(self.scheduler_config)
        betas = self._betas()
        common = dict(num_train_timesteps=len(betas), trained_betas=betas.tolist(), prediction_type="sample",
                      timestep_spacing="trailing")
        clip = dict(clip_sample=bool(self.scheduler_config.get("clip_sample", True)),
                    clip_sample_range=float(self.scheduler_config.get("clip_sample_range", 1.0)))
        if kind == "ddim":
            scheduler = DDIMScheduler(**common, **clip, set_alpha_to_one=False)
        elif kind == "ddpm":
            scheduler = DDPMScheduler(**common, **clip, variance_type="fixed_small")
        elif kind == "dpmsolver-sde":
            scheduler = DPMSolverMultistepScheduler(**common, algorithm_type="sde-dpmsolver++", solver_order=1)
        else:
            raise ValueError(f"unknown scheduler {kind!r}; Shap-E samples with {', '.join(model_spec(self.name).schedulers)}")
        return with_float64_alphas(scheduler)

    def _betas(self) -> torch.Tensor:
        from diffusers import HeunDiscreteScheduler

        return HeunDiscreteScheduler.from_config(self.scheduler_config).betas.double()

    # -- geometry --------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, detail: float = 1.0) -> ShapEField:
        """latents (B, tokens, dim) -> their fields. ``detail`` is ignored: a field is queried where the
        renderer asks, so its cost follows the render settings, not the decode."""
        return ShapEField.from_latents(self.renderer, latents, sdf_scale=self.settings.sdf_scale)

    def extract_meshes(self, representation: ShapEField) -> list[Mesh]:
        return representation.meshes(self.settings.mesh_resolution)

    def latents_to_meshes(self, latents: torch.Tensor) -> list[Mesh]:
        with torch.no_grad():
            return self.extract_meshes(self.decode(latents))


@contextlib.contextmanager
def _load_errors(directory: Path):
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as exc:  # corrupt or foreign files
        raise ModelLoadError(f"could not load Shap-E from {directory} ({LAYOUT}): {exc}") from exc


def _local_folder(directory: str | os.PathLike | None) -> Path:
    """The folder to load from: ``directory`` checked for the layout, or the cache's snapshot."""
    if directory is None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(HUB_ID, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError) as exc:
            raise ModelLoadError(f"Shap-E is not in the Hugging Face cache and nothing is downloaded here; on a "
                                 f"connected machine run `{DOWNLOAD}` and pass DIR as the model folder") from exc
    directory = Path(directory).expanduser()
    missing = [name for name in ("model_index.json", *SUBFOLDERS) if not (directory / name).exists()]
    if missing:
        raise ModelLoadError(f"no Shap-E weights in {directory} (missing {', '.join(missing)}); expected {LAYOUT}. "
                             f"On a connected machine: `{DOWNLOAD}`")
    return directory
