"""Align to an artist's picks in one job: fit the ``preference`` reward from a ``picks.json``, then align
on it (engine/rewards/preference.py fits; :func:`engine.align.job.run_alignment` aligns).

An align job's params with ``fit_preference`` (the worker's ``align`` job, the Blender "Align to my
picks" button)::

    {..., "reward": "preference",                      # or an expression using it: "preference + 0.3*dnc"
     "fit_preference": {"picks": "/abs/picks.json",    # required
                        "feature": "auto", "clip_model": null, "l2": 1.0, "folds": 5}}

``feature``: one of ``FIT_FEATURES`` of engine/rewards/preference.py, by default its ``DEFAULT_FIT_FEATURE``
(``"auto"``); the other fields as ``preferences fit`` takes them.

The picks are read and counted first: too few liked or disliked assets are refused with the fit's own
message, before anything is loaded or written (a ValueError before the first progress call: the
worker's ``bad_input``). The head is written to ``<out_dir>/preference`` and the alignment runs with
``preference.path`` pointing there, so its held-out reward before and after (``reward_before`` /
``reward_after`` of the report) is the held-out preference score. The report gains
``"preference": {"path", "cross_validation", "picks"}``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from ..params import BadInput
from ..rewards.registry import parse_reward_expression

PREFERENCE_DIR = "preference"
FIT_KEYS = {"picks", "feature", "clip_model", "l2", "folds"}
FIT_SHARE = 0.2  # of the job's progress bar: fitting re-samples every picked asset


def fit_settings(raw) -> tuple[Path, "FitSettings"]:  # noqa: F821 - torch-side type, imported below
    """The picks path and fit settings of a ``fit_preference`` object; BadInput naming the field."""
    from ..rewards.preference import DEFAULT_FIT_FEATURE, DEFAULT_L2, FitSettings

    if not isinstance(raw, dict):
        raise BadInput(f"fit_preference must be an object with picks, got {raw!r}")
    unknown = sorted(set(raw) - FIT_KEYS)
    if unknown:
        raise BadInput(f"fit_preference: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIT_KEYS))}")
    picks = raw.get("picks")
    if not isinstance(picks, str) or not Path(picks).expanduser().is_absolute():
        raise BadInput(f"fit_preference.picks must be an absolute path to a picks.json, got {picks!r}")
    l2 = raw.get("l2", DEFAULT_L2)
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not math.isfinite(l2):
        raise BadInput(f"fit_preference.l2 must be a finite number, got {l2!r}")
    folds = raw.get("folds", 5)
    if isinstance(folds, bool) or not isinstance(folds, int):
        raise BadInput(f"fit_preference.folds must be an integer, got {folds!r}")
    settings = FitSettings(feature=raw.get("feature", DEFAULT_FIT_FEATURE), clip_model=raw.get("clip_model"), l2=float(l2), folds=folds)
    return Path(picks).expanduser(), settings


def run_alignment_from_picks(params: dict, progress: Callable[[float, str], None] | None = None,
                             should_cancel: Callable[[], bool] | None = None,
                             preview: Callable[[str, str], None] | None = None) -> dict:
    """Fit the preference of ``params["fit_preference"]``, then run the alignment job of the other params
    on it (module docstring). Returns the alignment report with a ``preference`` block."""
    from ..rewards.preference import check_pick_counts, fit_preferences, load_picks
    from ..sampling.sampler import Cancelled
    from .job import AlignJob, run_alignment

    params = dict(params)
    picks_path, settings = fit_settings(params.pop("fit_preference", None))
    names = [name for _, name in parse_reward_expression(str(params.get("reward", "")))]
    if "preference" not in names:
        raise BadInput(f"fit_preference needs a reward that uses preference, got {params.get('reward')!r}")
    if "out_dir" not in params:
        raise BadInput("alignment needs out_dir")
    pref_dir = Path(params["out_dir"]).expanduser() / PREFERENCE_DIR
    options = {k: dict(v) for k, v in dict(params.get("reward_options") or {}).items()} if isinstance(
        params.get("reward_options"), dict) else params.get("reward_options")
    if isinstance(options, dict):
        options.setdefault("preference", {})
        if isinstance(options["preference"], dict):
            options["preference"]["path"] = str(pref_dir)
    params["reward_options"] = options
    AlignJob.from_params(params).config()  # bad alignment params: refused before the fit's minutes
    picks = load_picks(picks_path)  # PreferenceError (a ValueError) names the bad entry
    check_pick_counts([p.mark for p in picks], settings.min_liked, settings.min_disliked)  # the fit's own message

    say = progress or (lambda f, m: None)

    def fit_progress(fraction: float, message: str) -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled("alignment cancelled while fitting the preference")
        say(FIT_SHARE * fraction, message)

    say(0.0, f"fitting the preference from {len(picks)} picks")
    head = fit_preferences(picks_path, pref_dir, settings, params.get("device", "cpu"), fit_progress)  # "auto" too
    cv = head.meta["cross_validation"]
    say(FIT_SHARE, f"preference fitted on {head.meta['feature']} features: held-out AUC {cv['auc']:.3f}")

    def align_progress(fraction: float, message: str) -> None:
        say(FIT_SHARE + (1 - FIT_SHARE) * fraction, message)

    report = run_alignment(params, align_progress, should_cancel, preview)
    report["preference"] = {"path": str(pref_dir), "cross_validation": cv, "picks": head.meta["picks"],
                            "feature": head.meta["feature"]}
    return report
