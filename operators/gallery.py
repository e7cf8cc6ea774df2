# SPDX-License-Identifier: GPL-3.0-or-later
"""Gallery operators: mark a candidate, import chosen or all, open a job folder, variations, and
align to the marks (the work is in blender/gallery.py; jobs run in the engine process)."""

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from ..blender import engine_python, gallery
from ..blender.gallery_props import MARK_ITEMS
from ..blender.generate import JobSetupError
from ..engine.gallery_files import CandidateError
from ..preferences import get_preferences
from .common import build_and_run, run_job


def _item_index(op, context) -> int | None:
    n = len(context.scene.nabla_r2d3.gallery)
    if not 0 <= op.index < n:
        op.report({'ERROR'}, f"No gallery candidate {op.index} (the gallery holds {n})")
        return None
    return op.index


class NABLA_R2D3_OT_gallery_mark(bpy.types.Operator):
    """Mark this candidate (stored in its job folder and on its imported object)"""

    bl_idname = "nabla_r2d3.gallery_mark"
    bl_label = "Mark Candidate"
    bl_options = {'REGISTER', 'INTERNAL'}

    index: IntProperty(default=0, min=0)
    mark: EnumProperty(items=MARK_ITEMS, default="liked")

    @classmethod
    def description(cls, context, properties):
        return {"liked": "Like: more like this", "disliked": "Dislike: fewer like this",
                "neutral": "Neutral: seen, neither", "NONE": "Clear the mark"}[properties.mark]

    def execute(self, context):
        index = _item_index(self, context)
        if index is None:
            return {'CANCELLED'}
        item = context.scene.nabla_r2d3.gallery[index]
        mark = "NONE" if item.mark == self.mark else self.mark  # pressing the lit button again clears it
        try:
            gallery.set_mark(context.scene, index, mark)
        except (JobSetupError, CandidateError, OSError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        return {'FINISHED'}


class NABLA_R2D3_OT_gallery_import(bpy.types.Operator):
    """Import gallery candidates into the scene, around the 3D cursor"""

    bl_idname = "nabla_r2d3.gallery_import"
    bl_label = "Import"
    bl_options = {'REGISTER', 'UNDO'}

    which: EnumProperty(name="Which", default='CHOSEN', items=(
        ('CHOSEN', "Chosen", "The candidates ticked in the gallery"),
        ('LIKED', "Liked", "The candidates marked liked"),
        ('ALL', "All", "Every candidate of the gallery"),
    ))

    def execute(self, context):
        s = context.scene.nabla_r2d3
        indices = [i for i, item in enumerate(s.gallery)
                   if self.which == 'ALL' or (self.which == 'CHOSEN' and item.chosen)
                   or (self.which == 'LIKED' and item.mark == "liked")]
        if not indices:
            self.report({'WARNING'}, {"CHOSEN": "Tick the candidates to import first", "LIKED": "No candidate is liked",
                                      "ALL": "The gallery is empty"}[self.which])
            return {'CANCELLED'}
        try:
            objects = gallery.import_items(context.scene, indices, context.scene.cursor.location, s.spacing)
        except (JobSetupError, CandidateError, OSError, ValueError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        for obj in context.view_layer.objects.selected:
            obj.select_set(False)
        for obj in objects:
            obj.select_set(True)
        context.view_layer.objects.active = objects[0]
        for i in indices:
            s.gallery[i].chosen = False
        self.report({'INFO'}, f"Imported {len(objects)} candidate{'s' if len(objects) != 1 else ''}")
        return {'FINISHED'}


class NABLA_R2D3_OT_gallery_open(bpy.types.Operator):
    """Show a generate job folder's candidates and marks in the gallery"""

    bl_idname = "nabla_r2d3.gallery_open"
    bl_label = "Open Job Folder"
    bl_options = {'REGISTER'}

    directory: StringProperty(subtype='DIR_PATH', options={'SKIP_SAVE'})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {'RUNNING_MODAL'}

    def execute(self, context):
        folder = self.directory or (context.scene.nabla_r2d3.gallery[0].job_dir if len(context.scene.nabla_r2d3.gallery) else "")
        if not folder:
            self.report({'ERROR'}, "Choose a generate job folder (it holds manifest.json)")
            return {'CANCELLED'}
        try:
            n = gallery.load_job(context.scene, bpy.path.abspath(folder))
        except (CandidateError, OSError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"{n} candidates in the Gallery")
        return {'FINISHED'}


class NABLA_R2D3_OT_gallery_clear(bpy.types.Operator):
    """Empty the gallery (the job folders and their marks stay; Align to My Picks still counts them)"""

    bl_idname = "nabla_r2d3.gallery_clear"
    bl_label = "Clear Gallery"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        context.scene.nabla_r2d3.gallery.clear()
        return {'FINISHED'}


class NABLA_R2D3_OT_variations(bpy.types.Operator):
    """Generate variations of the active object (or a gallery candidate): the same prompt, nearby noise.
    They arrive in the Gallery"""

    bl_idname = "nabla_r2d3.variations"
    bl_label = "Variations"
    bl_options = {'REGISTER'}

    index: IntProperty(name="Candidate", default=-1, min=-1, options={'SKIP_SAVE'},
                       description="Gallery candidate to vary (-1: the active object)")

    def execute(self, context):
        prefs = get_preferences(context)
        try:
            engine_python.resolve(prefs)
            if self.index >= 0:
                if _item_index(self, context) is None:
                    return {'CANCELLED'}
                source = gallery.source_of(item=context.scene.nabla_r2d3.gallery[self.index])
            else:
                source = gallery.source_of(obj=context.active_object)
            job = gallery.variations_job(context, prefs, source)
        except (JobSetupError, engine_python.EnginePythonError, OSError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        return run_job(self, context, job)


class NABLA_R2D3_OT_align_to_picks(bpy.types.Operator):
    """Learn a reward from the liked and disliked candidates, then align the model to it (Align panel
    settings). The new adapter is selected only if the held-out preference score rose"""

    bl_idname = "nabla_r2d3.align_to_picks"
    bl_label = "Align to My Picks"
    bl_options = {'REGISTER'}

    def execute(self, context):
        return build_and_run(self, context, gallery.align_to_picks_job)


classes = (NABLA_R2D3_OT_gallery_mark, NABLA_R2D3_OT_gallery_import, NABLA_R2D3_OT_gallery_open,
           NABLA_R2D3_OT_gallery_clear, NABLA_R2D3_OT_variations, NABLA_R2D3_OT_align_to_picks)
