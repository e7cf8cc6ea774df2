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

from .engine import names
from .engine.names import METHOD_ITEMS as METHODS, RENDERER_ITEMS as RENDERERS
from .engine.params import MAX_ADAPTER_WEIGHT, MAX_BETA, MAX_COUNT, MAX_GUIDANCE, MAX_LR, MAX_SAMPLING_STEPS
from .blender import gallery_props
from .blender.gallery_seeds import SEED_MODES

REWARDS = (
    ("palette", "Colour Palette", "Reward views whose colours stay close to a palette"),
    ("reference", "Reference Image", "Reward views that look like a reference image"),
    ("dnc", "Depth-Normal Consistency", "Reward clean geometry: rendered normals agree with the depth map (no network)"),
)


# The Sampler menu of each model, built once: Blender keeps no reference to the strings an items
# callback returns, so they must outlive the call.
_SAMPLER_MENUS = {model: names.scheduler_items(model) for model in names.MODELS}
_DEFAULT_SAMPLER = "ddim"  # the CLI's default; every model samples with it


def _chosen_model(context) -> str:
    from .blender.generate import model_kind  # late: blender.generate imports modules that import this one
    from .preferences import get_preferences

    return model_kind(get_preferences(context))


def _sampler_menu(context=None) -> tuple:
    """The Sampler menu of the model the preferences choose: only the samplers it generates with."""
    return _SAMPLER_MENUS.get(_chosen_model(context), _SAMPLER_MENUS[names.MODELS[0]])


def _sampler_items(self, context):
    return _sampler_menu(context)


def _get_sampler(self) -> int:
    """The stored sampler while the chosen model offers it; else that model's default, so a sampler
    picked for another model (Heun, then the embedded model chosen) is never what a job gets."""
    menu = _sampler_menu()
    stored = self.get("scheduler")
    if any(item[3] == stored for item in menu):
        return stored
    return next((item[3] for item in menu if item[0] == _DEFAULT_SAMPLER), menu[0][3])


def _set_sampler(self, value: int) -> None:
    self["scheduler"] = value


class NablaR2D3PaletteColour(bpy.types.PropertyGroup):
    color: FloatVectorProperty(name="Colour", subtype='COLOR_GAMMA', size=3, min=0.0, max=1.0,
                               default=(0.8, 0.2, 0.1), description="A palette colour (sRGB)")


class NablaR2D3SceneSettings(bpy.types.PropertyGroup):
    # Generate
    prompt: StringProperty(name="Prompt", default="a red cube",
                           description='What to generate, e.g. "a tall blue cylinder" (see Vocabulary)')
    count: IntProperty(name="Count", default=4, min=1, max=MAX_COUNT, soft_max=64,
                       description="How many assets (one seed each)")
    seed: IntProperty(name="Seed", default=0, min=0, description="Seed of the first asset; asset i uses seed + i")
    seed_mode: EnumProperty(name="Seed Mode", items=SEED_MODES, default="INCREMENT",
                            description="What the Seed field does on each press of Generate")
    steps: IntProperty(name="Sampling Steps", default=20, min=1, max=MAX_SAMPLING_STEPS, soft_max=200,
                       description="Denoising steps per asset: more are slower and usually cleaner")
    use_guidance: BoolProperty(name="Custom Guidance", default=False,
                               description="Override the model's classifier-free guidance scale")
    guidance: FloatProperty(name="Guidance", default=3.0, min=0.0, max=MAX_GUIDANCE, soft_max=30.0,
                            description="Classifier-free guidance scale")
    scheduler: EnumProperty(name="Sampler", items=_sampler_items, get=_get_sampler, set=_set_sampler,
                            description="How the model denoises; only the samplers the chosen model "
                                        "(add-on preferences) supports are offered")
    adapter: StringProperty(name="Adapter", default="",
                            description="LoRA adapter (from the Adapters panel) applied when generating; empty: none")
    adapter_weight: FloatProperty(name="Blend Weight", default=1.0, min=0.0, max=MAX_ADAPTER_WEIGHT, subtype='FACTOR',
                                  description="How strongly the adapter applies (0 = base model, 1 = as trained)")
    spacing: FloatProperty(name="Spacing", default=2.5, min=0.1, soft_max=10.0, subtype='DISTANCE',
                           description="Distance between assets on the grid (assets span about 2 units)")

    # Gallery (the candidates of the latest job, their marks; blender/gallery.py)
    gallery_first: BoolProperty(name="Review in Gallery", default=False,
                                description="New assets wait in the Gallery panel (thumbnails, marks) until imported, "
                                            "instead of landing in the scene")
    gallery: CollectionProperty(type=gallery_props.NablaR2D3GalleryItem)
    gallery_jobs: CollectionProperty(type=gallery_props.NablaR2D3GalleryJob)
    variation_strength: FloatProperty(name="Strength", default=0.3, min=0.0, max=1.0, subtype='FACTOR',
                                      description="How far variations move from the asset: 0 the same asset, "
                                                  "1 an unrelated asset of the same prompt")
    variation_count: IntProperty(name="Variations", default=4, min=1, max=64,
                                 description="How many variations one press makes")

    # Align
    reward: EnumProperty(name="Reward", items=REWARDS, default="palette")
    palette: CollectionProperty(type=NablaR2D3PaletteColour)
    reference_image: PointerProperty(name="Reference", type=bpy.types.Image,
                                     description="An image of this file that views should resemble")
    align_prompts: StringProperty(name="Prompts", default="",
                                  description="Prompts to align on, separated by ';'. Empty: the Generate prompt")
    method: EnumProperty(name="Method", items=METHODS, default="nabla")
    renderer: EnumProperty(name="Renderer", items=RENDERERS, default="volume")
    beta: FloatProperty(name="Beta", default=0.0, min=0.0, max=MAX_BETA, soft_max=1e7, precision=1,
                        description="Reward scale: higher follows the reward harder and forgets more of the prior. "
                                    "0: the engine's tuned default for the reward")
    align_steps: IntProperty(name="Rounds", default=30, min=1, max=10000,
                             description="Training rounds: each samples trajectories, scores their renders and "
                                         "updates the LoRA once (not the sampling steps of each trajectory)")
    learning_rate: FloatProperty(name="Learning Rate", default=0.0, min=0.0, max=MAX_LR, precision=6, step=1,
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
    *gallery_props.classes,
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
