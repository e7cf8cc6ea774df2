"""Typed records of the generate job: what it made (:class:`GenerateResult`, one
:class:`GeneratedAsset` per asset) and the worker's preview messages (:class:`PreviewMessage`).

Pure standard library: the engine writes these, and Blender's own Python (which has no torch)
reads them. ``GenerateResult.to_json()`` is the one manifest schema: the ``manifest.json`` the CLI,
the demo, batch mode and the worker write, and (with ``out_dir`` added) the worker's result data::

    {"format": "nabla-r2d3-generate", "version": 1,
     "prompts": ["a red cube"], "seed": 3, "count": 2,        # per prompt: seeds seed .. seed+count-1
     "model": "embedded", "model_path": null,
     "adapter": null | {"path": "/abs/adapter", "weight": 1.0},
     "sampler": {"steps": 20, "guidance": 3.0, "scheduler": "ddim", "eta": 1.0},
     "formats": ["glb"],
     "assets": [{"prompt": "a red cube", "seed": 3, "name": "red_cube_seed3",
                 "files": {"glb": "a_red_cube_seed3.glb"}, "vertices": 1234, "faces": 2460, "gaussians": null}],
     "preview": null | {"file": "preview.png", "renderer": "cycles" | "volume", "columns": 4},
     "extra_files": [],                                       # any other file written, e.g. "gallery.json"
     "timings": {"load_s": .., "sample_s": .., "mesh_s": .., "export_s": .., "preview_s": .., "total_s": ..,
                 "per_asset_s": ..}}

File names are relative to the manifest's folder (a folder can be moved or copied whole); the
worker's result data adds ``"out_dir"`` (absolute) so a client can find them. Reading is strict:
a missing or wrongly typed field is a :class:`RecordError` naming it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MANIFEST_FORMAT = "nabla-r2d3-generate"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
PREVIEW_NAME = "preview.png"
# What a generate job can write per asset: meshes (glb, obj, ply), the Blender layer's mesh arrays
# (npz, engine.geometry.mesh.save_npz) and a splat model's Gaussians (3dgs, written <stem>.3dgs.ply).
MESH_FORMATS = ("glb", "obj", "ply", "npz")
SPLAT_FORMAT = "3dgs"
FORMATS = (*MESH_FORMATS, SPLAT_FORMAT)
# What the Blender add-on asks a worker's generate job for (and the worker's default): the arrays it
# builds each object from, and the GLB the object links to (``nabla_r2d3_glb``).
BLENDER_FORMATS = ("npz", "glb")
PREVIEW_RENDERERS = ("cycles", "volume")
# What a worker preview message shows: a mesh to put in the scene (.npz), an image for the Previews
# panel, or the live reward curve.
PREVIEW_KINDS = ("mesh", "image", "curve")


class RecordError(ValueError):
    """A record that does not follow the schema (the message names the field)."""


def _get(data, key: str, kinds, where: str, nullable: bool = False):
    if not isinstance(data, dict):
        raise RecordError(f"{where} must be a JSON object, got {type(data).__name__}")
    if key not in data:
        raise RecordError(f"{where} has no {key!r}")
    value = data[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise RecordError(f"{where}.{key} must be {_kind_names(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise RecordError(f"{where}.{key} must be {_kind_names(kinds)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(f"{where}.{key} must be finite, got {value!r}")
    return value


def _kind_names(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list",
                        bool: "true or false"}[k] for k in kinds)


def is_relative_inside(value: str) -> bool:
    """Whether ``value`` is a POSIX path relative to a folder that stays inside it: not empty, not
    absolute, no ``..`` and no backslash (job folders travel between systems)."""
    parts = PurePosixPath(value).parts
    return bool(parts) and not PurePosixPath(value).is_absolute() and "\\" not in value and ".." not in parts


def _file_name(value, where: str) -> str:
    """A path relative to the manifest's folder that stays inside it (never ``..`` or absolute)."""
    if not isinstance(value, str) or not value:
        raise RecordError(f"{where} must be a non-empty file name, got {value!r}")
    if not is_relative_inside(value):
        raise RecordError(f"{where} must be a path inside the manifest's folder, got {value!r}")
    return value


