"""Paired statistics for comparing methods on the same users.

Every comparison is paired by user: per-user metric values are first averaged over seeds (the
``user_means`` view), then method and reference are matched on ``user_id`` within a dataset,
ranking, domain and K. The tests come from ``scipy.stats`` (``ttest_rel``, ``wilcoxon``, both
two-sided); the confidence interval of the mean difference is a percentile bootstrap over users
whose generator is seeded from the comparison's identity, so a rerun gives identical numbers.
Multiple comparisons are corrected over a declared family with Holm (default) or
Benjamini-Hochberg (``scipy.stats.false_discovery_control``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "CORRECTIONS",
    "TESTS",
    "PairedResults",
    "adjust",
    "benjamini_hochberg",
    "bootstrap_mean_ci",
    "cohens_dz",
    "comparison_seed",
    "holm",
    "paired_tests",
]

TESTS = ("t", "wilcoxon")
CORRECTIONS = ("holm", "bh")
TEST_NAMES = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


def comparison_seed(*identity: object) -> int:
    """A 63-bit seed from the identity of a comparison (stable across runs and machines)."""
    text = "\x1f".join(str(part) for part in identity)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def bootstrap_mean_ci(
    diffs: np.ndarray,
    seed: int,
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean of each column of ``diffs`` [n_users, n_columns].

    Users are resampled with replacement, the same resamples for every column (the columns are
    comparisons on the same users), from ``np.random.default_rng(seed)``. Returns (low, high),
    rounded to 12 decimals so that BLAS summation order cannot change a printed digit.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    n, columns = d.shape
    if n == 0 or n_boot <= 0:
        nan = np.full(columns, np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, columns))
    chunk = int(max(1, min(n_boot, 4_000_000 // n)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        means[start : start + b] = counts @ d / n
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
    return np.round(low, 12), np.round(high, 12)


def cohens_dz(diffs: np.ndarray) -> np.ndarray:
    """Cohen's d_z: mean difference over the sample std (ddof = 1) of the differences."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    if d.shape[0] < 2:
        return np.full(d.shape[1], np.nan)
    sd = d.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, d.mean(axis=0) / np.where(sd > 0, sd, 1.0), np.nan)


@dataclass
class PairedResults:
    """Column-wise results of :func:`paired_tests` (arrays of length n_columns)."""

    n: int
    method_mean: np.ndarray
    reference_mean: np.ndarray
    mean_diff: np.ndarray
    t_stat: np.ndarray
    t_p: np.ndarray
    w_stat: np.ndarray
    w_p: np.ndarray
    d_z: np.ndarray


def paired_tests(method: np.ndarray, reference: np.ndarray) -> PairedResults:
    """Two-sided paired t-test and Wilcoxon signed-rank test, column by column.

    ``method`` and ``reference`` are [n_users, n_columns] (or 1-D) with rows matched by user.
    Columns whose differences are all zero get statistic 0 and p = 1 (no evidence of a
    difference; scipy's t-test would return NaN). Wilcoxon drops zero differences (scipy's
    default ``zero_method="wilcox"``); its p-value is exact for n <= 50 without zeros or ties
    and otherwise from the normal approximation with tie correction.
    """
    x = np.asarray(method, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    n, columns = x.shape
    d = x - y
    nan = np.full(columns, np.nan)
    if n == 0:
        return PairedResults(0, nan, nan, nan, nan, nan, nan, nan, nan)
    mean_diff = d.mean(axis=0)
    t_stat, t_p, w_stat, w_p = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    zero = np.all(d == 0, axis=0)
    live = ~zero
    if n >= 2 and live.any():
        exact = live & _exact_wilcoxon_ok(d)
        approx = live & ~exact
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            t = stats.ttest_rel(x[:, live], y[:, live], axis=0)
            t_stat[live], t_p[live] = t.statistic, t.pvalue
            for cols, method in ((exact, "exact"), (approx, "asymptotic")):
                if cols.any():
                    w = stats.wilcoxon(d[:, cols], axis=0, method=method)
                    w_stat[cols], w_p[cols] = w.statistic, w.pvalue
    t_stat[zero], t_p[zero], w_stat[zero], w_p[zero] = 0.0, 1.0, 0.0, 1.0
    return PairedResults(
        n=n,
        method_mean=x.mean(axis=0),
        reference_mean=y.mean(axis=0),
        mean_diff=mean_diff,
        t_stat=t_stat,
        t_p=t_p,
        w_stat=w_stat,
        w_p=w_p,
        d_z=cohens_dz(d),
    )


def _exact_wilcoxon_ok(d: np.ndarray) -> np.ndarray:
    """Columns where the exact null distribution applies: n <= 50, no zero, no tied |d|.

    Elsewhere the normal approximation with tie correction is used (scipy's "auto" would run
    a slow permutation test for small tied samples, and per-user metric differences tie a lot).
    """
    n = d.shape[0]
    if n > 50:
        return np.zeros(d.shape[1], dtype=bool)
    a = np.sort(np.abs(d), axis=0)
    no_zero = np.all(d != 0, axis=0)
    no_ties = np.all(np.diff(a, axis=0) != 0, axis=0) if n > 1 else np.ones(d.shape[1], bool)
    return no_zero & no_ties


def _clean(pvalues: Iterable[float]) -> np.ndarray:
    p = np.asarray(list(pvalues), dtype=np.float64)
    return np.where(np.isnan(p), 1.0, p)  # an undefined test never rejects


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error rate); NaN counts as p = 1."""
    p = _clean(pvalues)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), via scipy."""
    p = _clean(pvalues)
    if len(p) == 0:
        return p
    return stats.false_discovery_control(p, method="bh")


def adjust(pvalues: Sequence[float], correction: str) -> np.ndarray:
    if correction == "holm":
        return holm(pvalues)
    if correction == "bh":
        return benjamini_hochberg(pvalues)
    raise ValueError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}")
