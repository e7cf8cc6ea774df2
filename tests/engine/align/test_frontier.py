"""Judging runs by their held-out curve: reading it, the best point under an FD level, the choice
of a setting among tuning runs, and the table's cells."""
import json

import pytest

from engine.align.frontier import (best_under_fd, choose_setting, format_frontier_table, format_standing_table,
                                   frontier_cell, read_curve, reward_at_fd, standing)


def _row(step, reward, fd, **kw):
    return {"round": step, "trajectories": 16 * step, "reward_mean": reward, "fd_to_base": fd, **kw}


CURVE = [_row(0, -0.74, 0.25, base=True), _row(10, -0.60, 3.0), _row(20, -0.45, 8.0), _row(30, -0.30, 12.0),
         _row(40, -0.35, 9.5), _row(50, -0.20, 25.0)]


def test_best_under_fd_picks_the_highest_reward_within_the_level():
    assert best_under_fd(CURVE, 5)["round"] == 10
    assert best_under_fd(CURVE, 10)["round"] == 40  # -0.35 at FD 9.5 beats -0.45 at FD 8; round 30 is at 12
    assert best_under_fd(CURVE, 12.0)["round"] == 30  # the level is inclusive
    assert best_under_fd(CURVE, 100)["round"] == 50
    assert best_under_fd(CURVE, 1.0) is None  # round 0 (the base) never counts as a finetuned point
    assert best_under_fd([_row(10, 0.5, None)], 10) is None  # FD not measurable
    tie = [_row(10, 0.5, 4.0), _row(20, 0.5, 2.0), _row(30, 0.5, 2.0)]
    assert best_under_fd(tie, 5)["round"] == 20  # equal reward: lower FD, then the earlier round
    with pytest.raises(ValueError):
        best_under_fd(CURVE, float("nan"))


def test_choose_setting_takes_the_best_reward_under_the_cap_else_the_least_drift():
    curves = {"lr=1e-4": [_row(10, -0.70, 1.0), _row(30, -0.60, 2.0)],
              "lr=1e-3": [_row(10, -0.50, 6.0), _row(30, -0.10, 30.0)],  # its best point overall is over the cap
              "lr=1e-2": [_row(10, -0.05, 40.0)]}
    choice = choose_setting(curves, 10)
    assert choice.setting == "lr=1e-3" and choice.row["round"] == 10 and "FD <= 10" in choice.reason
    far = {"a": [_row(10, 0.9, 30.0)], "b": [_row(10, 0.1, 15.0), _row(20, 0.2, 18.0)], "c": [_row(0, 1.0, 0.2)]}
    choice = choose_setting(far, 10)
    assert choice.setting == "b" and choice.row["round"] == 10 and "least drift" in choice.reason
    with pytest.raises(ValueError):
        choose_setting({"a": [_row(0, 1.0, 0.2)]}, 10)


def test_read_curve_sorts_rounds_and_refuses_what_is_not_strict_json(tmp_path):
    path = tmp_path / "heldout.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in reversed(CURVE)) + "\n\n")
    assert [r["round"] for r in read_curve(path)] == [0, 10, 20, 30, 40, 50]
    path.write_text('{"round": 10, "reward_mean": NaN, "fd_to_base": 1.0}\n')
    with pytest.raises(ValueError, match="heldout.jsonl:1"):
        read_curve(path)
    path.write_text('{"round": "10", "reward_mean": 0.1}\n')
    with pytest.raises(ValueError, match="integer round"):
        read_curve(path)


