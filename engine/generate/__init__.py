"""The generate job: text -> asset files and one manifest (:mod:`.job`), and its records (:mod:`.records`).

Nothing is imported here: :mod:`.records` is standard library only and the Blender side imports it
without torch; :mod:`.job` pulls in the engine.
"""
