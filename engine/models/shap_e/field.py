"""Shap-E's implicit field, queried differentiably: latents -> signed distance and colour at points.

A Shap-E latent is the weights of a small MLP: ``renderer.params_proj(latents)`` turns each latent's
token groups into the weight matrices of the MLP's first layers, and the rest of the MLP is shared.
diffusers' ``ShapERenderer`` then copies those weights into its one ``mlp`` under ``no_grad`` and
renders with a ray sampler that reseeds the global RNG (``torch.manual_seed(0)``): neither gives a
reward gradient, and the second would break every seeded run. So the field here runs the renderer's
own MLP through ``torch.func.functional_call`` with the projected weights, vmapped over the batch:
the same numbers as diffusers' path (tests/engine/models/shap_e), differentiable to the latents, and
no global RNG touched.

Shap-E's STF head gives ``tanh(sdf)`` positive inside (diffusers marches it at level 0 with a
negative border); the engine's fields are negative inside (engine/render/types.py), so the sign is
flipped. Its colour head is sRGB in [0, 1] (diffusers converts it to linear for mesh textures), as
the engine's fields are.
"""
from __future__ import annotations

import torch
from torch.func import functional_call, vmap

from ...geometry.mesh import Mesh, extract_mesh

_PREFIX = "nerstf."  # params_proj names the MLP's weights as the original Shap-E checkpoint does


class ShapEField:
    """A batch of Shap-E fields (implements ``engine.render.types.SignedDistanceField``).

    ``params``: the latent-dependent MLP weights, each (B, *shape); ``mlp``: the renderer's
    ``MLPNeRSTFModel`` (its own weights for the layers the latent does not set); ``sdf_scale``:
    world units per unit of Shap-E's tanh-bounded signed distance.
    """

    def __init__(self, params: dict[str, torch.Tensor], mlp: torch.nn.Module, sdf_scale: float = 1.0,
                 chunk_points: int = 65536):
        self.params = params
        self.mlp = mlp
        self.sdf_scale = float(sdf_scale)
        self.chunk_points = int(chunk_points)
        first = next(iter(params.values()))
        self.device, self.dtype = first.device, first.dtype

    @classmethod
    def from_latents(cls, renderer, latents: torch.Tensor, **kwargs) -> "ShapEField":
        """latents (B, tokens, d_latent) -> the field of each, through ``renderer.params_proj``."""
        projected = renderer.params_proj(latents.to(renderer.dtype))
        return cls({k.removeprefix(_PREFIX): v for k, v in projected.items()}, renderer.mlp, **kwargs)

    def __len__(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points (B, N, 3) in [-1, 1]^3 -> signed distance (B, N) in world units (negative inside)
        and sRGB colour (B, N, 3), in at least float32, differentiable in the latents and the points."""
        mlp = self.mlp

        def one(params: dict[str, torch.Tensor], pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = functional_call(mlp, params, (), dict(position=pts[None], direction=None, ts=None,
                                                        nerf_level="fine", rendering_mode="stf"))
            return out.signed_distance[0, :, 0], out.channels[0]

        points = points.to(self.dtype)
        parts = [vmap(one)(self.params, points[:, i : i + self.chunk_points])
                 for i in range(0, points.shape[1], self.chunk_points)]
        out_dtype = torch.promote_types(self.dtype, torch.float32)  # bf16 weights give fp32, float64 stays
        sdf = torch.cat([p[0] for p in parts], 1).to(out_dtype)
        colour = torch.cat([p[1] for p in parts], 1).to(out_dtype)
        return -self.sdf_scale * sdf, colour

    def sample(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """points (B, N, 3) -> signed distance (B, N), sRGB colour (B, N, 3) and unit outward normals
        (B, N, 3), the normalised gradient of the distance. The gradient is exact (autograd, not
        finite differences) and itself differentiable when gradients are on, so normal rewards
        reach the latents; under ``no_grad`` only the normals' values are computed."""
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            pts = points.detach().requires_grad_(True)
            sdf, colour = self.query(pts)
            (grad,) = torch.autograd.grad(sdf.sum(), pts, create_graph=keep_graph)
        if not keep_graph:
            sdf, colour = sdf.detach(), colour.detach()
        normals = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return sdf, colour, normals.to(sdf.dtype)

    @torch.no_grad()
    def grid(self, resolution: int) -> torch.Tensor:
        """The field on a (resolution)^3 grid over [-1, 1]^3 with corners on the bounds:
        (B, 4, z, y, x), channel 0 the signed distance, 1:4 sRGB colour (``extract_mesh``'s layout)."""
        axis = torch.linspace(-1.0, 1.0, resolution, device=self.device)
        z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
        points = torch.stack([x, y, z], -1).reshape(1, -1, 3).expand(len(self), -1, -1)
        sdf, colour = self.query(points)
        volume = torch.cat([sdf[:, None], colour.transpose(1, 2)], 1)
        return volume.reshape(len(self), 4, resolution, resolution, resolution)

    def meshes(self, resolution: int) -> list[Mesh]:
        """Marching cubes at ``resolution`` voxels a side, vertex colours from the colour head."""
        return [extract_mesh(volume) for volume in self.grid(resolution)]
