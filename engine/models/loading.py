"""What every model's loader does around diffusers' and transformers' ``from_pretrained``."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def quiet_loading():
    """No "Loading weights" bars from transformers and diffusers on the job's output while loading."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    was = transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            transformers_logging.enable_progress_bar()
        if was[1]:
            diffusers_logging.enable_progress_bar()
