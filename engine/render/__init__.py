"""Rendering: orbit cameras, a differentiable volume renderer, and (with bpy) Cycles.

``render(representation, cameras, config)`` is the one entry point the rewards and aligner use; it
dispatches on the representation a model's ``decode`` returns.
"""
from __future__ import annotations

from .cameras import Cameras, OrbitConfig, orbit_cameras
from .volume import RenderOutput, VolumeRenderConfig, render_field


def render(representation, cameras: Cameras, config: VolumeRenderConfig = VolumeRenderConfig()) -> RenderOutput:
    """Differentiably render a batch of assets from ``cameras``: images (B, V, C, R, R)."""
    if hasattr(representation, "sample"):
        return render_field(representation, cameras, config)
    raise TypeError(f"no differentiable renderer for {type(representation).__name__}")


__all__ = ["Cameras", "OrbitConfig", "orbit_cameras", "RenderOutput", "VolumeRenderConfig", "render"]
