# SPDX-License-Identifier: GPL-3.0-or-later
"""Properties: per-file settings on ``Scene.nabla_r2d3`` (saved with the .blend) and transient job
state on ``WindowManager.nabla_r2d3`` (never saved: a reopened file shows no stale job)."""

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .engine.names import METHOD_ITEMS as METHODS, RENDERER_ITEMS as RENDERERS, SCHEDULER_ITEMS as SCHEDULERS

REWARDS = (
    ("palette", "Colour Palette", "Reward views whose colours stay close to a palette"),
    ("reference", "Reference Image", "Reward views that look like a reference image"),
    ("dnc", "Depth-Normal Consistency", "Reward clean geometry: rendered normals agree with the depth map (no network)"),
)


class NablaR2D3PaletteColour(bpy.types.PropertyGroup):
    color: FloatVectorProperty(name="Colour", subtype='COLOR_GAMMA', size=3, min=0.0, max=1.0,
                               default=(0.8, 0.2, 0.1), description="A palette colour (sRGB)")


class NablaR2D3SceneSettings(bpy.types.PropertyGroup):
    # Generate
    prompt: StringProperty(name="Prompt", default="a red cube",
                           description='What to generate, e.g. "a tall blue cylinder" (see Vocabulary)')
    count: IntProperty(name="Count", default=4, min=1, max=64, description="How many assets (one seed each)")
    seed: IntProperty(name="Seed", default=0, min=0, description="Seed of the first asset; asset i uses seed + i")
    steps: IntProperty(name="Steps", default=20, min=1, max=200, description="Sampling steps")
    use_guidance: BoolProperty(name="Custom Guidance", default=False,
                               description="Override the model's classifier-free guidance scale")
    guidance: FloatProperty(name="Guidance", default=3.0, min=0.0, max=30.0,
                            description="Classifier-free guidance scale")
    scheduler: EnumProperty(name="Sampler", items=SCHEDULERS, default="ddim")
    adapter: StringProperty(name="Adapter", default="",
                            description="LoRA adapter (from the Adapters panel) applied when generating; empty: none")
    adapter_weight: FloatProperty(name="Blend Weight", default=1.0, min=0.0, max=2.0, subtype='FACTOR',
                                  description="How strongly the adapter applies (0 = base model, 1 = as trained)")
    spacing: FloatProperty(name="Spacing", default=2.5, min=0.1, soft_max=10.0, subtype='DISTANCE',
                           description="Distance between assets on the grid (assets span about 2 units)")

    # Align
    reward: EnumProperty(name="Reward", items=REWARDS, default="palette")
    palette: CollectionProperty(type=NablaR2D3PaletteColour)
    reference_image: PointerProperty(name="Reference", type=bpy.types.Image,
                                     description="An image of this file that views should resemble")
    align_prompts: StringProperty(name="Prompts", default="",
                                  description="Prompts to align on, separated by ';'. Empty: the Generate prompt")
    method: EnumProperty(name="Method", items=METHODS, default="nabla")
    renderer: EnumProperty(name="Renderer", items=RENDERERS, default="volume")
    beta: FloatProperty(name="Beta", default=0.0, min=0.0, soft_max=1e7, precision=1,
                        description="Reward scale: higher follows the reward harder and forgets more of the prior. "
                                    "0: the engine's tuned default for the reward")
    align_steps: IntProperty(name="Steps", default=30, min=1, max=10000,
                             description="Optimisation steps (each samples trajectories and updates the LoRA)")
    learning_rate: FloatProperty(name="Learning Rate", default=0.0, min=0.0, max=1.0, precision=6, step=1,
                                 description="LoRA learning rate. 0: the engine's default for the method")
    lora_rank: IntProperty(name="LoRA Rank", default=8, min=1, max=128, description="Rank of the LoRA matrices")
    adapter_name: StringProperty(name="Save As", default="",
                                 description="Name of the new adapter. Empty: made from reward and prompts")


class NablaR2D3Preview(bpy.types.PropertyGroup):
    # ``name`` (built in) holds the label
    path: StringProperty(name="Path", subtype='FILE_PATH')
    job: StringProperty(name="Job")


class NablaR2D3AdapterItem(bpy.types.PropertyGroup):
    # ``name`` (built in) holds the adapter's folder name
    path: StringProperty(name="Path", subtype='DIR_PATH')
    summary: StringProperty(name="Summary")


class NablaR2D3JobState(bpy.types.PropertyGroup):
    """Mirror of the job manager's state for drawing; written only by the manager (main thread)."""

    status: EnumProperty(name="Status", default="IDLE", items=(
        ("IDLE", "Idle", ""), ("STARTING", "Starting Engine", ""), ("RUNNING", "Running", ""),
        ("CANCELLING", "Cancelling", ""), ("IMPORTING", "Importing", ""),
    ))
    job_label: StringProperty(name="Job")
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype='FACTOR')
    message: StringProperty(name="Message")
    queued: IntProperty(name="Queued", default=0)
    last_error: StringProperty(name="Last Error")
    last_info: StringProperty(name="Last Result")
    reward_curve: StringProperty(name="Reward Curve", subtype='FILE_PATH')
    previews: CollectionProperty(type=NablaR2D3Preview)
    adapters: CollectionProperty(type=NablaR2D3AdapterItem)
    adapters_index: IntProperty(name="Adapter", default=0)


classes = (
    NablaR2D3PaletteColour,
    NablaR2D3SceneSettings,
    NablaR2D3Preview,
    NablaR2D3AdapterItem,
    NablaR2D3JobState,
)


def register_properties() -> None:
    bpy.types.Scene.nabla_r2d3 = PointerProperty(type=NablaR2D3SceneSettings)
    bpy.types.WindowManager.nabla_r2d3 = PointerProperty(type=NablaR2D3JobState)


def unregister_properties() -> None:
    del bpy.types.WindowManager.nabla_r2d3
    del bpy.types.Scene.nabla_r2d3
