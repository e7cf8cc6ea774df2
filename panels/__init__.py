# SPDX-License-Identifier: GPL-3.0-or-later
"""Panels of the add-on, in the "Nabla-R2D3" tab of the 3D viewport sidebar (N panel):
Generate (+ Vocabulary), Align, Adapters, Jobs, Previews."""
from . import adapters, align, generate, jobs, previews

classes = (
    *generate.classes,
    *align.classes,
    *adapters.classes,
    *jobs.classes,
    *previews.classes,
)
