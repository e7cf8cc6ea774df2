"""User reward plugins: a Python file that defines ``reward(...)``, loaded only when named.

A plugin is a plain ``.py`` file anywhere on disk. It is imported (with ``importlib``, under a unique
module name, so two plugins with the same file name do not collide) only when a
:class:`PluginReward` is built from it; nothing is imported from it before. Running a plugin runs
its code with the user's rights: load only files you trust.

The plugin defines::

    def reward(images, alpha, depth, normal, prompts):
        ...
        return scores

Every image argument is a float32 torch tensor of shape (B, V, C, R, R): B assets, V views, C
channels, R x R pixels, on the renderer's device, part of the autograd graph:

- ``images`` (B, V, 3, R, R): shaded colour in [0, 1], composited over the renderer's background
  (white by default), exactly what an image reward model would see.
- ``alpha`` (B, V, 1, R, R): coverage in [0, 1] (1 on the object, 0 on background).
- ``depth`` (B, V, 1, R, R): distance from the camera along each pixel's unit ray, world units
  (the scene is the cube [-1, 1]^3); 0 on background.
- ``normal`` (B, V, 3, R, R): world-space unit normals (Z up) composited by alpha; 0 on background.
- ``prompts``: list of B strings, the prompt of each asset.

If the function's signature names them, it also receives ``albedo`` (B, V, 3, R, R; unshaded
colour premultiplied by alpha) and ``cameras`` (``engine.render.Cameras``, V views: azimuth,
elevation in degrees, radius, fov). A ``**kwargs`` parameter receives both.

It returns a float tensor of shape (B, V) (one score per view, averaged over views by the engine)
or (B,) (one score per asset). Higher is better. Every value must be finite. To train with the
reward's gradient (Nabla-R2D3, ReFL, DRaFT), compute it with differentiable torch operations on the
inputs; a plugin that cannot (it calls numpy, a non-differentiable library, ``.detach()``...)
should set ``DIFFERENTIABLE = False`` so that only gradient-free methods (DDPO) use it.

Optional module attributes: ``NAME`` (str, shown in logs; default: the file name) and
``DIFFERENTIABLE`` (bool, default True). A worked example: ``docs/examples/reward_plugin.py``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import os
import re
import sys
import traceback
from pathlib import Path

import torch

from ..render.types import RenderOutput
from .base import Reward
from .errors import RewardConfigError

_counter = itertools.count()


class RewardPluginError(RewardConfigError):
    """A reward plugin file is missing, cannot be imported, or its ``reward`` misbehaves."""


def load_plugin_module(path: str | os.PathLike):
    """Import the Python file at ``path`` under a fresh unique module name and return the module."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RewardPluginError(f"reward plugin file not found: {path}")
    if path.suffix != ".py":
        raise RewardPluginError(f"reward plugin must be a .py file, got {path}")
    resolved = path.resolve()
    stem = re.sub(r"\W", "_", resolved.stem)
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    module_name = f"engine_reward_plugin_{stem}_{digest}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise RewardPluginError(f"cannot import reward plugin {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs so that dataclasses, pickling and relative lookups inside it work.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, SystemExit):  # sys.exit(0) here once ended align with exit 0 and no word
            raise RewardPluginError(f"reward plugin {path} called sys.exit({exc.code!r}) while being imported; "
                                    "a plugin must define reward(...), not end the process") from None
        raise RewardPluginError(f"reward plugin {path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


class PluginReward(Reward):
    """A reward defined by a user's Python file; see the module docstring for the contract."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        module = load_plugin_module(self.path)
        fn = getattr(module, "reward", None)
        if not callable(fn):
            raise RewardPluginError(
                f"reward plugin {self.path} defines no function `reward(images, alpha, depth, normal, prompts)`"
            )
        self.fn = fn
        self.module = module
        self.name = str(getattr(module, "NAME", self.path.stem))
        self.differentiable = bool(getattr(module, "DIFFERENTIABLE", True))
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # a C callable without a signature: pass the five and hope
            params = None
        takes_kwargs = params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self._extras = [k for k in ("albedo", "cameras") if params is not None and (takes_kwargs or k in params)]
        # Every plugin is handed depth and normal, so a renderer without them (Cycles) refuses it
        # instead of passing NaN images that it would score quietly.
        self.channels = frozenset({"rgb", "alpha", "depth", "normal"} | ({"albedo"} if "albedo" in self._extras else set()))
        required = ("images", "alpha", "depth", "normal", "prompts")
        missing = [] if takes_kwargs else [k for k in required if k not in params]
        if missing:
            raise RewardPluginError(
                f"reward plugin {self.path}: `reward` must accept the arguments {', '.join(required)}; "
                f"missing {', '.join(missing)}"
            )

    def _where(self, exc: BaseException) -> str:
        """" (at plugin.py:123 in reward)" for the innermost traceback frame in the plugin file, if any."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == self.path.resolve()]
        return f" (at {self.path.name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        b, v = renders.rgb.shape[:2]
        kwargs = dict(images=renders.rgb, alpha=renders.alpha, depth=renders.depth, normal=renders.normal, prompts=list(prompts))
        extras = {"albedo": renders.albedo, "cameras": renders.cameras}
        kwargs.update({k: extras[k] for k in self._extras})
        try:
            out = self.fn(**kwargs)
        except Exception as exc:  # the plugin's own bug: say so, with its file and line, not a traceback
            raise RewardPluginError(f"reward plugin {self.path} raised {type(exc).__name__}: {exc}{self._where(exc)}") from exc
        except SystemExit as exc:
            raise RewardPluginError(f"reward plugin {self.path} called sys.exit({exc.code!r}) in `reward`{self._where(exc)}") from None
        if not isinstance(out, torch.Tensor):
            raise RewardPluginError(
                f"reward plugin {self.path}: `reward` must return a torch.Tensor of shape ({b}, {v}) or ({b},), "
                f"got {type(out).__name__}"
            )
        if not out.is_floating_point():
            raise RewardPluginError(f"reward plugin {self.path}: `reward` returned dtype {out.dtype}; expected a float tensor")
        if tuple(out.shape) == (b,):
            out = out[:, None].expand(b, v)
        elif tuple(out.shape) != (b, v):
            raise RewardPluginError(
                f"reward plugin {self.path}: `reward` returned shape {tuple(out.shape)}; expected ({b}, {v}) "
                f"(assets, views) or ({b},)"
            )
        if not torch.isfinite(out).all():
            raise RewardPluginError(f"reward plugin {self.path}: `reward` returned non-finite values (nan or inf)")
        wants_gradient = torch.is_grad_enabled() and any(t.requires_grad for t in (renders.rgb, renders.alpha, renders.depth))
        if self.differentiable and wants_gradient and not out.requires_grad:
            # Only gradient methods score with autograd on; otherwise torch's own words would be
            # "element 0 of tensors does not require grad", naming neither the plugin nor the fix.
            raise RewardPluginError(
                f"reward plugin {self.path}: `reward` returned scores without a gradient (detached, or computed "
                "outside torch), and this method trains on the reward's gradient; compute it with differentiable "
                "torch operations, or set DIFFERENTIABLE = False in the plugin and use a gradient-free method (ddpo)"
            )
        return out
