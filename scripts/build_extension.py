"""Build the extension package with Blender's own tool, and fetch the wheels of its per-platform full build.

    .venv/bin/python scripts/build_extension.py build
        lite package, any platform: dist/nabla_r2d3-<version>.zip (add-on, engine, embedded weights;
        torch comes from the "Engine Python" set in the add-on's preferences)
    .venv/bin/python scripts/build_extension.py fetch
        downloads the engine's wheels for this machine's platform, e.g. into wheels/linux-x64/ (needs
        the network; run it on each platform you ship for, see fetch())
    .venv/bin/python scripts/build_extension.py build --full
        one package per fetched platform with its wheels bundled: dist/nabla_r2d3-<version>-linux_x64.zip

Both builds run ``blender_ext.py build`` from the bpy wheel, so the manifest is validated and the
``[build]`` exclusions are applied exactly as Blender's ``extension build`` does. docs/packaging.md
says which package to use and how each gets torch.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform as pyplatform
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "blender_manifest.toml"

# Blender 4.2 to 5.0 bundle Python 3.11: the cp311 wheels of a full build load there only, so the full
# manifest caps the Blender version (blender_version_max is exclusive; Blender 5.1 moved to Python 3.13).
PYTHON_VERSION = "3.11"
FULL_BUILD_BLENDER_MAX = "5.1.0"

# Blender platform -> pip --platform tags. pip widens a macOS tag to older macOS versions itself but
# takes a PEP 600 manylinux tag literally, so every glibc from Blender's minimum (2.28) down is named.
# Only platforms with torch wheels are listed (torch has none for macOS on Intel any more).
PLATFORM_TAGS = {
    "linux-x64": (*(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)),
                  "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"),
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_11_0_arm64",),
}


def this_platform() -> str:
    """This machine's platform in Blender's naming (``linux-x64``, ``macos-arm64``, ``windows-x64``, ...)."""
    system, machine = pyplatform.system().lower(), pyplatform.machine().lower()
    system = {"darwin": "macos"}.get(system, system)
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(machine, machine)
    return f"{system}-{machine}"


# PyPI's Linux torch pulls several GB of CUDA libraries; PyTorch's CPU index has the ~200 MB build.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DEFAULT_TORCH_INDEX = {"linux-x64": TORCH_CPU_INDEX}

# Lines of requirements.txt the engine does not run on: Blender itself is bpy, pytest runs the tests.
DEV_ONLY = frozenset({"bpy", "pytest"})


class BuildError(RuntimeError):
    """A build or fetch step failed; the message says what to do."""


# --------------------------------------------------------------------------- Blender's tool


def blender_scripts_dir() -> Path:
    """``bpy/<version>/scripts`` of the installed bpy wheel, found without importing (initialising) bpy."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the bpy wheel is not installed (it is pinned in requirements.txt; run `bash run.sh test`)")
    bpy_dir = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise BuildError(f"blender_ext.py not found under {bpy_dir}/<version>/scripts/addons_core/bl_pkg/cli/")
    return found[-1].parents[3]


SCRIPTS = blender_scripts_dir()
BLENDER_EXT = SCRIPTS / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
VALID_TAGS = SCRIPTS / "modules" / "_bpy_internal" / "extensions" / "tags.py"