@dataclass(frozen=True)
class GeneratedAsset:
    """One asset: its prompt and seed, the object name it gets (GLB node, Blender object), and its
    files by format (names relative to the manifest's folder)."""

    prompt: str
    seed: int
    name: str
    files: dict[str, str]
    vertices: int
    faces: int
    gaussians: int | None = None  # Gaussians in its 3dgs file; None without one

    def path(self, fmt: str, out_dir: str | Path) -> Path:
        """The absolute path of this asset's ``fmt`` file in ``out_dir``; KeyError if it has none."""
        return Path(out_dir) / self.files[fmt]

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "seed": self.seed, "name": self.name, "files": dict(self.files),
                "vertices": self.vertices, "faces": self.faces, "gaussians": self.gaussians}

    @classmethod
    def from_json(cls, data, where: str = "asset") -> "GeneratedAsset":
        files = _get(data, "files", dict, where)
        unknown = sorted(set(files) - set(FORMATS))
        if unknown or not files:
            raise RecordError(f"{where}.files must map formats ({', '.join(FORMATS)}) to file names, got {files!r}")
        return cls(
            prompt=_get(data, "prompt", str, where),
            seed=_get(data, "seed", int, where),
            name=_get(data, "name", str, where),
            files={k: _file_name(v, f"{where}.files.{k}") for k, v in files.items()},
            vertices=_get(data, "vertices", int, where),
            faces=_get(data, "faces", int, where),
            gaussians=_get(data, "gaussians", int, where, nullable=True),
        )


@dataclass(frozen=True)
class AdapterUse:
    """The LoRA adapter a job generated with: its folder (as the job was given it) and blend weight."""

    path: str
    weight: float = 1.0

    def to_json(self) -> dict:
        return {"path": self.path, "weight": self.weight}

    @classmethod
    def from_json(cls, data, where: str = "adapter") -> "AdapterUse":
        return cls(_get(data, "path", str, where), float(_get(data, "weight", (int, float), where)))


@dataclass(frozen=True)
class PreviewSheet:
    """The job's contact sheet: one tile per asset, in the order of ``assets``, ``columns`` wide."""

    file: str
    renderer: str  # PREVIEW_RENDERERS
    columns: int

    def to_json(self) -> dict:
        return {"file": self.file, "renderer": self.renderer, "columns": self.columns}

    @classmethod
    def from_json(cls, data, where: str = "preview") -> "PreviewSheet":
        renderer = _get(data, "renderer", str, where)
        if renderer not in PREVIEW_RENDERERS:
            raise RecordError(f"{where}.renderer must be one of {', '.join(PREVIEW_RENDERERS)}, got {renderer!r}")
        return cls(_file_name(_get(data, "file", str, where), f"{where}.file"), renderer, _get(data, "columns", int, where))


