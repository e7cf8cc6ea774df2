"""Validate blender_manifest.toml with Blender's own extension tool, shipped inside the bpy wheel.

The tool is ``bpy/<version>/scripts/addons_core/bl_pkg/cli/blender_ext.py``; it runs on plain Python
(no Blender binary, no ``import bpy``). Tags are checked against Blender's own list, as Blender does.
"""
from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import pytest

# One place finds Blender's tool: the build script uses the same helpers.
from scripts.build_extension import BLENDER_EXT, ROOT, VALID_TAGS, blender_ext, build_lite


def validate(path: Path):
    return blender_ext("validate", "--valid-tags", VALID_TAGS, path)


def test_tool_and_tags_found():
    assert BLENDER_EXT.is_file()
    assert VALID_TAGS.is_file()


def test_repository_manifest_is_valid():
    result = validate(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def _mutate(text: str, field: str, new_line: str | None) -> str:
    """Replace (or, with ``None``, delete) the top-level ``field = ...`` line."""
    pattern = re.compile(rf"^{re.escape(field)}\s*=.*$", re.MULTILINE)
    assert pattern.search(text), f"manifest has no {field!r} line"
    return pattern.sub("" if new_line is None else new_line, text, count=1)


BAD_MANIFESTS = {
    "tagline_trailing_period": ("tagline", 'tagline = "Generate 3D assets and align them to 2D rewards."', "tagline"),
    "tagline_too_long": ("tagline", 'tagline = "' + "x" * 65 + '"', "tagline"),
    "missing_id": ("id", None, "id"),
    "bad_version": ("version", 'version = "0.1"', "version"),
    "unknown_tag": ("tags", 'tags = ["3D View", "Diffusion"]', "tag"),
    "files_reason_trailing_period": ("files", 'files = "Reads and writes generated meshes."', "files"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_fails_validation(case, tmp_path):
    field, new_line, expected_in_error = BAD_MANIFESTS[case]
    pkg = tmp_path / "nabla_r2d3"
    pkg.mkdir()
    shutil.copy(ROOT / "__init__.py", pkg / "__init__.py")
    text = (ROOT / "blender_manifest.toml").read_text(encoding="utf-8")
    (pkg / "blender_manifest.toml").write_text(_mutate(text, field, new_line), encoding="utf-8")

    result = validate(pkg)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{case}: validation unexpectedly passed:\n{output}"
    assert expected_in_error in output, output


def test_control_copy_of_manifest_passes(tmp_path):
    """The copy procedure of the failing cases, unmutated, passes: their failures come from the mutation."""
    pkg = tmp_path / "nabla_r2d3"
    pkg.mkdir()
    shutil.copy(ROOT / "__init__.py", pkg / "__init__.py")
    shutil.copy(ROOT / "blender_manifest.toml", pkg / "blender_manifest.toml")
    result = validate(pkg)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_packages_addon_and_excludes_dev_files(tmp_path):
    archive = build_lite(tmp_path)
    names = zipfile.ZipFile(archive).namelist()
    for required in ("blender_manifest.toml", "__init__.py", "operators/__init__.py",
                     "panels/__init__.py", "engine/__init__.py", "engine/data/grammar.py",
                     "engine/models/embedded/weights/model.safetensors",
                     "engine/models/embedded/weights/config.json", "requirements.txt"):
        assert required in names, required
    # The whole engine ships (the worker runs it), weights of every model and reward included.
    engine_files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "engine").rglob("*") if p.is_file()}
    engine_files = {f for f in engine_files  # less what the patterns drop: caches, hidden files
                    if "__pycache__" not in f.split("/") and not any(part.startswith(".") for part in f.split("/"))}
    assert engine_files <= set(names), sorted(engine_files - set(names))
    excluded_prefixes = (".venv/", ".git/", ".ci/", ".pytest_cache/", "tests/", "scripts/", "docs/", "out/",
                         "runs/", "dist/", "wheels/")
    leaked = [n for n in names if n.startswith(excluded_prefixes) or "__pycache__/" in n or n.endswith(".pyc")]
    assert not leaked, leaked