def blender_ext(*args: str | Path) -> subprocess.CompletedProcess:
    """Run ``blender_ext.py`` (plain Python, no Blender binary) and return its completed process."""
    cmd = [sys.executable, str(BLENDER_EXT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _run_build(source_dir: Path, out_dir: Path, *extra: str) -> None:
    result = blender_ext("build", "--source-dir", source_dir, "--output-dir", out_dir,
                         "--valid-tags", VALID_TAGS, *extra)
    if result.returncode != 0:
        raise BuildError(f"blender_ext.py build failed:\n{result.stdout}{result.stderr}")


def read_manifest(source_dir: Path = ROOT) -> dict:
    with open(source_dir / MANIFEST, "rb") as fh:
        return tomllib.load(fh)


# --------------------------------------------------------------------------- requirements


def runtime_requirements(requirements: Path = ROOT / "requirements.txt") -> list[str]:
    """The exactly pinned lines of ``requirements`` the engine runs on (``DEV_ONLY`` dropped), in order."""
    pins = []
    for number, raw in enumerate(requirements.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or req.marker is not None:
            raise BuildError(f"{requirements}:{number}: {line!r} is not an exact pin (name==version); "
                             "the full build bundles exactly what the tests ran with")
        if canonicalize_name(req.name) not in DEV_ONLY:
            pins.append(line)
    return pins


def dependency_closure(names: list[str]) -> set[str]:
    """Canonical names of ``names`` and everything they require, from this environment's installed metadata.

    Extras are not followed (a requirement guarded by ``extra == ...`` is skipped).
    """
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            raise BuildError(f"{name} is not installed in {sys.prefix}; install requirements.txt first") from None
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(canonicalize_name(req.name))
    return seen


def blender_provided() -> frozenset[str]:
    """Projects Blender's own Python already has (what the bpy wheel requires, and their requirements).

    Blender appends the extensions' site-packages after its own, so a bundled copy of these would never
    be imported; the full build leaves them out.
    """
    return frozenset(dependency_closure(["bpy"]))


def wheel_project(wheel: Path | str) -> str:
    """Canonical project name of a wheel file (``Foo_Bar-1.0-py3-none-any.whl`` -> ``foo-bar``)."""
    return canonicalize_name(Path(wheel).name.split("-", 1)[0])


# --------------------------------------------------------------------------- fetch


def fetch(platform: str, wheels_dir: Path = ROOT / "wheels", *, requirements: list[str] | None = None,
          torch_index: str | None = None, pip_args: tuple[str, ...] = ()) -> list[Path]:
    """Download the wheels of ``requirements`` (default: :func:`runtime_requirements`) and all their
    dependencies for ``platform`` and CPython 3.11 into ``wheels_dir/<platform>/``, replacing what was there.

    Binary wheels only. The download goes to a sibling folder first, so a failed fetch leaves the previous
    wheels in place. Returns the wheel files, sorted.

    pip picks wheels by the ``--platform`` tags but evaluates dependency markers (``sys_platform == ...``)
    for the machine it runs on (pip issues #4304, #11664): fetch on a machine of the target platform.
    """
    if platform not in PLATFORM_TAGS:
        raise BuildError(f"unknown platform {platform!r}; supported: {', '.join(PLATFORM_TAGS)}")
    if platform != this_platform():
        print(f"build_extension.py: warning: fetching {platform} wheels on {this_platform()}: pip evaluates "
              f"dependency markers for this machine, so platform-specific dependencies may be missing or "
              f"wrong; fetch on a {platform} machine for a package you ship", file=sys.stderr)
    requirements = runtime_requirements() if requirements is None else requirements
    if torch_index is None:
        torch_index = DEFAULT_TORCH_INDEX.get(platform, "")
    final = wheels_dir / platform
    partial = wheels_dir / f".{platform}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", PYTHON_VERSION, "--dest", str(partial)]
    for tag in PLATFORM_TAGS[platform]:
        cmd += ["--platform", tag]
    if torch_index:
        cmd += ["--extra-index-url", torch_index]
    cmd += [*pip_args, *requirements]
    # pip's own output goes to the terminal: a first fetch is hundreds of MB and shows its progress.
    if subprocess.run(cmd).returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise BuildError(f"pip download for {platform} failed (pip's message is above); the previous wheels are kept")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return sorted(final.glob("*.whl"))


# --------------------------------------------------------------------------- build


def build_lite(out_dir: Path, source_dir: Path = ROOT) -> Path:
    """Build the platform-independent package (no wheels) into ``out_dir``; returns the zip."""
    manifest = read_manifest(source_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _run_build(source_dir, out_dir)
    return out_dir / f"{manifest['id']}-{manifest['version']}.zip"


def select_wheels(platform: str, wheels_dir: Path = ROOT / "wheels") -> list[Path]:
    """The wheels of ``wheels_dir/<platform>/`` a full build bundles: all but those Blender provides."""
    folder = wheels_dir / platform
    found = sorted(folder.glob("*.whl"))
    if not found:
        raise BuildError(f"no wheels for {platform} in {folder}: run "
                         f"`python scripts/build_extension.py fetch --platform {platform}` first")
    provided = blender_provided()
    chosen = [w for w in found if wheel_project(w) not in provided]
    by_project: dict[str, list[str]] = {}
    for wheel in chosen:
        by_project.setdefault(wheel_project(wheel), []).append(wheel.name)
    clashes = {p: names for p, names in by_project.items() if len(names) > 1}
    if clashes:
        raise BuildError(f"{folder} holds several wheels of one project ({clashes}); fetch again to replace them")
    return chosen


def full_manifest(text: str, platform: str, wheel_paths: list[str]) -> str:
    """``text`` (a source manifest) with ``platforms``, ``blender_version_max`` and ``wheels`` added.

    The keys go before the first table, where TOML top-level keys must be. A source manifest that sets any
    of them already is refused: the full build owns them.
    """
    existing = {"platforms", "blender_version_max", "wheels"} & tomllib.loads(text).keys()
    if existing:
        raise BuildError(f"the source manifest sets {sorted(existing)}; the full build adds these itself")
    lines = text.splitlines(keepends=True)
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    added = [
        "# Added by scripts/build_extension.py (full build): the bundled wheels are for this platform and\n",
        f"# CPython {PYTHON_VERSION} only.\n",
        f'platforms = ["{platform}"]\n',
        f'blender_version_max = "{FULL_BUILD_BLENDER_MAX}"\n',
        "wheels = [\n",
        *(f'  "{path}",\n' for path in wheel_paths),
        "]\n\n",
    ]
    return "".join(lines[:first_table] + added + lines[first_table:])


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # torch is ~200 MB: avoid a copy where the file system allows
    except OSError:
        shutil.copy2(src, dst)


def build_full(out_dir: Path, platforms: list[str], wheels_dir: Path = ROOT / "wheels",
               source_dir: Path = ROOT) -> list[Path]:
    """Build one package per platform, each with the wheels of ``wheels_dir/<platform>/`` bundled.

    The lite package is built first (so Blender's tool applies the ``[build]`` exclusions) and unpacked
    into a staging folder; per platform the staging folder gets that platform's wheels and manifest and is
    built again with ``--split-platforms``. Returns ``out_dir/<id>-<version>-<platform>.zip`` for each.
    """
    unknown = [p for p in platforms if p not in PLATFORM_TAGS]
    if unknown:
        raise BuildError(f"unknown platform(s) {unknown}; supported: {', '.join(PLATFORM_TAGS)}")
    chosen = {platform: select_wheels(platform, wheels_dir) for platform in platforms}  # fail before building
    manifest = read_manifest(source_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archives = []
    with tempfile.TemporaryDirectory(prefix=".stage-", dir=out_dir) as tmp:
        lite = build_lite(Path(tmp), source_dir)
        stage = Path(tmp) / "stage"
        with zipfile.ZipFile(lite) as archive:
            archive.extractall(stage)
        manifest_path = stage / MANIFEST
        lite_manifest = manifest_path.read_text(encoding="utf-8")
        for platform, wheels in chosen.items():
            shutil.rmtree(stage / "wheels", ignore_errors=True)
            (stage / "wheels").mkdir()
            for wheel in wheels:
                _link_or_copy(wheel, stage / "wheels" / wheel.name)
            wheel_paths = [f"./wheels/{w.name}" for w in wheels]
            manifest_path.write_text(full_manifest(lite_manifest, platform, wheel_paths), encoding="utf-8")
            _run_build(stage, out_dir, "--split-platforms")
            archive_path = out_dir / f"{manifest['id']}-{manifest['version']}-{platform.replace('-', '_')}.zip"
            # blender_ext.py silently drops wheels whose tags do not match the platform: say so instead.
            with zipfile.ZipFile(archive_path) as archive:
                missing = sorted({p[2:] for p in wheel_paths} - set(archive.namelist()))
            if missing:
                archive_path.unlink()
                raise BuildError(f"wheels not for {platform} (Blender dropped them): {missing}; fetch again")
            archives.append(archive_path)
    return archives


# --------------------------------------------------------------------------- command line


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="download the full build's wheels (network)")
    fetch_p.add_argument("--platform", action="append", choices=sorted(PLATFORM_TAGS),
                         help="repeatable (default: this machine's; see the warning for others)")
    fetch_p.add_argument("--wheels", type=Path, default=ROOT / "wheels", help="folder of per-platform wheel folders")
    fetch_p.add_argument("--torch-index-url", default=None,
                         help=f"extra index for torch (default: {TORCH_CPU_INDEX} on Linux, none elsewhere; "
                              "'' for none)")
    build_p = sub.add_parser("build", help="build the package(s) with blender_ext.py")
    build_p.add_argument("--full", action="store_true", help="bundle the fetched wheels, one package per platform")
    build_p.add_argument("--platform", action="append", choices=sorted(PLATFORM_TAGS),
                         help="with --full; repeatable (default: every platform fetched into --wheels)")
    build_p.add_argument("--wheels", type=Path, default=ROOT / "wheels", help="folder of per-platform wheel folders")
    build_p.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default dist/)")
    args = parser.parse_args(argv)

    try:
        if args.command == "fetch":
            if not args.platform and this_platform() not in PLATFORM_TAGS:
                raise BuildError(f"no wheels of torch for this machine ({this_platform()}); name a --platform")
            for platform in args.platform or [this_platform()]:
                wheels = fetch(platform, args.wheels, torch_index=args.torch_index_url)
                total = sum(w.stat().st_size for w in wheels) / 1e6
                print(f"{platform}: {len(wheels)} wheels, {total:.1f} MB in {args.wheels / platform}")
        elif args.full:
            platforms = args.platform or [p for p in PLATFORM_TAGS if (args.wheels / p).is_dir()]
            if not platforms:
                raise BuildError(f"no wheels fetched into {args.wheels}: run "
                                 f"`python scripts/build_extension.py fetch` first (on each target platform)")
            for archive in build_full(args.out, platforms, args.wheels):
                print(f"built {archive} ({_size(archive)})")
        else:
            if args.platform:
                parser.error("--platform needs --full (the lite package is for every platform)")
            archive = build_lite(args.out)
            print(f"built {archive} ({_size(archive)})")
    except BuildError as exc:
        print(f"build_extension.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
