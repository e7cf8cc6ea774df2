"""Confusion matrices: counts, labels outside the list, and the Markdown table."""
from __future__ import annotations

import numpy as np

from engine.confusion import UNKNOWN, confusion_matrix, format_confusion_matrix

LABELS = ("a", "b", "c")


def test_confusion_matrix_rows_and_markdown():
    pairs = [("a", "a"), ("a", "b"), ("c", UNKNOWN), ("b", "b"), ("blob", "a")]
    matrix = confusion_matrix(pairs, labels=LABELS)
    assert matrix.rows == (*LABELS, "blob")  # a true label outside the list gets its own row
    assert matrix.cols == (*LABELS, UNKNOWN)
    assert (matrix.total, matrix.correct) == (5, 2)
    assert matrix.accuracy == 0.4
    lines = format_confusion_matrix(matrix).splitlines()
    assert lines[0] == "| true \\ predicted | a | b | c | unknown | accuracy |"
    assert lines[1] == "|---|" + "---:|" * 5
    assert lines[2] == "| a | 1 | 1 | 0 | 0 | 50.0% |"
    assert lines[3] == "| b | 0 | 1 | 0 | 0 | 100.0% |"
    assert lines[4] == "| c | 0 | 0 | 0 | 1 | 0.0% |"
    assert lines[5] == "| blob | 1 | 0 | 0 | 0 | 0.0% |"
    assert lines[6] == "| **all** | 2 | 2 | 0 | 1 | 40.0% |"
    assert len(lines) == 7


def test_predictions_outside_the_labels_are_kept_and_empty_rows_show_a_dash():
    matrix = confusion_matrix([("a", "zebra")], labels=LABELS)
    assert matrix.cols == (*LABELS, UNKNOWN, "zebra")  # never silently dropped
    assert int(matrix.counts.sum()) == 1 and matrix.correct == 0
    assert "| b | 0 | 0 | 0 | 0 | 0 | - |" in format_confusion_matrix(matrix).splitlines()


def test_empty_matrix_has_no_accuracy():
    matrix = confusion_matrix([], labels=LABELS)
    assert matrix.total == 0 and np.isnan(matrix.accuracy)
