"""Atomic writes and strict JSON."""
import json
import math

import pytest

from engine.fileio import strict_json, write_json


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_write_json_refuses_nan_and_infinity_and_writes_nothing(tmp_path, value):
    with pytest.raises(RuntimeError, match="non-strict JSON"):
        write_json(tmp_path / "report.json", {"reward": {"mean": value}})
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file


def test_write_json_writes_strict_json(tmp_path):
    path = write_json(tmp_path / "manifest.json", {"a": [1, 2.5, None]})
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict constant {c}")) == {"a": [1, 2.5, None]}
    assert strict_json({"x": 1.0}) == '{"x": 1.0}'
