# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the add-on: generate, align, job control, adapters, vocabulary."""
from . import adapters, align, gallery, generate, jobs, vocabulary
from .vocabulary import NABLA_R2D3_OT_show_vocabulary

classes = (
    *vocabulary.classes,
    *generate.classes,
    *align.classes,
    *gallery.classes,
    *jobs.classes,
    *adapters.classes,
)

__all__ = ["classes", "NABLA_R2D3_OT_show_vocabulary"]
