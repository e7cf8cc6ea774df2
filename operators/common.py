# SPDX-License-Identifier: GPL-3.0-or-later
"""What every job operator does after building its job: run it now (background) or queue it (UI)."""
from __future__ import annotations

from ..blender import engine_python, jobs
from ..blender.generate import JobSetupError
from ..preferences import get_preferences


def build_and_run(op, context, build) -> set[str]:
    """Run the job ``build(context, prefs)`` makes; a missing engine or bad settings are one error
    report, before anything starts."""
    prefs = get_preferences(context)
    try:
        engine_python.resolve(prefs)
        job = build(context, prefs)
    except (JobSetupError, engine_python.EnginePythonError, OSError, RuntimeError) as exc:
        op.report({'ERROR'}, str(exc))
        return {'CANCELLED'}
    return run_job(op, context, job)


def run_job(op, context, job: jobs.Job) -> set[str]:
    manager = jobs.MANAGER
    if jobs.run_synchronously():
        manager.run_sync(job)
        if job.outcome == "done":
            op.report({'INFO'}, job.message)
            return {'FINISHED'}
        if job.outcome == "cancelled":
            op.report({'WARNING'}, f"{job.label}: {job.message}")
            return {'CANCELLED'}
        op.report({'ERROR'}, f"{job.label}: {job.message}")
        return {'CANCELLED'}
    waiting = manager.busy
    manager.submit(job)
    start_watcher(context)
    op.report({'INFO'}, f"{job.label}: {'queued' if waiting else 'started'} (Esc cancels)")
    return {'FINISHED'}


def start_watcher(context) -> None:
    """The modal ESC watcher needs a window; scripts without one still get the Cancel button."""
    import bpy

    if context.window is None or bpy.app.background:
        return
    try:
        bpy.ops.nabla_r2d3.watch_jobs('INVOKE_DEFAULT')
    except RuntimeError:
        pass
