"""Rendering: orbit cameras, a differentiable volume renderer, and (with bpy) Cycles.

``render(representation, cameras, config)`` is the one entry point the rewards and aligner use; it
dispatches on the representation a model's ``decode`` returns.
"""
from __future__ import annotations

from .cameras import Cameras, OrbitConfig, orbit_cameras
from .splat_render import SplatRenderConfig, render_splats
from .types import GaussianSplats, RenderConfig, RenderOutput, SignedDistanceField
from .volume import VolumeRenderConfig, render_field


def render(representation, cameras: Cameras, config: VolumeRenderConfig = VolumeRenderConfig()) -> RenderOutput:
    """Differentiably render a batch of assets from ``cameras``: images (B, V, C, R, R). The renderer
    is chosen by the representation's type (engine/render/types.py)."""
    if isinstance(representation, GaussianSplats):
        return render_splats(representation, cameras, config)
    if isinstance(representation, SignedDistanceField):
        return render_field(representation, cameras, config)
    raise TypeError(f"no differentiable renderer for {type(representation).__name__} (engine/render/types.py lists what renders)")


__all__ = ["Cameras", "OrbitConfig", "orbit_cameras", "RenderConfig", "RenderOutput", "SignedDistanceField",
           "VolumeRenderConfig", "GaussianSplats", "SplatRenderConfig", "render"]
