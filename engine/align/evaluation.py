"""Metrics for comparing alignment methods (our small-scale version of the paper's Table 1).

Every metric takes plain tensors or lists, so it is independent of how the samples were made:

- :func:`frechet_distance`: Fréchet distance between two sets of feature vectors, each summarised
  by a Gaussian (mean, covariance): ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2))``.
  The paper's "multi-view FID to base" with the prompt critic's features instead of Inception's.
- :func:`diversity`: mean pairwise Euclidean distance between feature vectors of samples that share
  a prompt, averaged over prompts. Falls when finetuning collapses a prompt onto one asset.
- :func:`accuracy`, :func:`mean_std`: small summaries with explicit "not measurable" (None).
- :func:`format_tables`: the Markdown table of a results dictionary (one table per reward).

Units: distances are in the feature space's own units (critic features are unnormalised
activations); the Fréchet distance is in squared feature units.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "trace_sqrt_product",
    "gaussian_frechet_distance",
    "feature_statistics",
    "frechet_distance",
    "mean_pairwise_distance",
    "diversity",
    "accuracy",
    "mean_std",
    "TABLE_COLUMNS",
    "format_tables",
]


def _psd_sqrt(cov: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (float64).

    Eigenvalues that round-off made slightly negative are clamped to 0, which is what makes this
    safe where a general matrix square root (scipy's sqrtm) returns complex noise.
    """
    vals, vecs = torch.linalg.eigh((cov + cov.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def trace_sqrt_product(cov_a: torch.Tensor, cov_b: torch.Tensor) -> float:
    """``tr((C_a C_b)^(1/2))`` for symmetric PSD ``C_a``, ``C_b`` (D, D).

    ``C_a C_b`` is not symmetric, but it is similar to the symmetric PSD matrix
    ``S = C_a^(1/2) C_b C_a^(1/2)`` (same eigenvalues), so the trace of its square root is the sum
    of the square roots of the eigenvalues of ``S``, computed with a symmetric eigensolver.
    """
    a, b = cov_a.double(), cov_b.double()
    root_a = _psd_sqrt(a)
    s = root_a @ b @ root_a
    return float(torch.linalg.eigvalsh((s + s.T) / 2).clamp_min(0).sqrt().sum())


def gaussian_frechet_distance(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu_a, cov_a) and N(mu_b, cov_b).

    ``mu`` (D,), ``cov`` (D, D) symmetric PSD. Never negative (round-off is clamped to 0).
    """
    if mu_a.shape != mu_b.shape or mu_a.dim() != 1:
        raise ValueError(f"means must be vectors of the same length, got {tuple(mu_a.shape)} and {tuple(mu_b.shape)}")
    d = mu_a.shape[0]
    for cov in (cov_a, cov_b):
        if cov.shape != (d, d):
            raise ValueError(f"covariances must be ({d}, {d}), got {tuple(cov.shape)}")
    diff = (mu_a.double() - mu_b.double()).square().sum()
    value = float(diff) + float(torch.trace(cov_a.double()) + torch.trace(cov_b.double())) - 2 * trace_sqrt_product(cov_a, cov_b)
    return max(value, 0.0)


def feature_statistics(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), N >= 2, in float64."""
    feats = _check_features(feats, "features")
    if feats.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {feats.shape[0]}")
    x = feats.double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to features (N_a, D) and (N_b, D).

    Symmetric in its arguments; 0 for identical sets. With fewer samples than dimensions the
    covariances are rank-deficient; the distance is still defined (and biased upward by the
    sampling noise, like every FID: compare methods at the same N).
    """
    feats_a, feats_b = _check_features(feats_a, "feats_a"), _check_features(feats_b, "feats_b")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"feature sizes differ: {feats_a.shape[1]} vs {feats_b.shape[1]}")
    return gaussian_frechet_distance(*feature_statistics(feats_a), *feature_statistics(feats_b))


def mean_pairwise_distance(feats: torch.Tensor) -> float:
    """Mean Euclidean distance over the N (N - 1) / 2 pairs of features (N, D), N >= 2."""
    feats = _check_features(feats, "features")
    n = feats.shape[0]
    if n < 2:
        raise ValueError(f"pairwise distances need at least 2 samples, got {n}")
    dist = torch.cdist(feats.double(), feats.double())
    i, j = torch.triu_indices(n, n, offset=1)
    return float(dist[i, j].mean())


def diversity(feats: torch.Tensor, groups: Sequence[str]) -> float | None:
    """Mean over groups (prompts) of the mean pairwise feature distance within the group.

    ``feats`` (N, D), ``groups`` N labels. Groups with a single sample are skipped; None when no
    group has two samples (diversity is not measurable then).
    """
    feats = _check_features(feats, "features")
    if len(groups) != feats.shape[0]:
        raise ValueError(f"{feats.shape[0]} feature vectors but {len(groups)} group labels")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    per_group = [mean_pairwise_distance(feats[idx]) for idx in members.values() if len(idx) >= 2]
    return sum(per_group) / len(per_group) if per_group else None


def accuracy(flags: Sequence[bool]) -> float | None:
    """Fraction of True in ``flags``; None for an empty list."""
    flags = list(flags)
    return sum(bool(f) for f in flags) / len(flags) if flags else None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _check_features(feats: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(f"{name} must be a (N, D) tensor, got {shape}")
    if not torch.isfinite(feats).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return feats


# --- the table ---------------------------------------------------------------------------------------

# (key in a method's row, column header, formatter). Rows are dictionaries with these keys; a missing
# key or None prints as "n/a".
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("reward", "reward (mean ± std)"),
    ("fd_to_base", "FD to base ↓"),
    ("critic_accuracy", "critic acc. ↑"),
    ("geometric_accuracy", "geometric acc. ↑"),
    ("diversity", "diversity"),
    ("seconds_per_round", "s / round"),
)


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    return f"{value:.3g}" if magnitude < 1e-3 or magnitude >= 1e4 else f"{value:.4g}"


def _cell(row: dict, key: str) -> str:
    if key == "reward":
        mean, std = row.get("reward_mean"), row.get("reward_std")
        if mean is None:
            return "n/a"
        return f"{_number(mean)} ± {_number(std or 0.0)}"
    value = row.get(key)
    if value is None:
        return "n/a"
    if key.endswith("accuracy"):
        return f"{100 * value:.1f} %"
    if key == "seconds_per_round":
        return f"{value:.1f}"
    return _number(value)


def format_tables(results: dict) -> str:
    """Markdown for a results dictionary::

        {"command": str, "notes": [str, ...] (optional),
         "rewards": {reward label: {"description": str (optional),
                                    "methods": {method: {reward_mean, reward_std, fd_to_base,
                                                         critic_accuracy, geometric_accuracy,
                                                         diversity, seconds_per_round}}}}}

    One table per reward, rows in the order of ``methods``, the exact command line on top.
    """
    if "rewards" not in results or not isinstance(results["rewards"], dict):
        raise ValueError("results need a 'rewards' dictionary")
    lines = ["# Alignment methods compared", ""]
    if results.get("command"):
        lines += ["Produced by:", "", "```bash", results["command"], "```", ""]
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    if results.get("notes"):
        lines.append("")
    header = "| method | " + " | ".join(h for _, h in TABLE_COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(TABLE_COLUMNS)
    for label, block in results["rewards"].items():
        lines += [f"## {label}", ""]
        if block.get("description"):
            lines += [block["description"], ""]
        lines += [header, rule]
        for method, row in block.get("methods", {}).items():
            lines.append(f"| {method} | " + " | ".join(_cell(row, key) for key, _ in TABLE_COLUMNS) + " |")
        lines.append("")
    return "\n".join(lines)
