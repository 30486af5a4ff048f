"""``harness verify``: retrain a stored (e.g. published) cell and compare its per-user rows.

Which rule applies depends on whether the rerun can select the same floating-point kernels
as the stored cell (:func:`harness.provenance.same_kernels`: CPU model and instruction set,
torch / BLAS / oneDNN versions, threads, GPU and driver):

* **exact**: same kernels. Every per-user row (HR, NDCG, MRR, rank, ties) must be equal; any
  difference is a real one (code, data or nondeterminism).
* **equivalence**: other kernels (another CPU model or instruction set, another torch build,
  a GPU), or a stored cell that recorded no fingerprint. Float sums then round differently, a
  validation score can tip early stopping by an epoch, and bit equality is not a fair demand.
  For every ranking, domain, K and metric (HR, NDCG, MRR) the rerun must

  1. keep the domain mean within the margin ``delta`` of the stored one, and
  2. pass a paired two one-sided t-test (TOST, level ``alpha``) over users: the
     ``1 - 2 alpha`` confidence interval of the mean per-user difference lies inside
     ``[-delta, +delta]``, i.e. the data show the difference is smaller than the margin,

  where ``delta = max(std_fraction * s, min_margin)`` and ``s`` is the standard deviation over
  seeds of that domain mean among the stored cells of the same method and parameters (other
  seeds): a reproduction may differ from the stored cell by a fraction of what a new seed
  would change. With fewer than two seeds stored, ``delta = min_margin``.

Exit code of the command: 0 for "exact" and "equivalent", 1 for a real difference.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
import torch
from scipy import stats

from harness.provenance import same_kernels
from harness.runner.cells import CellTask
from harness.runner.work import run_cell
from harness.store.bundle import METRIC_COLUMNS
from harness.store.store import Store, fetch

__all__ = ["EquivalenceRule", "Verification", "compare_rows", "verify_cell"]

KEYS = ["ranking", "domain", "user_idx", "k"]
ROW_VALUES = ["hr", "ndcg", "mrr", "rank", "ties"]
MEAN_METRICS = ["hr", "ndcg", "mrr"]


@dataclass(frozen=True)
class EquivalenceRule:
    """The margins of the equivalence rule (see the module docstring)."""

    std_fraction: float = 0.5
    min_margin: float = 0.002
    alpha: float = 0.05


@dataclass
class Verification:
    cell_id: str
    rule: str  # exact | equivalence
    reason: str  # why that rule
    n_rows: int
    n_rows_differ: int
    max_abs_diff: float
    max_mean_ndcg_diff: float
    ok: bool
    margin: float | None = None  # the largest margin delta used (equivalence)
    worst: str = ""  # the (ranking, domain, K, metric) closest to failing, and why it failed
    tost_p: float | None = None  # largest TOST p-value over the comparisons
    train_s: float = 0.0
    infer_s: float = 0.0
    device: str = ""
    stored_device: str = ""
    hardware: str | None = None
    stored_hardware: str | None = None
    error: str | None = None
    checks: list[dict] = field(default_factory=list)

    def line(self) -> str:
        verdict = {True: "OK", False: "MISMATCH"}[self.ok]
        if self.ok and self.rule == "equivalence":
            verdict = "EQUIVALENT"
        text = (
            f"{verdict} {self.cell_id} ({self.rule}: {self.reason}; stored on "
            f"{self.stored_device}, rerun on {self.device}): {self.n_rows_differ} of "
            f"{self.n_rows} per-user rows differ, max |diff| {self.max_abs_diff:.3g}, max "
            f"|diff| of a domain's mean NDCG {self.max_mean_ndcg_diff:.3g}"
        )
        if self.rule == "equivalence" and self.margin is not None:
            text += f"; margin up to {self.margin:.3g}, TOST p <= {self.tost_p:.3g}; {self.worst}"
        return text + f"; retrained in {self.train_s:.1f} s + {self.infer_s:.1f} s"


def seed_spread(store: Store, cell_id: str) -> pl.DataFrame:
    """Per (ranking, domain, k) the std over seeds of the domain means of HR/NDCG/MRR among
    stored cells with the same data, method, parameters and code as ``cell_id``."""
    return fetch(
        store.con,
        """
        WITH peers AS (
            SELECT o.cell_id FROM cells c JOIN cells o
              ON o.dataset_fingerprint = c.dataset_fingerprint
             AND o.candidate_set_id = c.candidate_set_id AND o.kind = c.kind
             AND o.params = c.params AND o.code_version = c.code_version
            WHERE c.cell_id = ? AND o.status = 'done'
        ), means AS (
            SELECT m.cell_id, m.ranking, m.domain, m.k,
                   avg(m.hr) AS hr, avg(m.ndcg) AS ndcg, avg(m.mrr) AS mrr
            FROM user_metrics m JOIN peers USING (cell_id) GROUP BY ALL
        )
        SELECT ranking, domain, k, count(*) AS n_seeds, stddev_samp(hr) AS hr,
               stddev_samp(ndcg) AS ndcg, stddev_samp(mrr) AS mrr
        FROM means GROUP BY ALL
        """,
        [cell_id],
    )


def compare_rows(
    stored: pl.DataFrame,
    fresh: pl.DataFrame,
    rule: str,
    spread: pl.DataFrame | None = None,
    margins: EquivalenceRule | None = None,
) -> Verification:
    """Compare two cells' per-user metric rows under ``rule`` (exact | equivalence)."""
    margins = margins or EquivalenceRule()
    fresh = fresh.select(METRIC_COLUMNS).cast({c: stored.schema[c] for c in METRIC_COLUMNS})
    joined = stored.select(METRIC_COLUMNS).join(
        fresh, on=KEYS, how="full", suffix="_new", coalesce=True
    )
    delta = joined.select(
        *KEYS,
        *[
            (pl.col(v).cast(pl.Float64) - pl.col(f"{v}_new").cast(pl.Float64)).abs().alias(v)
            for v in ROW_VALUES
        ],
    )
    missing = joined.filter(pl.col("hr").is_null() | pl.col("hr_new").is_null()).height
    differ = delta.filter(pl.any_horizontal(pl.col(v).fill_null(1.0) > 0 for v in ROW_VALUES))
    max_abs = max(float(delta[v].fill_null(float("inf")).max() or 0.0) for v in ROW_VALUES[:4])
    complete = joined.filter(pl.col("hr").is_not_null() & pl.col("hr_new").is_not_null())
    groups = complete.group_by("ranking", "domain", "k", maintain_order=True)
    means = groups.agg((pl.col("ndcg_new").mean() - pl.col("ndcg").mean()).abs().alias("d"))
    max_mean = float(means["d"].max() or 0.0) if len(means) else 0.0
    outcome = Verification("", rule, "", joined.height, differ.height, max_abs, max_mean, False)
    if rule == "exact":
        outcome.ok = differ.height == 0 and missing == 0
        return outcome
    checks = _equivalence_checks(complete, spread, margins)
    outcome.checks = checks
    failed = [c for c in checks if not c["ok"]]
    outcome.ok = missing == 0 and not failed and bool(checks)
    outcome.margin = max((c["margin"] for c in checks), default=None)
    outcome.tost_p = max((c["tost_p"] for c in checks), default=None)
    worst = failed[0] if failed else max(checks, key=lambda c: c["tost_p"], default=None)
    if missing:
        outcome.worst = f"{missing} per-user rows are missing on one side"
    elif worst is not None:
        outcome.worst = (
            f"{'failed' if failed else 'closest'}: {worst['ranking']} {worst['domain']} "
            f"{worst['metric']}@{worst['k']} mean diff {worst['mean_diff']:+.3g}, "
            f"{100 * (1 - 2 * margins.alpha):.0f}% CI [{worst['ci_low']:+.3g}, "
            f"{worst['ci_high']:+.3g}] vs margin {worst['margin']:.3g}"
            f"{'' if worst['n_seeds'] >= 2 else ' (no seed spread: min margin)'}"
        )
    return outcome


