"""Package the extension as users get it, install it into a fresh Blender user directory and run it.

Blender's own tools do each step: ``blender_ext.py build`` (through scripts/build_extension.py),
``bpy.ops.extensions.package_install_files`` (what Preferences > Get Extensions > Install from Disk
runs; with ``enable_on_install`` it also enables the add-on and installs its wheels) and
``addon_disable``. Each Blender session is a subprocess whose BLENDER_USER_* variables point at
temporary folders, so neither this process's bpy state nor the user's own Blender configuration is
touched. No network: the wheels are made here.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from scripts import build_extension as bx

ROOT = bx.ROOT
MANIFEST = bx.read_manifest()
REPO = "user_default"  # the local repository every fresh Blender user directory has
MODULE = f"bl_ext.{REPO}.{MANIFEST['id']}"
WEIGHTS = Path("engine/models/embedded/weights")


# --------------------------------------------------------------------------- helpers


def make_wheel(folder: Path, project: str, version: str, tag: str, body: str = "", requires=()) -> Path:
    """Write a minimal valid wheel ``<project>-<version>-<tag>.whl`` holding package ``project``."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{project}-{version}.dist-info"
    files = {
        f"{project}/__init__.py": body,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    path = folder / f"{project}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def blender_session(user_root: Path, script: str, timeout: float = 120) -> dict:
    """Run ``script`` with the venv's bpy in a fresh Blender user directory under ``user_root``.

    The script sets ``result`` (JSON-able); it is returned. Blender keeps extensions in
    ``user_root/resources/extensions/<repo>/<id>``.
    """
    user_root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        BLENDER_USER_RESOURCES=str(user_root / "resources"),
        BLENDER_USER_CONFIG=str(user_root / "config"),
        BLENDER_USER_SCRIPTS=str(user_root / "scripts"),
    )
    code = "import json, sys, bpy\n" + textwrap.dedent(script) + "\nprint('RESULT ' + json.dumps(result))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=user_root)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, output
    return json.loads(lines[-1][len("RESULT "):])


INSTALL_ENABLE_DISABLE = """
def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)

def state():
    panels = {c for c in subclasses(bpy.types.Panel) if c.is_registered and c.__module__.startswith(module)}
    return {
        "enabled": module in bpy.context.preferences.addons,
        "sidebar_panels": sorted(c.__name__ for c in panels if (c.bl_space_type, c.bl_region_type,
                                 getattr(c, "bl_category", "")) == ("VIEW_3D", "UI", "Nabla-R2D3")),
        "operators": sorted(dir(bpy.ops.nabla_r2d3)),
    }

before = state()
status = bpy.ops.extensions.package_install_files(filepath=archive, repo="user_default", enable_on_install=True)
enabled = state()
addon = bpy.context.preferences.addons.get(module)
enabled["has_preferences"] = addon is not None and addon.preferences is not None
enabled["file"] = sys.modules[module].__file__ if module in sys.modules else None
PROBE
bpy.ops.preferences.addon_disable(module=module)
result = {"status": sorted(status), "before": before, "enabled": enabled, "disabled": state()}
"""


def install_enable_disable(user_root: Path, archive: Path, probe: str = "") -> dict:
    """Install ``archive`` into a fresh user dir with ``enable_on_install``, then disable it.

    ``probe`` (code run while the add-on is enabled) may add keys to ``enabled``.
    """
    script = f"module, archive = {MODULE!r}, {str(archive)!r}\n" + INSTALL_ENABLE_DISABLE
    return blender_session(user_root, script.replace("PROBE\n", textwrap.dedent(probe)))


