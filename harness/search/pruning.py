"""Pruning of search trials on the validation curve the training loop reports (Optuna's
median / percentile rule), made deterministic and content-addressed.

A TPE trial of round r is compared with the trials of the rounds before r that ran their whole
course (status done; pruned and failed trials are no reference, as in Optuna). At its i-th
validation of a (stage, domain) series, once i > ``warmup``, it stops when its best value so
far in that series is below the percentile of those trials' values at their own i-th
validation of the series (when at least ``min_trials`` of them got that far). Every one of those
trials had finished before round r was proposed, so the thresholds are fixed at proposal time:
the driver computes them (:func:`build_rule`), the cell carries them (``CellTask.prune``) and
its identity hashes them with the rule and the reference cells. A trial's outcome is a pure
function of its identity, whichever other cells happen to finish first; a rule that can prune
nothing (round 1, too few references) is left out, so such a trial is the ordinary cell.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from methods.base import EpochLog

__all__ = ["VALID_KEY", "PruneMonitor", "PruneRule", "TrialPruned", "build_rule"]

VALID_KEY = "valid_ndcg"  # the selection metric run_epochs logs at every validation

Series = tuple[str, str | None]  # (stage, domain)


class TrialPruned(Exception):
    """Raised from the cell's epoch log when its rule stops it; ``record`` says where."""

    def __init__(self, record: dict[str, Any]):
        super().__init__(
            f"pruned at validation {record['validation']} of {record['stage']}"
            + (f"/{record['domain']}" if record["domain"] else "")
            + f": best {record['best']:.6g} < threshold {record['threshold']:.6g}"
        )
        self.record = record


@dataclass(frozen=True)
class PruneRule:
    """Per-validation thresholds of a trial, fixed when it is proposed."""

    rule: str  # median | percentile
    percentile: float  # keep the top this-many percent (Optuna's PercentilePruner)
    warmup: int
    min_trials: int
    reference: tuple[str, ...]  # cell ids of the finished trials the thresholds come from
    # (stage, domain, thresholds by validation index; nan: no pruning at that validation)
    series: tuple[tuple[str, str | None, tuple[float, ...]], ...]

    def identity(self) -> dict[str, Any]:
        """What enters the trial's cell id: the rule, its reference and a digest of the
        thresholds (exact float64 values)."""
        payload = json.dumps(
            [[s, d, [float(x).hex() for x in th]] for s, d, th in self.series], sort_keys=True
        )
        return {
            "rule": self.rule,
            "percentile": self.percentile,
            "warmup": self.warmup,
            "min_trials": self.min_trials,
            "reference": list(self.reference),
            "thresholds": hashlib.sha256(payload.encode()).hexdigest()[:16],
        }


def validation_series(
    rows: list[tuple[str, str | None, int, float]],
) -> dict[Series, np.ndarray]:
    """A cell's validation values per (stage, domain), in epoch order, from its curve rows
    (stage, domain, epoch, value of ``VALID_KEY``)."""
    out: dict[Series, list[tuple[int, float]]] = {}
    for stage, domain, epoch, value in rows:
        out.setdefault((stage, domain), []).append((epoch, value))
    return {k: np.array([v for _, v in sorted(pts)], dtype=np.float64) for k, pts in out.items()}


def build_rule(
    rule: str,
    percentile: float,
    warmup: int,
    min_trials: int,
    reference: dict[str, dict[Series, np.ndarray]],
) -> PruneRule | None:
    """The thresholds against ``reference`` (cell id -> its validation series), or None when
    they could prune nothing (no series with enough references past the warm-up)."""
    keep = 50.0 if rule == "median" else percentile
    series = []
    keys = sorted({k for curves in reference.values() for k in curves}, key=_order)
    for stage, domain in keys:
        rows = [c[(stage, domain)] for c in reference.values() if (stage, domain) in c]
        width = max(len(r) for r in rows)
        table = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):
            table[i, : len(r)] = r
        reached = np.count_nonzero(~np.isnan(table), axis=0)
        with warnings.catch_warnings():  # all-nan columns are masked below
            warnings.simplefilter("ignore", RuntimeWarning)
            # maximise: the trial must beat the (100 - keep)-th percentile (Optuna's rule)
            th = np.nanpercentile(table, 100.0 - keep, axis=0)
        th[reached < min_trials] = np.nan
        th[:warmup] = np.nan
        finite = np.flatnonzero(~np.isnan(th))
        if len(finite):
            th = th[: finite[-1] + 1]
            series.append((stage, domain, tuple(float(x) for x in th)))
    if not series:
        return None
    return PruneRule(rule, float(keep), warmup, min_trials, tuple(sorted(reference)), tuple(series))


def _order(key: Series) -> tuple[str, str]:
    return key[0], key[1] or ""


class PruneMonitor:
    """Watches a cell's epoch logs and raises :class:`TrialPruned` when its rule says so."""

    def __init__(self, rule: PruneRule):
        self.rule = rule
        self.tables = {(s, d): np.asarray(th) for s, d, th in rule.series}
        self.seen: dict[Series, int] = {}
        self.best: dict[Series, float] = {}
        self.validations = 0  # over every series: the step Optuna's TPE sees

    def observe(self, entry: EpochLog) -> None:
        value = entry.values.get(VALID_KEY)
        if value is None:
            return
        key = (entry.stage, entry.domain)
        index = self.seen.get(key, 0)
        self.seen[key] = index + 1
        self.validations += 1
        best = max(self.best.get(key, -math.inf), float(value))
        self.best[key] = best
        table = self.tables.get(key)
        if index < self.rule.warmup or table is None or index >= len(table):
            return
        threshold = float(table[index])
        if math.isfinite(threshold) and best < threshold:
            raise TrialPruned(
                {
                    "stage": entry.stage,
                    "domain": entry.domain,
                    "validation": index + 1,
                    "epoch": entry.epoch,
                    "best": best,
                    "threshold": threshold,
                    "validations": self.validations,
                    "rule": self.rule.rule,
                }
            )
