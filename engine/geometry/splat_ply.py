"""Gaussian splats as the standard 3D Gaussian Splatting PLY, the file splat viewers and Blender's
Gaussian-splat add-ons open.

Layout (Kerbl et al.'s training code writes the same): ``format binary_little_endian 1.0``, one
``vertex`` element, every property ``float``, in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

* ``f_dc_*``: the colour as a degree-0 spherical-harmonic coefficient, ``(rgb - 0.5) / C0`` with
  ``C0 = 0.28209479177387814`` (viewers draw ``0.5 + C0 * f_dc``, clamped); the colour is the
  engine's sRGB, which is what 3DGS viewers display (they fit and show image colours unconverted).
  No ``f_rest_*``: the engine's splats have view-independent colour (SH degree 0).
* ``opacity``: the logit of the opacity (viewers apply a sigmoid); ``scale_*``: natural logs of the
  standard deviations (viewers apply exp); ``rot_*``: the quaternion (w, x, y, z), as stored.
* ``nx ny nz``: zeros, as 3DGS writes them (readers expect the properties, not their values).

Frame: the engine's, Z up, world units, exactly as the mesh ``.ply`` files (engine/geometry/mesh.py:
"Z up, what Blender's PLY importer assumes"). Blender's splat add-ons place a file's coordinates as
Blender coordinates, so a ``.3dgs.ply`` and the mesh written beside it import upright and on top of
each other; 3DGS captures have no fixed up axis, so viewers let the user turn the scene anyway.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write
from ..render.types import GaussianSplats

SH_C0 = 0.28209479177387814  # the degree-0 real spherical harmonic, 1 / (2 sqrt(pi))
PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
# Logits of 1e-6 and 1 - 1e-6 are +-13.8: finite, and a viewer's sigmoid gives back 1e-6 / 1 - 1e-6.
OPACITY_EPS = 1e-6
MIN_SCALE = 1e-10  # log(1e-10) = -23: an infinitely thin axis stays finite
SUFFIX = ".3dgs.ply"

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def write_3dgs_ply(path: str | os.PathLike, splats: GaussianSplats) -> Path:
    """Write one asset (a batch of 1) as a 3DGS PLY at ``path``, atomically with the umask's mode.

    Opacities are clamped to [1e-6, 1 - 1e-6] before the logit and scales to >= 1e-10 before the
    log; colours to [0, 1]. Raises ValueError for a batch other than 1 or non-finite values.
    """
    if len(splats) != 1:
        raise ValueError(f"a 3DGS PLY holds one asset; got a batch of {len(splats)}")
    arrays = {}
    for name in ("means", "quats", "scales", "opacities", "colors"):
        value = getattr(splats, name)[0].detach().to("cpu", torch.float64).numpy()
        if not np.isfinite(value).all():
            raise ValueError(f"GaussianSplats.{name} holds non-finite values")
        arrays[name] = value
    n = len(arrays["means"])
    opacity = np.clip(arrays["opacities"], OPACITY_EPS, 1.0 - OPACITY_EPS)
    record = np.zeros(n, dtype=[(p, "<f4") for p in PROPERTIES])
    for axis, name in enumerate("xyz"):
        record[name] = arrays["means"][:, axis]
    for c in range(3):
        record[f"f_dc_{c}"] = (np.clip(arrays["colors"][:, c], 0.0, 1.0) - 0.5) / SH_C0
        record[f"scale_{c}"] = np.log(np.maximum(np.abs(arrays["scales"][:, c]), MIN_SCALE))
    record["opacity"] = np.log(opacity) - np.log1p(-opacity)
    for k in range(4):
        record[f"rot_{k}"] = arrays["quats"][:, k]
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {n}",
                        *(f"property float {p}" for p in PROPERTIES), "end_header"]) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(record.tobytes())

    return atomic_write(path, write)


def _parse_header(data: bytes, path) -> tuple[int, list[tuple[str, int, np.dtype]]]:
    """(offset of the body, [(element name, count, record dtype)]) of a binary little-endian PLY."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path} is not a PLY file")
    body = data.index(b"\n", end) + 1
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    elements: list[tuple[str, int, list]] = []
    fmt = None
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else None
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                raise ValueError(f"{path}: list property {words[-1]!r} in element {elements[-1][0]!r} is not a 3DGS layout")
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise ValueError(f"{path}: unreadable PLY property line {line!r}")
            elements[-1][2].append((words[2], "<" + _PLY_TYPES[words[1]]))
        else:
            raise ValueError(f"{path}: unreadable PLY header line {line!r}")
    if fmt != "binary_little_endian":
        raise ValueError(f"{path}: a 3DGS PLY is binary_little_endian, this one is {fmt}")
    return body, [(name, count, np.dtype(props)) for name, count, props in elements]


def read_3dgs_ply(path: str | os.PathLike) -> GaussianSplats:
    """Read a 3DGS PLY (this module's, or any with the standard properties; extra ones such as
    ``f_rest_*`` are ignored) into one asset's :class:`GaussianSplats` (float32, CPU, file frame).

    Colours are ``clamp(0.5 + C0 * f_dc, 0, 1)`` (the view-independent part), opacities the sigmoid
    of the stored logit, scales the exp of the stored logs, quaternions as stored.
    """
    path = Path(path)
    data = path.read_bytes()
    offset, elements = _parse_header(data, path)
    vertex = None
    for name, count, dtype in elements:
        if name == "vertex":
            vertex = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            break
        offset += count * dtype.itemsize
    if vertex is None:
        raise ValueError(f"{path} has no vertex element")
    missing = [p for p in PROPERTIES if p not in vertex.dtype.names and p not in ("nx", "ny", "nz")]
    if missing:
        raise ValueError(f"{path} is not a 3D Gaussian Splatting PLY: no {', '.join(missing)}")
    col = lambda *names: np.stack([vertex[n].astype(np.float64) for n in names], 1)  # noqa: E731
    means = col("x", "y", "z")
    colours = np.clip(0.5 + SH_C0 * col("f_dc_0", "f_dc_1", "f_dc_2"), 0.0, 1.0)
    with np.errstate(over="ignore"):  # a huge logit or log-scale: opacity 0 / infinite scale, refused below
        opacities = 1.0 / (1.0 + np.exp(-vertex["opacity"].astype(np.float64)))
        scales = np.exp(col("scale_0", "scale_1", "scale_2"))
    quats = col("rot_0", "rot_1", "rot_2", "rot_3")
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]  # noqa: E731
    splats = GaussianSplats(as_t(means), as_t(quats), as_t(scales), as_t(opacities), as_t(colours))
    for name in ("means", "quats", "scales", "opacities", "colors"):
        if not bool(torch.isfinite(getattr(splats, name)).all()):
            raise ValueError(f"{path}: non-finite {name}")
    return splats

