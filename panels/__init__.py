# SPDX-License-Identifier: GPL-3.0-or-later
"""Panels of the add-on, in the "Nabla-R2D3" tab of the 3D viewport sidebar (N panel):
Generate (+ Vocabulary), Gallery, Align, Adapters, Jobs, Previews."""
from . import adapters, align, gallery, generate, jobs, previews

classes = (
    *generate.classes,
    *gallery.classes,
    *align.classes,
    *adapters.classes,
    *jobs.classes,
    *previews.classes,
)