def test_table_cells_give_the_best_reward_with_its_round_per_seed_and_the_final_figures():
    other = [_row(0, -0.74, 0.25), _row(10, -0.50, 6.0, critic_accuracy=0.5, geometric_accuracy=0.25, diversity=1.0)]
    assert frontier_cell(CURVE, 10) == "-0.350 (r40)" and frontier_cell(other, 5) == "none" and frontier_cell(None, 5) == "-"
    text = format_frontier_table({"nabla": {"seed 0": CURVE, "seed 1": other}, "refl": {"seed 0": None, "seed 1": other}},
                                 (5, 10, 20))
    lines = text.splitlines()
    assert lines[0].startswith("| method | best reward at FD ≤ 5 (round) | best reward at FD ≤ 10 (round) |")
    assert lines[2] == ("| nabla | -0.600 (r10) / none | -0.350 (r40) / -0.500 (r10) | -0.300 (r30) / -0.500 (r10) "
                        "| -0.200 / -0.500 | 25 / 6 | - / 50.0 % | - / 25.0 % | - / 1 | 50 / 10 |")
    assert lines[3].startswith("| refl | - / none | - / -0.500 (r10) |")


def test_reward_at_fd_reads_the_path_where_it_crosses_the_level():
    # CURVE's path: FD 0.25 -> 3 -> 8 -> 12 -> 9.5 -> 25; FD 10 is crossed three times.
    crossings = [-0.45 + 0.15 * (10 - 8) / 4, -0.30 + (-0.05) * (12 - 10) / 2.5, -0.35 + 0.15 * 0.5 / 15.5]
    assert reward_at_fd(CURVE, 10) == pytest.approx(max(crossings))
    assert reward_at_fd(CURVE, 3.0) == pytest.approx(-0.60)  # a measured point exactly at the level
    assert reward_at_fd(CURVE, 0.1) is None and reward_at_fd(CURVE, 30) is None  # never at that drift
    assert reward_at_fd([_row(10, 0.5, None)], 1) is None
    with pytest.raises(ValueError):
        reward_at_fd(CURVE, float("inf"))


def test_standing_calls_a_gap_within_the_seed_margin_a_tie():
    ahead = {"seed 0": [_row(0, 0.0, 0.0), _row(10, 0.50, 4.0)], "seed 1": [_row(0, 0.0, 0.0), _row(10, 0.52, 4.0)]}
    behind = {"seed 0": [_row(0, 0.0, 0.0), _row(10, 0.40, 3.0)], "seed 1": [_row(0, 0.0, 0.0), _row(10, 0.41, 3.0)]}
    st = standing({"nabla": ahead, "refl": behind}, "nabla", 5, noise=0.01)
    assert st.verdict == "leads" and st.rival == "refl" and st.gap == pytest.approx(0.105)
    assert st.margin == pytest.approx(0.01)  # the per-seed gaps (0.10, 0.11) agree: the noise decides
    assert standing({"refl": behind, "nabla": ahead}, "refl", 5, noise=0.01).verdict == "trails"
    # Seeds that disagree: +0.2 and -0.1, mean +0.05 against a standard error of 0.15.
    split = {"seed 0": [_row(10, 0.60, 4.0)], "seed 1": [_row(10, 0.31, 4.0)]}
    assert standing({"nabla": split, "refl": behind}, "nabla", 5, noise=0.01).verdict == "ties"
    assert standing({"nabla": ahead, "refl": behind}, "nabla", 1, noise=0.01).verdict == "no round"
    assert standing({"nabla": ahead, "refl": {"seed 0": None, "seed 1": behind["seed 1"]}}, "nabla", 5, 0.01).verdict == "open"
    assert standing({"nabla": ahead, "refl": behind}, "refl", 3.5, noise=0.01).verdict == "only one"
    with pytest.raises(ValueError):
        standing({"refl": behind}, "nabla", 5, 0.01)
    text = format_standing_table({"nabla": ahead, "refl": behind}, "nabla", (5,), 0.01, path_levels=(2,))
    lines = text.splitlines()
    assert lines[0] == "| method | FD ≤ 5: best, seed mean | at FD = 2 on the path, seed mean |"
    assert lines[2] == "| nabla | 0.510 | 0.255 |" and lines[3] == "| refl | 0.405 | 0.270 |"
    assert lines[4].startswith("| nabla: verdict | leads refl: +0.1 (margin 0.01) |")
