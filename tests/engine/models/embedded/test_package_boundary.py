"""Nothing outside this package knows the embedded model's shapes: code elsewhere reaches them
through the model, its registry entry or this package (engine/models/protocol.py)."""
from __future__ import annotations

import ast
from pathlib import Path

from engine.models.embedded.grammar import SHAPES, PromptError, parse_prompt

ENGINE = Path(__file__).resolve().parents[4] / "engine"


def _names_a_shape(text: str) -> bool:
    if text in SHAPES:
        return True
    try:
        prompt = parse_prompt(text)
    except PromptError:
        return False
    return prompt.shape is not None  # "an object" (any shape) is no shape of this model's: JSON wording says it too


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def test_no_engine_code_outside_the_model_packages_names_a_shape_or_a_prompt():
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        rel = path.relative_to(ENGINE).as_posix()
        # engine/models/<model>/ holds each model's own words (Shap-E's and DiffSplat's open-text defaults too)
        if (rel.startswith("models/") and rel.count("/") >= 2):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        found += [f"engine/{rel}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                  and _names_a_shape(node.value)]
    assert not found, "\n".join(found)


def test_the_check_finds_a_shape_name_and_a_prompt():
    assert _names_a_shape("torus") and _names_a_shape("a red cube")
    assert not _names_a_shape("radius must put the camera outside the [-1, 1]^3 scene cube") and not _names_a_shape("")