def assert_enabled_then_disabled(report: dict, ext_dir: Path) -> None:
    nothing = {"enabled": False, "sidebar_panels": [], "operators": []}
    assert report["status"] == ["FINISHED"]
    assert report["before"] == nothing
    enabled = report["enabled"]
    # its panels in the 3D viewport's sidebar tab, its operators and its preferences are registered
    assert enabled["enabled"] and enabled["sidebar_panels"] and enabled["operators"], enabled
    assert enabled["has_preferences"], enabled
    # the add-on Blender imported is the installed copy, not this checkout
    assert Path(enabled["file"]).resolve() == (ext_dir / "__init__.py").resolve()
    assert report["disabled"] == nothing


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under ``folder``, bytecode caches left out."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


# --------------------------------------------------------------------------- lite package


@pytest.fixture(scope="module")
def lite_zip(tmp_path_factory) -> Path:
    return bx.build_lite(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(lite_zip, tmp_path_factory):
    """The lite package installed, enabled and disabled again in a fresh user dir: (report, extension dir)."""
    user_root = tmp_path_factory.mktemp("blender_user")
    report = install_enable_disable(user_root, lite_zip)
    return report, user_root / "resources" / "extensions" / REPO / MANIFEST["id"]


def test_lite_package_installs_enables_and_disables(installed):
    report, ext_dir = installed
    assert_enabled_then_disabled(report, ext_dir)
    for name in ("model.safetensors", "config.json"):
        assert sha256(ext_dir / WEIGHTS / name) == sha256(ROOT / WEIGHTS / name), name
    assert not (ext_dir / "tests").exists() and not (ext_dir / "wheels").exists()


def test_installed_engine_runs_a_job_with_the_engine_python(installed, tmp_path):
    """The documented route to torch: the worker runs on another Python (here the dev venv's, what
    `bash run.sh` creates) from the installed extension folder, with the packaged engine and weights."""
    _, ext_dir = installed
    before = files_under(ext_dir)
    out_dir = tmp_path / "generated"
    script = textwrap.dedent(
        f"""
        import json, sys
        from engine.worker import ENGINE_ROOT, run_job_sync
        data = run_job_sync(sys.executable, "generate",
                            {{"prompt": "a red cube", "out_dir": {str(out_dir)!r}, "steps": 4}}, timeout=240)
        print("RESULT " + json.dumps({{"root": str(ENGINE_ROOT), "data": data}}))
        """
    )
    # Blender's side: the client imports the engine from the extension folder, torch stays in the worker.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ext_dir)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1][len("RESULT "):])
    assert Path(result["root"]).resolve() == ext_dir.resolve()
    (asset,) = result["data"]["assets"]
    glb = Path(result["data"]["out_dir"]) / asset["files"]["glb"]
    assert glb.parent == out_dir and glb.stat().st_size > 0
    assert asset["faces"] > 0
    assert files_under(ext_dir) == before, "the engine wrote inside the installed extension"


# --------------------------------------------------------------------------- full packages


@pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"),
                    reason="installs the linux-x64 package on this machine")
