# SPDX-License-Identifier: GPL-3.0-or-later
"""The gallery's property groups (registered by properties.py, stored on the Scene: saved with the
.blend). They mirror the job folders, which hold the truth: each folder's ``picks.json`` has the
marks (engine/picks.py), its ``manifest.json`` and ``gallery.json`` the candidates' files."""

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

MARK_ITEMS = (
    ("NONE", "Unmarked", "Not marked"),
    ("liked", "Liked", "More like this"),
    ("disliked", "Disliked", "Fewer like this"),
    ("neutral", "Neutral", "Seen, neither liked nor disliked"),
)


class NablaR2D3GalleryItem(bpy.types.PropertyGroup):
    """One candidate of the gallery; ``name`` (built in) is the asset's name in its manifest."""

    prompt: StringProperty(name="Prompt")
    seed: IntProperty(name="Seed", min=0)
    job_dir: StringProperty(name="Job Folder", subtype='DIR_PATH')
    stem: StringProperty(name="Stem", description="The asset's file stem, its id in the job's picks.json")
    thumbnail: StringProperty(name="Thumbnail", subtype='FILE_PATH')
    mesh_path: StringProperty(name="Mesh", subtype='FILE_PATH')
    glb_path: StringProperty(name="GLB", subtype='FILE_PATH')
    lineage: StringProperty(name="Lineage", default="[]",
                            description="Variation steps [[index, strength], ...] from the seed's own asset (JSON)")
    adapter: StringProperty(name="Adapter", description="The adapter (folder name) it was generated with")
    mark: EnumProperty(name="Mark", items=MARK_ITEMS, default="NONE")
    chosen: BoolProperty(name="Chosen", default=False, description="Import this candidate with Import Chosen")
    object_name: StringProperty(name="Object", description="The object it was imported as")


class NablaR2D3GalleryJob(bpy.types.PropertyGroup):
    """A job folder whose marks count toward "Align to My Picks"; ``name`` holds its path."""


classes = (NablaR2D3GalleryItem, NablaR2D3GalleryJob)
