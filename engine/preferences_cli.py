"""``python -m engine preferences fit --picks PICKS.json --out PREF_DIR``: learn the ``preference`` reward.

Reads the picks (format: engine/picks.py, docs/preferences.md), renders the picked
assets, fits the head, writes it to PREF_DIR and prints its cross-validated agreement. Then
``python -m engine align --reward preference --option preference.path=PREF_DIR`` aligns to it.
"""
from __future__ import annotations

import sys
from pathlib import Path

# FIT_FEATURES of engine/rewards/preference.py, spelt out so that building the parser imports no torch
# (tests/engine/rewards/test_preference.py keeps the two equal)
FEATURE_CHOICES = ("auto", "critic+layout", "critic", "clip+layout", "clip", "layout", "profile")


def add_parser(sub) -> None:
    """The ``preferences`` subcommand on the main parser's subparsers ``sub``."""
    pref = sub.add_parser("preferences", help="learn a reward from liked/disliked picks (preferences fit)")
    actions = pref.add_subparsers(dest="preferences_command", required=True)
    fit = actions.add_parser("fit", help="fit the preference reward from a picks.json; prints held-out agreement")
    fit.add_argument("--picks", required=True, type=Path, help="picks.json (format: docs/preferences.md)")
    fit.add_argument("--out", required=True, type=Path, help="folder for preference.safetensors and preference.json")
    fit.add_argument("--feature", choices=FEATURE_CHOICES, default=None,
                     help="frozen image features: auto (the default) keeps the silhouette's proportions (profile) unless "
                          "the prompt critic's or a CLIP model's (--clip-model) features with the views' 8x8 colour layout "
                          "explain the picks clearly better; or name a kind (docs/preferences.md)")
    fit.add_argument("--clip-model", help="CLIP model folder or cached repo id (transformers format), for --feature clip[+layout]")
    fit.add_argument("--l2", type=float, default=None, help="L2 penalty on the head's weights (default 1)")
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    fit.add_argument("--resolution", type=int, default=32, help="render size of the picked assets' views (default 32)")
    fit.add_argument("--device", default="cpu", help="torch device for rendering the picks, or auto (default cpu)")
    fit.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's default)")


def run(args) -> int:
    import torch

    from .params import check_device, check_threads
    from .rewards.preference import DEFAULT_FIT_FEATURE, DEFAULT_L2, FitSettings, fit_preferences

    settings = FitSettings(feature=args.feature or DEFAULT_FIT_FEATURE, clip_model=args.clip_model,
                           l2=DEFAULT_L2 if args.l2 is None else args.l2, folds=args.folds, resolution=args.resolution)
    check_device(args.device)
    check_threads("--threads", args.threads)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    def progress(fraction: float, message: str) -> None:
        print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)

    head = fit_preferences(args.picks, args.out, settings, args.device, progress)
    cv, picks = head.meta["cross_validation"], head.meta["picks"]
    acc = "n/a" if cv["pairwise_accuracy"] is None else f"{cv['pairwise_accuracy']:.3f}"
    print(f"fitted on {picks['liked']} liked, {picks['disliked']} disliked, {picks['neutral']} neutral picks "
          f"({head.meta['fit']['pairs']} pairs, {head.meta['feature']} features, {head.dim}-d)")
    selection = head.meta.get("feature_selection")
    if selection is not None:
        aucs = ", ".join(f"{k} {a:.3f}" for k, a in selection["cross_validated_auc"].items())
        print(f"features chosen by auto: {selection['chosen']} (cross-validated AUC {aucs}; the simpler kind is kept "
              f"unless the other is higher by more than {selection['tolerance']})")
    print(f"held-out agreement ({cv['folds']}-fold cross-validation): AUC {cv['auc']:.3f}, "
          f"pairwise accuracy {acc} over {cv['held_out_pairs']} held-out liked/disliked pairs")
    print(f"wrote {args.out}; align with: python -m engine align --reward preference --option preference.path={args.out}")
    return 0