def test_full_build_splits_wheels_by_platform_and_blender_installs_them(tmp_path):
    wheels = tmp_path / "wheels"
    probe = "from nabla_native import PLATFORM\n"
    make_wheel(wheels / "linux-x64", "nabla_probe", "1.0.0", "py3-none-any", probe, ["nabla_native"])
    make_wheel(wheels / "linux-x64", "nabla_native", "1.0.0", "cp311-cp311-manylinux_2_28_x86_64", "PLATFORM = 'linux'\n")
    make_wheel(wheels / "linux-x64", "numpy", "1.26.4", "cp311-cp311-manylinux_2_28_x86_64")  # Blender has numpy
    make_wheel(wheels / "windows-x64", "nabla_probe", "1.0.0", "py3-none-any", probe, ["nabla_native"])
    make_wheel(wheels / "windows-x64", "nabla_native", "1.0.0", "cp311-cp311-win_amd64", "PLATFORM = 'windows'\n")
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_extension.py"), "build", "--full",
         "--platform", "linux-x64", "--platform", "windows-x64", "--wheels", str(wheels), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stem = f"{MANIFEST['id']}-{MANIFEST['version']}"
    expected = {
        "linux_x64": ["nabla_native-1.0.0-cp311-cp311-manylinux_2_28_x86_64.whl", "nabla_probe-1.0.0-py3-none-any.whl"],
        "windows_x64": ["nabla_native-1.0.0-cp311-cp311-win_amd64.whl", "nabla_probe-1.0.0-py3-none-any.whl"],
    }
    assert sorted(p.name for p in out.glob("*.zip")) == sorted(f"{stem}-{p}.zip" for p in expected)
    for suffix, names in expected.items():
        with zipfile.ZipFile(out / f"{stem}-{suffix}.zip") as archive:
            packed = archive.namelist()
            manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
        assert sorted(n for n in packed if n.endswith(".whl")) == [f"wheels/{n}" for n in names]
        assert manifest["platforms"] == [suffix.replace("_", "-")]
        assert manifest["wheels"] == [f"./wheels/{n}" for n in names]
        assert manifest["blender_version_max"] == bx.FULL_BUILD_BLENDER_MAX
        assert str(WEIGHTS / "model.safetensors") in packed

    # The Windows package is refused here; the Linux one installs and Blender unpacks its wheels.
    user_root = tmp_path / "user"
    refused = blender_session(user_root, f"""
        bpy.ops.extensions.package_install_files(filepath={str(out / f"{stem}-windows_x64.zip")!r},
                                                 repo="user_default", enable_on_install=True)
        result = {{"enabled": {MODULE!r} in bpy.context.preferences.addons}}
    """)
    assert refused == {"enabled": False}
    assert not (user_root / "resources" / "extensions" / REPO / MANIFEST["id"]).exists()
    probe_wheels = """
        import nabla_probe
        enabled["wheel"] = [nabla_probe.PLATFORM, nabla_probe.__file__]
    """
    report = install_enable_disable(user_root, out / f"{stem}-linux_x64.zip", probe_wheels)
    assert_enabled_then_disabled(report, user_root / "resources" / "extensions" / REPO / MANIFEST["id"])
    built_for, module_file = report["enabled"]["wheel"]
    assert built_for == "linux"
    site = user_root / "resources" / "extensions" / ".local" / "lib" / f"python{bx.PYTHON_VERSION}" / "site-packages"
    assert Path(module_file).parent.parent == site
    assert not list(site.glob("numpy*")), "Blender's own numpy must not be shadowed by a bundled one"


