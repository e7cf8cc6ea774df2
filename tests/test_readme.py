"""The README's Layout section names every part of the engine, and only parts that exist."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_layout_lists_every_engine_package_and_module():
    layout = _layout()
    named = set(re.findall(r"`([A-Za-z_]+)/?`", layout))
    engine = ROOT / "engine"
    parts = {p.name for p in engine.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    parts |= {p.stem for p in engine.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert parts - named == set(), f"README Layout does not mention engine parts {sorted(parts - named)}"


def test_layout_describes_training_as_what_it_holds():
    layout = _layout()
    line = next(l for l in layout.splitlines() if "`training/`" in l)
    modules = {p.stem for p in (ROOT / "engine" / "training").glob("*.py")} - {"__init__"}
    following = layout[layout.index(line):].split("\n  - ", 1)[0]
    assert all(m in following for m in modules), following


def test_the_install_paragraph_says_one_thing_about_which_torch_build_pip_installs():
    """It promised the CPU build, then said an extra index is needed to get it (issue 22)."""
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "CPU build of torch" not in text
    assert "pip takes torch from PyPI, which on Linux is the CUDA build" in text
    assert "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
