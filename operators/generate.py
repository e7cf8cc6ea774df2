# SPDX-License-Identifier: GPL-3.0-or-later
"""Generate: prompt -> assets in the scene (the work runs in the engine process)."""

import bpy
from bpy.props import IntProperty, StringProperty

from ..blender import engine_python, gallery, generate
from ..blender.gallery_seeds import press_seeds
from ..engine.params import MAX_COUNT
from ..preferences import get_preferences
from .common import run_job


class NABLA_R2D3_OT_generate(bpy.types.Operator):
    """Generate 3D assets from the prompt; they arrive in a new collection around the 3D cursor"""

    bl_idname = "nabla_r2d3.generate"
    bl_label = "Generate"
    bl_options = {'REGISTER', 'UNDO'}

    # Script overrides of the Scene settings (the panel leaves them unset).
    prompt: StringProperty(name="Prompt", default="", options={'SKIP_SAVE'},
                           description="Prompt to use instead of the scene's")
    count: IntProperty(name="Count", default=0, min=0, max=MAX_COUNT, options={'SKIP_SAVE'},
                       description="Number of assets instead of the scene's (0: the scene's)")
    seed: IntProperty(name="Seed", default=-1, min=-1, options={'SKIP_SAVE'},
                      description="First seed instead of the scene's (-1: the scene's)")

    def execute(self, context):
        prefs = get_preferences(context)
        try:
            engine_python.resolve(prefs)  # say now, not from a timer, when there is no engine
            s = context.scene.nabla_r2d3
            req = generate.GenerateRequest.from_settings(s, self.prompt, self.count, self.seed)
            after = None
            if self.seed < 0:  # the Seed field's: its mode says which seeds this press uses (blender/gallery_seeds.py)
                req.seed, after = press_seeds(s.seed_mode, int(s.seed), int(req.count))
            job = gallery.attach(generate.make_job(context, prefs, req), context.scene, review=s.gallery_first)
        except (generate.JobSetupError, engine_python.EnginePythonError, OSError, ValueError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        if after is not None and after != s.seed:
            s.seed = after
        return run_job(self, context, job)


classes = (NABLA_R2D3_OT_generate,)