def _equivalence_checks(
    complete: pl.DataFrame, spread: pl.DataFrame | None, margins: EquivalenceRule
) -> list[dict]:
    stds = {}
    if spread is not None:
        for row in spread.iter_rows(named=True):
            stds[(row["ranking"], row["domain"], row["k"])] = row
    checks = []
    for (ranking, domain, k), part in complete.group_by(
        "ranking", "domain", "k", maintain_order=True
    ):
        peer = stds.get((ranking, domain, k), {})
        n_seeds = int(peer.get("n_seeds") or 0)
        for metric in MEAN_METRICS:
            s = peer.get(metric) if n_seeds >= 2 else None
            margin = max(margins.std_fraction * (s or 0.0), margins.min_margin)
            diff = (part[f"{metric}_new"] - part[metric]).to_numpy().astype(np.float64)
            checks.append(
                {
                    "ranking": ranking,
                    "domain": domain,
                    "k": int(k),
                    "metric": metric,
                    "n_users": len(diff),
                    "n_seeds": n_seeds,
                    "margin": margin,
                    **_tost(diff, margin, margins.alpha),
                }
            )
    return checks


def _tost(diff: np.ndarray, margin: float, alpha: float) -> dict:
    """Paired TOST: is the mean difference inside [-margin, +margin]? (and the mean itself)"""
    n = len(diff)
    mean = float(diff.mean()) if n else 0.0
    sd = float(diff.std(ddof=1)) if n > 1 else 0.0
    if sd == 0.0:
        inside = abs(mean) <= margin
        return {"mean_diff": mean, "ci_low": mean, "ci_high": mean,
                "tost_p": 0.0 if inside else 1.0, "ok": inside}  # fmt: skip
    se = sd / math.sqrt(n)
    t_crit = float(stats.t.ppf(1 - alpha, n - 1))
    low, high = mean - t_crit * se, mean + t_crit * se
    p_lower = float(stats.t.sf((mean + margin) / se, n - 1))  # H0: mean <= -margin
    p_upper = float(stats.t.cdf((mean - margin) / se, n - 1))  # H0: mean >= +margin
    ok = abs(mean) <= margin and -margin <= low and high <= margin
    return {"mean_diff": mean, "ci_low": low, "ci_high": high,
            "tost_p": max(p_lower, p_upper), "ok": ok}  # fmt: skip


