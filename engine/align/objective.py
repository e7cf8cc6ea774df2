"""What the aligner maximises: a reward of clean latents, R3D(x0) = E_camera[R2D(render(decode(x0)))].

The aligner is model-agnostic: it only sees a :class:`LatentObjective`, a differentiable map from a
batch of clean latents (and their prompts) to one reward per sample. :class:`RenderedReward` is the
one every 3D model uses (decode -> differentiable render -> 2D reward); :class:`LinearReward` is the
closed-form toy's.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch

from ..render import render
from ..render.cameras import OrbitConfig, orbit_cameras
from ..render.types import RenderOutput
from ..render.volume import VolumeRenderConfig
from ..rewards.base import Reward


class LatentObjective(Protocol):
    differentiable: bool

    def sample_views(self, generator: torch.Generator) -> Any:
        """Random viewing conditions shared by one update (cameras; None where there are none)."""

    def __call__(self, latents: torch.Tensor, prompts: list[str], views: Any, generator: torch.Generator | None = None,
                 detail: float = 1.0) -> torch.Tensor:
        """Rewards (B,) of clean latents (B, *L); differentiable in the latents where possible.
        ``detail`` in (0, 1]: a cheaper, coarser evaluation (fewer pixels, ray samples and voxels)."""

    def subset_views(self, views: Any, count: int, generator: torch.Generator) -> Any:
        """``count`` of ``views`` drawn at random (all of them when there are fewer; None stays None)."""


class RenderedReward:
    """decode -> volume render from orbit cameras -> 2D reward, averaged over views.

    ``image_noise`` adds Gaussian noise (std, in [0, 1] image units) to the rendered RGB before the
    reward, as the paper does, so the reward cannot exploit single-pixel detail. Rewards run in fp32.
    """

    def __init__(self, model, reward: Reward, orbit: OrbitConfig = OrbitConfig(), render_config: VolumeRenderConfig = VolumeRenderConfig(),
                 image_noise: float = 2e-3):
        self.model = model
        self.reward = reward
        self.orbit = orbit
        self.render_config = render_config
        self.image_noise = image_noise
        self.differentiable = reward.differentiable

    def sample_views(self, generator: torch.Generator):
        return orbit_cameras(self.orbit, generator)

    def subset_views(self, views, count: int, generator: torch.Generator):
        if count >= len(views):
            return views
        return views[torch.randperm(len(views), generator=generator)[:count]]

    def render(self, latents: torch.Tensor, views, detail: float = 1.0) -> RenderOutput:
        """Images of latents (B, *L) from ``views``; ``detail`` < 1 scales the image resolution, the ray
        samples and the model's decode resolution down (at least 8 each)."""
        config = self.render_config
        if detail != 1.0:
            config = dataclasses.replace(config, resolution=max(8, round(config.resolution * detail)),
                                         samples=max(8, round(config.samples * detail)))
        # at least fp32 (latents may come from bf16 autocast), float64 kept for gradient checks
        latents = latents.to(torch.promote_types(latents.dtype, torch.float32))
        return render(self.model.decode(latents, detail), views, config)

    def __call__(self, latents: torch.Tensor, prompts: list[str], views, generator: torch.Generator | None = None,
                 detail: float = 1.0) -> torch.Tensor:
        with torch.autocast(latents.device.type, enabled=False):
            out = self.render(latents, views, detail)
            if self.image_noise > 0:
                noise = torch.randn(out.rgb.shape, generator=generator, device="cpu").to(out.rgb.device)
                out.rgb = out.rgb + self.image_noise * noise
            return self.reward(out, prompts)


class CyclesRenderedReward(RenderedReward):
    """decode -> mesh -> Blender Cycles from the same orbit cameras -> 2D reward. No gradients.

    For DDPO, which needs rewards only: each sample's mesh (``model.latents_to_meshes``) is rendered
    by :func:`engine.render.cycles.render_meshes_cycles` at ``render_config.resolution`` with
    ``cycles_samples`` samples per pixel. Cycles gives colour, coverage and (rendered as a second,
    unlit pass) albedo, not depth or normals: a reward that reads those is refused here.
    """

    CHANNELS = frozenset({"rgb", "alpha", "albedo"})

    def __init__(self, model, reward: Reward, orbit: OrbitConfig = OrbitConfig(), render_config: VolumeRenderConfig = VolumeRenderConfig(),
                 image_noise: float = 2e-3, cycles_samples: int = 16):
        missing = sorted(set(reward.channels) - self.CHANNELS)
        if missing:
            raise ValueError(f"the {reward.name} reward reads {' and '.join(missing)}, which Cycles renders do not give "
                             "here; use the volume renderer for it")
        if not callable(getattr(model, "latents_to_meshes", None)):
            raise ValueError(f"model {getattr(model, 'name', model)!r} cannot make meshes (latents_to_meshes) for Cycles")
        super().__init__(model, reward, orbit, render_config, image_noise)
        self.differentiable = False
        self.cycles_samples = cycles_samples

    def render(self, latents: torch.Tensor, views, detail: float = 1.0) -> RenderOutput:
        from ..render.cycles import CyclesConfig, render_meshes_cycles  # needs bpy: only when asked for

        resolution = max(8, round(self.render_config.resolution * detail))
        config = CyclesConfig(resolution=resolution, samples=self.cycles_samples, albedo="albedo" in self.reward.channels,
                              background=self.render_config.background, threads=torch.get_num_threads())
        with torch.no_grad():
            meshes = self.model.latents_to_meshes(latents.detach().float())
        out = render_meshes_cycles(meshes, views, config)
        rgb = torch.from_numpy(out.rgb)
        albedo = torch.from_numpy(out.albedo) if out.albedo is not None else torch.zeros_like(rgb)
        # depth and normal are never read (refused above); NaN makes any slip loud.
        nan = torch.full((*rgb.shape[:2], 1, resolution, resolution), float("nan"))
        device = latents.device
        return RenderOutput(rgb=rgb.to(device), albedo=albedo.to(device), alpha=torch.from_numpy(out.alpha).to(device),
                            depth=nan.to(device), normal=nan.expand(-1, -1, 3, -1, -1).to(device), cameras=views)


class LinearReward:
    """R(x) = direction . x on the latent itself (the Gaussian toy)."""

    differentiable = True

    def __init__(self, direction):
        self.direction = torch.as_tensor(direction, dtype=torch.float32)

    def sample_views(self, generator: torch.Generator):
        return None

    def subset_views(self, views, count: int, generator: torch.Generator):
        return views

    def __call__(self, latents: torch.Tensor, prompts: list[str], views=None, generator=None, detail: float = 1.0) -> torch.Tensor:
        return latents.flatten(1) @ self.direction.to(latents.device, latents.dtype).flatten()