@dataclass
class GenerateResult:
    """What a generate job made: the manifest (see the module docstring for its JSON).

    ``out_dir`` is where its files are; not part of ``manifest.json`` (the manifest's own folder),
    part of the worker's result data.
    """

    prompts: list[str]
    seed: int
    count: int
    model: str
    sampler: dict
    formats: list[str]
    assets: list[GeneratedAsset]
    timings: dict[str, float] = field(default_factory=dict)
    model_path: str | None = None
    adapter: AdapterUse | None = None
    preview: PreviewSheet | None = None
    # every other file the job wrote (e.g. the gallery's gallery.json and gallery/<stem>.png), so that
    # the manifest lists every file in its folder
    extra_files: list[str] = field(default_factory=list)
    out_dir: str | None = None

    def files(self) -> list[str]:
        """Every file the job wrote, relative to ``out_dir``: the manifest, each asset's, the preview,
        the extra files."""
        names = [MANIFEST_NAME] + [f for a in self.assets for f in a.files.values()]
        return names + ([self.preview.file] if self.preview is not None else []) + list(self.extra_files)

    def to_json(self, with_out_dir: bool = False) -> dict:
        data = {
            "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
            "prompts": list(self.prompts), "seed": self.seed, "count": self.count,
            "model": self.model, "model_path": self.model_path,
            "adapter": None if self.adapter is None else self.adapter.to_json(),
            "sampler": dict(self.sampler), "formats": list(self.formats),
            "assets": [a.to_json() for a in self.assets],
            "preview": None if self.preview is None else self.preview.to_json(),
            "extra_files": list(self.extra_files),
            "timings": dict(self.timings),
        }
        if with_out_dir:
            data["out_dir"] = self.out_dir
        return data

    @classmethod
    def from_json(cls, data, out_dir: str | Path | None = None) -> "GenerateResult":
        """Read a manifest (or the worker's result data); ``out_dir`` overrides the data's own."""
        where = "manifest"
        if _get(data, "format", str, where) != MANIFEST_FORMAT:
            raise RecordError(f"{where}.format must be {MANIFEST_FORMAT!r}, got {data['format']!r}")
        if _get(data, "version", int, where) != MANIFEST_VERSION:
            raise RecordError(f"{where}.version {data['version']} is not {MANIFEST_VERSION}: written by another "
                              "version of the add-on")
        prompts = _get(data, "prompts", list, where)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise RecordError(f"{where}.prompts must be a non-empty list of strings, got {prompts!r}")
        formats = _get(data, "formats", list, where)
        if not formats or any(f not in FORMATS for f in formats):
            raise RecordError(f"{where}.formats must list formats of {', '.join(FORMATS)}, got {formats!r}")
        assets = [GeneratedAsset.from_json(a, f"{where}.assets[{i}]")
                  for i, a in enumerate(_get(data, "assets", list, where))]
        timings = _get(data, "timings", dict, where)
        for key in timings:
            _get(timings, key, (int, float), f"{where}.timings")
        adapter = _get(data, "adapter", dict, where, nullable=True)
        preview = _get(data, "preview", dict, where, nullable=True)
        extra = _get(data, "extra_files", list, where)
        extra = [_file_name(f, f"{where}.extra_files[{i}]") for i, f in enumerate(extra)]
        own_dir = data.get("out_dir")
        if own_dir is not None and not isinstance(own_dir, str):
            raise RecordError(f"{where}.out_dir must be a string, got {own_dir!r}")
        return cls(
            prompts=list(prompts), seed=_get(data, "seed", int, where), count=_get(data, "count", int, where),
            model=_get(data, "model", str, where), sampler=dict(_get(data, "sampler", dict, where)),
            formats=list(formats), assets=assets, timings={k: float(v) for k, v in timings.items()},
            model_path=_get(data, "model_path", str, where, nullable=True),
            adapter=None if adapter is None else AdapterUse.from_json(adapter),
            preview=None if preview is None else PreviewSheet.from_json(preview), extra_files=extra,
            out_dir=str(out_dir) if out_dir is not None else own_dir,
        )

    @classmethod
    def read(cls, path: str | Path) -> "GenerateResult":
        """The manifest at ``path`` (its folder becomes ``out_dir``); RecordError if unreadable or malformed."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RecordError(f"cannot read the generate manifest {path}: {exc}") from None
        return cls.from_json(data, out_dir=path.parent)


def _refuse_constant(name: str):
    # engine.fileio.strict_loads does this; this module imports only the standard library (Blender reads it)
    raise ValueError(f"{name} is not strict JSON")


@dataclass(frozen=True)
class PreviewMessage:
    """A worker ``preview`` message: a file a running job just wrote, what it shows and a label."""

    path: str
    kind: str  # PREVIEW_KINDS
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PREVIEW_KINDS:
            raise RecordError(f"preview kind must be one of {', '.join(PREVIEW_KINDS)}, got {self.kind!r}")

    @staticmethod
    def kind_of(path: str | Path) -> str:
        """The kind a file shows by its suffix when the sender did not say: .npz a mesh, else an image."""
        return "mesh" if str(path).lower().endswith(".npz") else "image"

    def to_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "label": self.label}

    @classmethod
    def from_json(cls, data) -> "PreviewMessage":
        """From a ``preview`` message; one without ``kind`` (an older worker) gets :meth:`kind_of` its path."""
        path = _get(data, "path", str, "preview message")
        kind = data.get("kind") or cls.kind_of(path)
        label = data.get("label", "")
        return cls(path, str(kind), label if isinstance(label, str) else str(label))
