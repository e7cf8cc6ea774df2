"""DiffSplat-PixArt-Sigma through diffusers (model.py: the protocol; loading.py: the folder;
settings.py: DiffSplat's own numbers; attention.py: the multi-view processor; cameras.py: its views
and Plücker rays; splatter.py: splatter images to Gaussians; frames.py: its world to the engine's)."""
