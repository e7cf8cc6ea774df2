# SPDX-License-Identifier: GPL-3.0-or-later
"""Job control: cancel, the ESC watcher, the engine check, clearing previews."""

import bpy
from bpy.props import BoolProperty

from ..blender import cache, engine_python, paths, thumbnails
from ..blender.jobs import MANAGER
from ..preferences import get_preferences


class NABLA_R2D3_OT_cancel_job(bpy.types.Operator):
    """Stop the running job (nothing of it reaches the scene)"""

    bl_idname = "nabla_r2d3.cancel_job"
    bl_label = "Cancel"
    bl_options = {'REGISTER'}

    all: BoolProperty(name="All", default=False, description="Also drop the queued jobs")

    @classmethod
    def poll(cls, context):
        return MANAGER.busy

    def execute(self, context):
        if self.all:
            MANAGER.cancel_all()
        else:
            MANAGER.cancel_active()
        self.report({'INFO'}, "Cancelling")
        return {'FINISHED'}


class NABLA_R2D3_OT_watch_jobs(bpy.types.Operator):
    """Runs while jobs do: Esc cancels them"""

    bl_idname = "nabla_r2d3.watch_jobs"
    bl_label = "Watch Jobs"
    bl_options = {'INTERNAL'}

    running = False  # one watcher per session (class attribute, shared)

    def invoke(self, context, event):
        if NABLA_R2D3_OT_watch_jobs.running or not MANAGER.busy:
            return {'CANCELLED'}
        NABLA_R2D3_OT_watch_jobs.running = True
        context.window_manager.modal_handler_add(self)
        return {'RUNNING_MODAL'}

    def modal(self, context, event):
        # Every other event passes through: the artist keeps working while the job runs.
        if not MANAGER.busy:
            NABLA_R2D3_OT_watch_jobs.running = False
            return {'FINISHED'}
        if event.type == 'ESC' and event.value == 'PRESS':
            MANAGER.cancel_all()
            self.report({'INFO'}, "Nabla-R2D3: cancelling")
            NABLA_R2D3_OT_watch_jobs.running = False
            return {'FINISHED'}
        return {'PASS_THROUGH'}

    def cancel(self, context):
        NABLA_R2D3_OT_watch_jobs.running = False


class NABLA_R2D3_OT_check_engine(bpy.types.Operator):
    """Check that the engine Python can run the engine (torch importable)"""

    bl_idname = "nabla_r2d3.check_engine"
    bl_label = engine_python.CHECK_BUTTON
    bl_options = {'REGISTER'}

    def execute(self, context):
        try:
            python = engine_python.resolve(get_preferences(context), refresh=True)
        except engine_python.EnginePythonError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"Engine Python ready: {python}")
        return {'FINISHED'}


class NABLA_R2D3_OT_clear_previews(bpy.types.Operator):
    """Forget the preview thumbnails and the reward curve (the files stay on disk)"""

    bl_idname = "nabla_r2d3.clear_previews"
    bl_label = "Clear Previews"
    bl_options = {'REGISTER', 'INTERNAL'}

    def execute(self, context):
        state = context.window_manager.nabla_r2d3
        state.previews.clear()
        state.reward_curve = ""
        thumbnails.clear()
        return {'FINISHED'}


class NABLA_R2D3_OT_clear_cache(bpy.types.Operator):
    """Remove the cached job folders (meshes, GLBs, previews, logs) that nothing uses any more: not
    those of running jobs, of GLBs that objects in this file name, or of the panels' previews"""

    bl_idname = "nabla_r2d3.clear_cache"
    bl_label = "Clear Cache"
    bl_options = {'REGISTER'}

    def execute(self, context):
        root = paths.cache_dir(get_preferences(context), create=False) / cache.JOBS
        try:
            result = cache.clear(root, cache.folders_in_use(root))
        except OSError as exc:
            self.report({'ERROR'}, f"Could not clear the cache {root}: {exc}")
            return {'CANCELLED'}
        kept = f"; kept {result.kept_in_use} in use ({result.remaining_bytes / 1e6:.1f} MB)" if result.kept_in_use else ""
        self.report({'INFO'}, f"Removed {len(result.removed)} job folder(s), {result.freed_bytes / 1e6:.1f} MB{kept}")
        return {'FINISHED'}


classes = (NABLA_R2D3_OT_cancel_job, NABLA_R2D3_OT_watch_jobs, NABLA_R2D3_OT_check_engine, NABLA_R2D3_OT_clear_previews,
           NABLA_R2D3_OT_clear_cache)