def test_full_build_without_fetched_wheels_says_how_to_fetch(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_extension.py"), "build", "--full", "--platform", "linux-x64",
         "--wheels", str(tmp_path / "wheels"), "--out", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "scripts/build_extension.py fetch --platform linux-x64" in proc.stderr
    assert not (tmp_path / "dist").exists()


def test_wheel_for_another_platform_is_reported_not_dropped(tmp_path):
    make_wheel(tmp_path / "wheels" / "linux-x64", "nabla_native", "1.0.0", "cp311-cp311-win_amd64")
    with pytest.raises(bx.BuildError, match=r"wheels not for linux-x64 .*nabla_native-1.0.0-cp311-cp311-win_amd64"):
        bx.build_full(tmp_path / "dist", ["linux-x64"], tmp_path / "wheels")
    assert not list((tmp_path / "dist").glob("*.zip"))


def test_wheels_of_two_versions_of_one_project_are_refused(tmp_path):
    make_wheel(tmp_path / "linux-x64", "nabla_probe", "1.0.0", "py3-none-any")
    make_wheel(tmp_path / "linux-x64", "nabla_probe", "1.1.0", "py3-none-any")
    with pytest.raises(bx.BuildError, match="several wheels of one project"):
        bx.select_wheels("linux-x64", tmp_path)


def test_full_manifest_refuses_keys_it_adds():
    text = (ROOT / "blender_manifest.toml").read_text(encoding="utf-8")
    added = tomllib.loads(bx.full_manifest(text, "linux-x64", ["./wheels/a-1.0-py3-none-any.whl"]))
    assert added["platforms"] == ["linux-x64"] and added["wheels"] == ["./wheels/a-1.0-py3-none-any.whl"]
    assert added["permissions"] == MANIFEST["permissions"] and added["build"] == MANIFEST["build"]
    with pytest.raises(bx.BuildError, match="wheels"):
        bx.full_manifest(bx.full_manifest(text, "linux-x64", []), "linux-x64", [])


# --------------------------------------------------------------------------- fetching wheels


def test_fetch_downloads_dependencies_for_the_platform_and_replaces_old_wheels(tmp_path):
    index = tmp_path / "index"  # a local find-links folder stands in for PyPI
    make_wheel(index, "nabla_probe", "1.0.0", "py3-none-any", requires=["nabla_native"])
    make_wheel(index, "nabla_native", "1.0.0", "cp311-cp311-manylinux_2_28_x86_64")
    make_wheel(index, "nabla_native", "1.0.0", "cp311-cp311-win_amd64")
    wheels = tmp_path / "wheels"
    stale = make_wheel(wheels / "linux-x64", "nabla_probe", "0.9.0", "py3-none-any")
    offline = ("--no-index", "--find-links", str(index))

    got = bx.fetch("linux-x64", wheels, requirements=["nabla_probe==1.0.0"], torch_index="", pip_args=offline)
    assert [p.name for p in got] == ["nabla_native-1.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                                      "nabla_probe-1.0.0-py3-none-any.whl"]
    assert sorted(p.name for p in (wheels / "linux-x64").iterdir()) == [p.name for p in got]
    assert not stale.exists() and sorted(wheels.iterdir()) == [wheels / "linux-x64"]

    with pytest.raises(bx.BuildError, match="pip download for linux-x64 failed"):
        bx.fetch("linux-x64", wheels, requirements=["nabla_missing==1.0"], torch_index="", pip_args=offline)
    assert sorted(p.name for p in (wheels / "linux-x64").iterdir()) == [p.name for p in got], "kept on failure"
    assert sorted(wheels.iterdir()) == [wheels / "linux-x64"]


def test_runtime_requirements_are_the_exact_pins_without_dev_tools(tmp_path):
    pins = bx.runtime_requirements()
    names = {canonicalize_name(p.split("==")[0]) for p in pins}
    assert "torch" in names and not names & bx.DEV_ONLY
    assert all("==" in p for p in pins)
    loose = tmp_path / "requirements.txt"
    loose.write_text("# comment\ntorch==2.13.0\ntrimesh>=4\n", encoding="utf-8")
    with pytest.raises(bx.BuildError, match=r"requirements.txt:3: 'trimesh>=4' is not an exact pin"):
        bx.runtime_requirements(loose)


# Modules Blender's Python has built in (no distribution of their own; the bpy wheel has them too).
BLENDER_BUILTIN_MODULES = {"bpy", "mathutils", "bmesh", "bpy_extras", "gpu", "gpu_extras", "aud", "bl_math", "idprop"}
# Optional accelerators the engine imports lazily, inside a try, only where the user installed them:
# gsplat is CUDA-only and compiles at first use, so it is never bundled (engine/render/splats.py falls
# back to its own torch rasteriser without it).
OPTIONAL_CUDA_MODULES = {"gsplat"}


def _third_party_imports(folder: Path) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - BLENDER_BUILTIN_MODULES - OPTIONAL_CUDA_MODULES - {"engine", "__future__"}


def test_full_build_bundles_everything_the_engine_imports():
    """Each third-party module the engine imports comes from a runtime requirement (or what it needs),
    or from Blender itself: a new dependency missing from requirements.txt fails here, not on a user's machine."""
    bundled = bx.dependency_closure([p.split("==")[0] for p in bx.runtime_requirements()])
    available = bundled | bx.blender_provided()
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(_third_party_imports(ROOT / "engine")):
        owners = {canonicalize_name(d) for d in dists.get(module, [])}
        if not owners & available:
            missing[module] = sorted(owners) or "not installed"
    assert not missing, missing
