"""The model protocol: what the sampler, renderer, rewards and aligner may assume about a model.

A *3D-native latent diffusion model* is five parts. The embedded model, Shap-E
(``engine/models/shap_e``) and DiffSplat (``engine/models/diffsplat``) implement them
(docs/backbones.md).

1. **Prompt encoder** -- ``encode_prompts(list[str]) -> PromptEmbeds`` and
   ``unconditional_embeds(batch) -> PromptEmbeds`` (the embedding classifier-free guidance
   pairs with). ``PromptEmbeds.hidden`` is a token sequence (B, L, D) for cross-attention,
   ``pooled`` an optional global vector (B, Dp). ``validate_prompts(prompts)`` raises
   ``engine.models.prompts.PromptError`` for a prompt the model cannot take, and ``vocabulary()``
   lists its words (None for open text); both come from the model's ``prompt_rules``, which the
   registry also hands out without loading the model. (DiffSplat: CLIP or T5 encoders; Shap-E: a
   CLIP text embedding.)
2. **Denoiser** -- ``denoiser: torch.nn.Module`` called through
   ``denoise(latents, timesteps, embeds) -> model_output`` (same shape as ``latents``). Its
   attention and feed-forward layers are ``torch.nn.Linear`` modules with diffusers' names
   (``to_q``, ``to_k``, ``to_v``, ``to_out.0``, ``ff.net.0.proj``, ``ff.net.2``, ``proj_out``),
   listed in ``lora_target_modules`` so peft can wrap them; optionally ``lora_conditioning_modules``
   names the timestep-embedding and AdaLN layers (adapted too with ``AlignConfig.lora_conditioning``). (DiffSplat: UNet2DCondition /
   PixArt / SD3 transformers with Plücker channels concatenated inside ``denoise``; Shap-E:
   PriorTransformer.)
3. **Scheduler** -- ``make_scheduler(kind)`` returns a fresh diffusers scheduler of the kinds its
   registry entry lists (``ModelSpec.schedulers``: "ddim", "ddpm", "dpmsolver-sde", Shap-E also
   "heun") configured for this model; ``training_schedulers`` names those
   whose transitions are Gaussian and stateless, the only ones the aligner samples trajectories
   with (Heun is for generation only); ``prediction_type`` says what the
   denoiser predicts ("epsilon", "v_prediction" or "sample"); ``default_guidance`` is the
   classifier-free guidance scale the model is meant to be sampled with.
4. **Decoder** -- ``decode(latents, detail=1.0) -> Renderable``: a differentiable map from latents to a
   3D representation that ``engine.render`` can draw. ``detail`` in (0, 1] asks for a coarser,
   cheaper representation (a grid decoder decodes a grid that fraction as fine; a model whose
   cost does not depend on it ignores it); the aligner uses it for low-weight reward gradients. Fields (signed distance + colour, queried at
   points) are rendered by the volume renderer; Gaussian splats (DiffSplat's
   ``engine.render.types.GaussianSplats``) by the splat rasteriser, behind the same ``render`` call.
5. **Mesh extraction** -- ``extract_meshes(representation) -> list[Mesh]`` (vertex-coloured,
   engine world frame: Z up, inside [-1, 1]^3).

Latents have the fixed per-sample shape ``latent_shape``; the sampler draws standard normal
noise of that shape. Nothing outside a model may depend on the latent layout.

Optional: ``judge_mesh(mesh, prompt)`` returns a verdict with ``ok`` (bool) and the ``shape`` and
``colour`` (str) it read: the model's own check, without a network, that a mesh shows what its
prompt asks (the embedded model's geometric judge, ``engine/models/embedded/shape_judge.py``).
Evaluations report a "geometric accuracy" only for models that have it. A model's vocabulary stays
in its package: code outside reaches it through the model, its registry entry
(``ModelSpec.example_prompts``, ``AlignmentDefaults.prompts``) or its ``prompt_rules``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..geometry.mesh import Mesh


_EMBED_FIELDS = ("hidden", "pooled", "mask")


@dataclass
class PromptEmbeds:
    """Conditioning for a batch, each part optional but not all: ``hidden`` (B, L, D) a token
    sequence for cross-attention; ``pooled`` (B, Dp) a global vector (Shap-E conditions on this
    alone); ``mask`` (B, L) the valid tokens of ``hidden`` (T5 and PixArt need it)."""

    hidden: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.hidden is None and self.pooled is None:
            raise ValueError("PromptEmbeds needs hidden or pooled")
        if self.mask is not None and self.hidden is None:
            raise ValueError("a mask belongs to hidden")

    def __len__(self) -> int:
        return int((self.hidden if self.hidden is not None else self.pooled).shape[0])

    def _map(self, fn) -> "PromptEmbeds":
        return PromptEmbeds(**{k: None if getattr(self, k) is None else fn(getattr(self, k)) for k in _EMBED_FIELDS})

    @staticmethod
    def cat(items: list["PromptEmbeds"]) -> "PromptEmbeds":
        return PromptEmbeds(**{k: None if getattr(items[0], k) is None else torch.cat([getattr(i, k) for i in items])
                               for k in _EMBED_FIELDS})

    def to(self, device) -> "PromptEmbeds":
        return self._map(lambda t: t.to(device))

    def __getitem__(self, index: slice) -> "PromptEmbeds":
        """The rows ``index`` (a slice) of every part."""
        return self._map(lambda t: t[index])


@runtime_checkable
class Renderable(Protocol):
    """A batch of 3D assets that the engine's renderer can draw (see ``engine.render.render``)."""

    def __len__(self) -> int: ...


@runtime_checkable
class DiffusionModel(Protocol):
    name: str
    denoiser: torch.nn.Module
    prediction_type: str
    default_guidance: float
    latent_shape: tuple[int, ...]
    lora_target_modules: tuple[str, ...]
    training_schedulers: tuple[str, ...]  # make_scheduler kinds with Gaussian, stateless transitions (alignment)

    def validate_prompts(self, prompts: list[str]) -> None: ...

    def vocabulary(self) -> str | None: ...

    def encode_prompts(self, prompts: list[str]) -> PromptEmbeds: ...

    def unconditional_embeds(self, batch: int) -> PromptEmbeds: ...

    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeds: PromptEmbeds) -> torch.Tensor: ...

    # "ddim" (sampling) and "dpmsolver-sde" (the aligner's default trajectories, AlignConfig.sampler);
    # an unsupported kind raises ValueError naming the ones the model offers.
    def make_scheduler(self, kind: str = "ddim"): ...

    def decode(self, latents: torch.Tensor, detail: float = 1.0) -> Renderable: ...

    def extract_meshes(self, representation: Renderable) -> list[Mesh]: ...

    def latents_to_meshes(self, latents: torch.Tensor) -> list[Mesh]: ...
