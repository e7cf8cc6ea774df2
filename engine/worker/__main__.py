"""``python -m engine.worker``: run the background worker (see engine/worker/server.py)."""
import os
import sys

from .server import main

code = main()
sys.stderr.flush()
# Skip interpreter teardown: with torch and diffusers loaded it takes about 2 s, which a client's
# stop() (Blender quitting, disabling the add-on) would wait for. Every output file is already
# written and closed (atomic renames), and the protocol stream is unbuffered.
os._exit(code)
