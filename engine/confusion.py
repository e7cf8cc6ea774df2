"""Confusion matrices of a classifier's verdicts (a judge's or a critic's), as counts and as Markdown.

Labels are strings; a verdict of :data:`UNKNOWN` ("no answer") always gets a column.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

UNKNOWN = "unknown"


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of (true label, predicted label); rows are true labels, columns predictions."""

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    counts: np.ndarray  # (len(rows), len(cols)) int

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def correct(self) -> int:
        return sum(int(self.counts[i, self.cols.index(r)]) for i, r in enumerate(self.rows) if r in self.cols)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")



def confusion_matrix(pairs: Iterable[tuple[str, str]], labels: Sequence[str]) -> ConfusionMatrix:
    """Count (true, predicted) pairs. Rows: ``labels``; columns: ``labels`` then :data:`UNKNOWN`.

    Labels outside ``labels`` are appended (in order of first appearance) rather than dropped,
    so a count never silently disappears.
    """
    pairs = list(pairs)
    rows = list(labels)
    cols = [*labels, UNKNOWN] if UNKNOWN not in labels else list(labels)
    for true, predicted in pairs:
        if true not in rows:
            rows.append(true)
        if predicted not in cols:
            cols.append(predicted)
    counts = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for true, predicted in pairs:
        counts[rows.index(true), cols.index(predicted)] += 1
    return ConfusionMatrix(rows=tuple(rows), cols=tuple(cols), counts=counts)


def format_confusion_matrix(matrix: ConfusionMatrix) -> str:
    """Markdown table: one row per true label, one column per prediction, then row accuracy."""
    lines = [
        "| true \\ predicted | " + " | ".join(matrix.cols) + " | accuracy |",
        "|---|" + "---:|" * (len(matrix.cols) + 1),
    ]
    for i, row in enumerate(matrix.rows):
        n = int(matrix.counts[i].sum())
        hit = int(matrix.counts[i, matrix.cols.index(row)]) if row in matrix.cols else 0
        accuracy = f"{hit / n:.1%}" if n else "-"
        lines.append(f"| {row} | " + " | ".join(str(int(c)) for c in matrix.counts[i]) + f" | {accuracy} |")
    lines.append("| **all** | " + " | ".join(str(int(c)) for c in matrix.counts.sum(0)) + f" | {matrix.accuracy:.1%} |")
    return "\n".join(lines)
