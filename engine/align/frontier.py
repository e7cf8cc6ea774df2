"""Judging alignment runs by their reward-drift frontier rather than by their last point.

A run measured at its checkpoint rounds (scripts/evaluate_alignment.py writes ``heldout.jsonl``:
one row per round with ``reward_mean`` and ``fd_to_base``, round 0 being the base model) traces a
curve in the (FD to base, held-out reward) plane. This module reads such curves, finds the best
reward a run reached without drifting past an FD level, chooses a setting among tuning runs by that
rule, and formats the frontier table. Pure Python: no model, no torch.

FD is the Fréchet distance of critic features to the base samples (squared feature units, see
:mod:`engine.align.evaluation`); rewards are in the reward's own units (higher is better).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..fileio import strict_loads

__all__ = ["read_curve", "best_under_fd", "reward_at_fd", "Choice", "choose_setting", "frontier_cell",
           "format_frontier_table", "Standing", "standing", "format_standing_table"]


def read_curve(path: str | Path) -> list[dict]:
    """The rows of a ``heldout.jsonl`` (strict JSON, one object per line), sorted by round.

    Raises ValueError naming the file and line for a line that is not a JSON object with an integer
    ``round`` and a finite ``reward_mean``.
    """
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = strict_loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not strict JSON ({exc})") from None
        if (not isinstance(row, dict) or not isinstance(row.get("round"), int)
                or not _finite(row.get("reward_mean"))):
            raise ValueError(f"{path}:{number}: expected an object with an integer round and a finite reward_mean")
        rows.append(row)
    return sorted(rows, key=lambda r: r["round"])


def best_under_fd(rows: Sequence[dict], fd_max: float) -> dict | None:
    """The row of highest ``reward_mean`` among finetuned rounds (round >= 1) with ``fd_to_base <= fd_max``.

    Ties go to the lower FD, then the earlier round. None when no such round exists (the run never
    stayed that close to the base while it was measured, or FD was not measurable).
    """
    if not (isinstance(fd_max, (int, float)) and fd_max >= 0 and not math.isnan(fd_max)):
        raise ValueError(f"fd_max must be a number >= 0, got {fd_max!r}")
    inside = [r for r in rows if r.get("round", 0) >= 1 and _finite(r.get("fd_to_base")) and r["fd_to_base"] <= fd_max]
    if not inside:
        return None
    return max(inside, key=lambda r: (r["reward_mean"], -r["fd_to_base"], -r["round"]))


def reward_at_fd(rows: Sequence[dict], fd: float) -> float | None:
    """The highest held-out reward where the run's path crosses FD = ``fd``, or None if it never gets there.

    The path is the piecewise-linear curve through the measured rounds in order (round 0, the base at
    FD 0, included). Read at one drift, runs measured at different rounds compare at equal drift,
    which the best measured point under a level (:func:`best_under_fd`) does not give: a run whose
    points sit at FD 9 and 14 scores its FD-9 point under level 10 while another's sits at 10.
    """
    if not (isinstance(fd, (int, float)) and fd >= 0 and math.isfinite(fd)):
        raise ValueError(f"fd must be a finite number >= 0, got {fd!r}")
    path = [(r["fd_to_base"], r["reward_mean"]) for r in rows if _finite(r.get("fd_to_base"))]
    found = [reward for f, reward in path if f == fd]
    for (f0, r0), (f1, r1) in zip(path, path[1:]):
        if min(f0, f1) < fd < max(f0, f1):
            found.append(r0 + (r1 - r0) * (fd - f0) / (f1 - f0))
    return max(found) if found else None


@dataclass(frozen=True)
class Choice:
    """The setting chosen among tuning runs, the row that decided it, and why, in words."""

    setting: str
    row: dict | None
    reason: str


def choose_setting(curves: dict[str, Sequence[dict]], fd_max: float) -> Choice:
    """Choose among settings (name -> its run's curve) by the rule of the frontier table.

    The highest held-out reward reached at FD <= ``fd_max`` at any measured round wins (ties: lower
    FD, then the earlier-listed setting). When no setting has such a round, the one that drifted
    least (lowest FD at any finetuned round) is chosen, and the reason says so. Settings whose curve
    has no finetuned round are skipped; ValueError when none is left.
    """
    scored = []
    for order, (name, rows) in enumerate(curves.items()):
        best = best_under_fd(rows, fd_max)
        if best is not None:
            scored.append((best["reward_mean"], -best["fd_to_base"], -order, name, best))
    if scored:
        *_, name, row = max(scored)
        return Choice(name, row, f"highest held-out reward at FD <= {fd_max:g}: {row['reward_mean']:.4g} "
                                 f"at FD {row['fd_to_base']:.3g}, round {row['round']}")
    least = []
    for order, (name, rows) in enumerate(curves.items()):
        tuned = [r for r in rows if r.get("round", 0) >= 1 and _finite(r.get("fd_to_base"))]
        if tuned:
            row = min(tuned, key=lambda r: (r["fd_to_base"], -r["reward_mean"]))
            least.append((row["fd_to_base"], order, name, row))
    if not least:
        raise ValueError("no setting has a measured finetuned round to choose from")
    _, _, name, row = min(least)
    return Choice(name, row, f"no setting reached FD <= {fd_max:g}; chose the least drift: FD {row['fd_to_base']:.3g} "
                             f"(reward {row['reward_mean']:.4g}, round {row['round']})")


def frontier_cell(rows: Sequence[dict] | None, fd_max: float) -> str:
    """``"-0.312 (r40)"``: the best reward at FD <= fd_max and its round; ``"none"`` when no round
    qualifies, ``"-"`` when there is no curve."""
    if not rows:
        return "-"
    best = best_under_fd(rows, fd_max)
    return "none" if best is None else f"{_number(best['reward_mean'])} (r{best['round']})"


def format_frontier_table(curves: dict[str, dict[str, Sequence[dict] | None]], fd_levels: Sequence[float]) -> str:
    """Markdown: one row per method, one column per FD level, then the final round's figures.

    ``curves``: method -> {seed label: curve rows or None}. Each cell lists the seeds in order,
    separated by `` / ``. The final figures are those of each curve's last round.
    """
    seeds_of = {m: list(by_seed) for m, by_seed in curves.items()}
    header = (["method"] + [f"best reward at FD ≤ {level:g} (round)" for level in fd_levels]
              + ["final reward", "final FD", "critic acc.", "geometric acc.", "diversity", "rounds"])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    for method, by_seed in curves.items():
        cells = [method]
        for level in fd_levels:
            cells.append(" / ".join(frontier_cell(by_seed[s], level) for s in seeds_of[method]))
        lasts = [by_seed[s][-1] if by_seed[s] else None for s in seeds_of[method]]
        for key, fmt in (("reward_mean", _number), ("fd_to_base", lambda v: f"{v:.3g}"),
                         ("critic_accuracy", _percent), ("geometric_accuracy", _percent),
                         ("diversity", lambda v: f"{v:.3g}"), ("round", str)):
            cells.append(" / ".join("-" if row is None or row.get(key) is None else fmt(row[key]) for row in lasts))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Standing:
    """How one method stands against the others at one FD level, on the seed means.

    ``means``: method -> mean over seeds of the best reward at FD <= level (None when a seed has no
    such round or no curve yet). ``verdict`` is "leads", "ties" or "trails" for ``method`` against the
    best of the others that have a mean (the ``rival``): leads when its mean exceeds the rival's by
    more than ``margin``, trails when it is below by more than ``margin``, ties otherwise. ``margin``
    is the larger of ``noise`` and the standard error of the per-seed differences (seeds paired by
    label): the training seed moves a cell far more than the held-out set's noise does. It is "open"
    while a curve is missing, "no round" when ``method`` never stayed within the level on some seed,
    and "only one" when no other method did.
    """

    level: float
    method: str
    means: dict[str, float | None]
    noise: float
    verdict: str
    rival: str | None = None  # the best other method by mean
    gap: float | None = None  # method's mean minus the rival's
    margin: float | None = None  # what the gap is judged against: max(noise, the gap's standard error over seeds)


def standing(curves: dict[str, dict[str, Sequence[dict] | None]], method: str, level: float, noise: float) -> Standing:
    """``method``'s standing at FD <= ``level`` among all methods of ``curves`` (method -> {seed: rows}).

    ``noise`` is the reward's own noise (the standard deviation of the base reward between held-out
    sets): differences within it are ties.
    """
    if method not in curves:
        raise ValueError(f"{method!r} is not one of the methods: {', '.join(curves)}")
    if not (_finite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    means: dict[str, float | None] = {}
    per_seed: dict[str, dict[str, float]] = {}
    for name, by_seed in curves.items():
        bests = {seed: best_under_fd(rows, level) if rows else None for seed, rows in by_seed.items()}
        if bests and all(b is not None for b in bests.values()):
            per_seed[name] = {seed: b["reward_mean"] for seed, b in bests.items()}
            means[name] = sum(per_seed[name].values()) / len(bests)
        else:
            means[name] = None
    complete = all(rows for by_seed in curves.values() for rows in by_seed.values())
    others = {k: v for k, v in means.items() if k != method and v is not None}
    if not complete:
        return Standing(level, method, means, noise, "open")
    if means[method] is None:
        return Standing(level, method, means, noise, "no round")
    if not others:
        return Standing(level, method, means, noise, "only one")
    rival = max(others, key=others.get)
    diffs = [per_seed[method][seed] - per_seed[rival][seed] for seed in per_seed[method] if seed in per_seed[rival]]
    gap = means[method] - means[rival]
    margin = max(noise, statistics.stdev(diffs) / math.sqrt(len(diffs))) if len(diffs) >= 2 else noise
    verdict = "leads" if gap > margin else "trails" if gap < -margin else "ties"
    return Standing(level, method, means, noise, verdict, rival, gap, margin)


def format_standing_table(curves: dict[str, dict[str, Sequence[dict] | None]], method: str,
                          fd_levels: Sequence[float], noise: float, path_levels: Sequence[float] | None = None) -> str:
    """Markdown: per method, the seed-mean best reward at FD <= each of ``fd_levels`` and the seed-mean
    reward on the path at FD = each of ``path_levels`` (:func:`reward_at_fd`; default ``fd_levels``);
    a last row gives ``method``'s verdict per level of ``fd_levels``.

    A seed-mean cell is "-" when a seed lacks the figure (no curve yet, or never within / at that FD).
    """
    path_levels = list(fd_levels if path_levels is None else path_levels)
    header = ["method"] + [f"FD ≤ {level:g}: best, seed mean" for level in fd_levels] + [
        f"at FD = {level:g} on the path, seed mean" for level in path_levels]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    verdicts = [standing(curves, method, level, noise) for level in fd_levels]
    for name, by_seed in curves.items():
        cells = [name]
        for st in verdicts:
            value = st.means[name]
            cells.append("-" if value is None else _number(value))
        for level in path_levels:
            at = [reward_at_fd(rows, level) if rows else None for rows in by_seed.values()]
            cells.append(_number(sum(at) / len(at)) if at and all(v is not None for v in at) else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| " + f"{method}: verdict" + " | "
                 + " | ".join(_verdict_cell(st) for st in verdicts) + " |" + " |" * len(path_levels))
    return "\n".join(lines) + "\n"


def _verdict_cell(st: Standing) -> str:
    if st.rival is None:
        return st.verdict
    return f"{st.verdict} {st.rival}: {st.gap:+.2g} (margin {st.margin:.2g})"


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1 else f"{value:.3f}"


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


