"""Validate blender_manifest.toml with Blender's own extension tool, shipped inside the bpy wheel.

The tool is ``bpy/<version>/scripts/addons_core/bl_pkg/cli/blender_ext.py``; it runs on plain Python
(no Blender binary, no ``import bpy``). Tags are checked against Blender's own list, as Blender does.
"""
from __future__ import annotations

import hashlib
import posixpath
import re
import shutil
import tomllib
import zipfile
from pathlib import Path
from urllib.parse import unquote

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
                     "panels/__init__.py", "engine/__init__.py", "engine/models/embedded/grammar.py",
                     "engine/models/embedded/weights/model.safetensors",
                     "engine/models/embedded/weights/config.json", "requirements.txt"):
        assert required in names, required
    # The whole engine ships (the worker runs it), weights of every model and reward included.
    engine_files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "engine").rglob("*") if p.is_file()}
    engine_files = {f for f in engine_files  # less what the patterns drop: caches, hidden files
                    if "__pycache__" not in f.split("/") and not any(part.startswith(".") for part in f.split("/"))}
    assert engine_files <= set(names), sorted(engine_files - set(names))
    excluded_prefixes = (".venv/", ".git/", ".ci/", ".pytest_cache/", "tests/", "scripts/", "out/",
                         "runs/", "dist/", "wheels/")
    leaked = [n for n in names if n.startswith(excluded_prefixes) or "__pycache__/" in n or n.endswith(".pyc")]
    assert not leaked, leaked


@pytest.fixture(scope="module")
def lite_archive(tmp_path_factory) -> Path:
    return build_lite(tmp_path_factory.mktemp("dist"))


# An inline Markdown link or image: [text](target) / ![alt](target "title"); the target has no spaces.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)  # links inside code are not links


def relative_links(markdown: str) -> list[str]:
    """The targets of a Markdown text's links that point at files (not URLs, not same-page anchors)."""
    text = CODE.sub("", markdown)
    targets = MARKDOWN_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [t for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_links_finds_links_and_images_but_not_urls_or_code():
    text = ("See [a](docs/a.md), ![b](images/b.png \"B\"), [c](https://x.org/c.md), [d](#top), "
            "`[e](not/a/link.md)` and [f](../f.md#part).\n[g]: docs/g.md\n```\n[h](code.md)\n```\n")
    assert relative_links(text) == ["docs/a.md", "images/b.png", "../f.md#part", "docs/g.md"]


def test_packaged_markdown_links_resolve_inside_the_package(lite_archive):
    """The installed README linked to docs/ the package left out: every link was a dead end."""
    with zipfile.ZipFile(lite_archive) as archive:
        names = set(archive.namelist())
        folders = {n.rsplit("/", 1)[0] + "/" for n in names if "/" in n}
        broken = {}
        for doc in sorted(n for n in names if n.endswith(".md")):
            base = posixpath.dirname(doc)
            for target in relative_links(archive.read(doc).decode("utf-8")):
                path = posixpath.normpath(posixpath.join(base, unquote(target.split("#", 1)[0].split("?", 1)[0])))
                inside = not path.startswith("../") and path != ".."
                if not inside or not (path in names or path.rstrip("/") + "/" in folders):
                    broken.setdefault(doc, []).append(target)
    assert "README.md" in names
    assert not broken, broken


# The FSF's gpl-3.0.txt verbatim (md5 1ebbd3e34237af26da5dc08a4e440464, as Debian ships it in
# /usr/share/common-licenses/GPL-3), so an edited or paraphrased LICENSE fails.
GPL3_SHA256 = "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986"


def test_package_carries_the_gpl_text_its_manifest_names(lite_archive):
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text(encoding="utf-8"))
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    with zipfile.ZipFile(lite_archive) as archive:
        licence = archive.read("LICENSE").decode("utf-8")
    assert licence == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in licence and "Version 3, 29 June 2007" in licence
    assert "END OF TERMS AND CONDITIONS" in licence and "How to Apply These Terms to Your New Programs" in licence
    assert hashlib.sha256(licence.encode("utf-8")).hexdigest() == GPL3_SHA256


def test_packaging_doc_gives_the_lite_package_size_measured_now(lite_archive):
    """docs/packaging.md said 7.0 MB (6,954,347 bytes) long after the package had grown to 7.9 MB."""
    doc = (ROOT / "docs" / "packaging.md").read_text(encoding="utf-8")
    stated = re.search(r"scripts/build_extension.py build` \(([\d,]+) bytes", doc)
    assert stated, "docs/packaging.md no longer states the lite package's size in bytes"
    stated_bytes = int(stated.group(1).replace(",", ""))
    actual = lite_archive.stat().st_size
    # 5%: the weights and docs dominate; small code changes must not make this test churn
    assert abs(actual - stated_bytes) <= 0.05 * actual, (stated_bytes, actual)
    row = re.search(r"\| \*\*lite\*\* .*?\| ([\d.]+) MB \|", doc)
    assert row and float(row.group(1)) == round(stated_bytes / 1e6, 1), "the table and the text disagree"
