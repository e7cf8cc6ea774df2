# SPDX-License-Identifier: GPL-3.0-or-later
"""bpy adapters of the add-on: everything that touches Blender data, kept apart from operators/panels.

* :mod:`.scene_import`: numpy mesh arrays -> objects with a colour attribute, a material, a collection.
* :mod:`.paths`: where adapters, caches and job folders live (per user, never inside the add-on).
* :mod:`.engine_python`: which Python runs the worker, and the environment it gets.
* :mod:`.jobs`: the job manager: one worker subprocess, a queue, a main-thread timer that applies results.
* :mod:`.adapters`, :mod:`.generate`, :mod:`.align`: the jobs' settings -> params, results -> data.
* :mod:`.preview_object`: an align job's live preview mesh object in the scene.
* :mod:`.thumbnails`, :mod:`.lifecycle`: preview icons; what register/unregister start and stop.

Nothing here imports the engine except ``engine.worker.client`` / ``engine.worker.protocol`` (torch-free).
"""