def verify_cell(
    store: Store,
    task: CellTask,
    margins: EquivalenceRule | None = None,
    threads: int | None = None,
) -> Verification:
    """Retrain ``task`` and compare its per-user rows with the stored ones, exactly where the
    rerun selects the same kernels as the stored cell and by the equivalence rule elsewhere.
    It trains with ``threads`` intra-op threads, by default the number the stored cell recorded
    (else 1). The outcome is stored in ``verifications``."""
    margins = margins or EquivalenceRule()
    cell, _run, stored, _curves, _values = store.cell_content(task.cell_id)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or cell.get("threads") or 1)
    try:
        result = run_cell(task)
    finally:
        torch.set_num_threads(before)
    stored_hw = json.loads(cell["hardware"]) if cell.get("hardware") else None
    current_hw = json.loads(result.hardware) if result.hardware else {}
    same, reason = same_kernels(stored_hw, current_hw)
    rule = "exact" if same else "equivalence"
    if result.status != "done":
        outcome = Verification(
            task.cell_id, rule, reason, len(stored), len(stored), math.inf, math.inf, False,
            error=result.error,
        )  # fmt: skip
    else:
        spread = seed_spread(store, task.cell_id) if rule == "equivalence" else None
        outcome = compare_rows(stored, result.metrics, rule, spread, margins)
        outcome.cell_id, outcome.reason = task.cell_id, reason
    outcome.train_s, outcome.infer_s = result.train_s, result.infer_s
    outcome.device, outcome.stored_device = result.device, str(cell["device"])
    outcome.hardware, outcome.stored_hardware = result.hardware, cell.get("hardware")
    _record(store, outcome, margins)
    return outcome


def _record(store: Store, outcome: Verification, margins: EquivalenceRule) -> None:
    row = {
        "cell_id": outcome.cell_id,
        "verified_at": datetime.now(),
        "device": outcome.device,
        "stored_device": outcome.stored_device,
        "rule": outcome.rule,
        "n_rows": outcome.n_rows,
        "n_rows_differ": outcome.n_rows_differ,
        "max_abs_diff": outcome.max_abs_diff,
        "max_mean_ndcg_diff": outcome.max_mean_ndcg_diff,
        "ok": outcome.ok,
        "train_s": outcome.train_s,
        "infer_s": outcome.infer_s,
        "reason": outcome.reason,
        "margin": outcome.margin,
        "std_fraction": margins.std_fraction,
        "min_margin": margins.min_margin,
        "tost_p": outcome.tost_p,
        "worst": outcome.worst,
        "hardware": outcome.hardware,
        "stored_hardware": outcome.stored_hardware,
        "checks": json.dumps(outcome.checks),
    }
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    store.con.execute(f"INSERT INTO verifications ({columns}) VALUES ({marks})", list(row.values()))
