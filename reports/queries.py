"""Everything the report reads, as SQL over the store's documented views.

The report never imports training code: each table and figure is built from one of these
queries, and the docs' "Querying results" page (docs/querying.md) shows how to run them with
``harness sql``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from harness.store.store import fetch

__all__ = ["ReportData", "load_report_data"]

METRICS = ("mrr", "hr", "ndcg")  # column order of the paper's tables

Q_RUN = "SELECT * FROM runs WHERE experiment = ? ORDER BY started_at DESC LIMIT 1"
Q_PROTOCOL = """
SELECT p.dataset, p.dataset_fingerprint, p.candidate_set_id, p.content_hash, p.protocol,
       p.buckets, p.sparse_max, d.loader, d.n_users, d.source, s.split_rule, s.n_negatives,
       s.n_valid_cases, s.n_test_cases, coalesce(d.checked, true) AS data_checked
FROM experiment_protocol p
JOIN datasets d ON d.dataset_fingerprint = p.dataset_fingerprint
JOIN candidate_sets s ON s.candidate_set_id = p.candidate_set_id
WHERE p.experiment = ? ORDER BY p.dataset
"""
# Table 1: per domain, users / items / interactions of the data as released, and the split.
Q_TABLE1 = """
SELECT e.dataset, d.domain, d.n_users, d.n_items, d.n_interactions,
       d.n_interactions / (CAST(d.n_users AS DOUBLE) * d.n_items) AS density,
       median(a.n_train) FILTER (WHERE a.n_interactions > 0) AS median_train,
       count(a.user_idx) FILTER (WHERE a.n_interactions > 0 AND a.n_train = 0) AS n_cold,
       count(a.user_idx) FILTER (WHERE a.n_train BETWEEN 1 AND e.sparse_max) AS n_sparse,
       any_value(e.sparse_max) AS sparse_max
FROM experiment_protocol e
JOIN dataset_domains d ON d.dataset_fingerprint = e.dataset_fingerprint
LEFT JOIN user_activity a
  ON a.experiment = e.experiment AND a.dataset = e.dataset AND a.domain = d.domain
WHERE e.experiment = ?
GROUP BY e.dataset, d.domain, d.n_users, d.n_items, d.n_interactions
ORDER BY e.dataset, d.domain
"""
Q_TEST_CASES = """
SELECT p.dataset, c.domain, count(*) AS n_test_cases
FROM experiment_protocol p JOIN candidates c ON c.candidate_set_id = p.candidate_set_id
WHERE p.experiment = ? AND c.split = 'test' GROUP BY ALL
"""
Q_METHODS = "SELECT * FROM method_info WHERE experiment = ? ORDER BY dataset, method"
Q_LEADERBOARD = "SELECT * FROM leaderboard WHERE experiment = ?"
Q_SPARSE = "SELECT * FROM sparse_summary WHERE experiment = ?"
Q_BUCKETS = "SELECT * FROM bucket_summary WHERE experiment = ?"
Q_USER_MEANS = """
SELECT dataset, method, ranking, domain, k, user_id, n_train_domain, bucket, bucket_label,
       is_sparse, n_seeds, hr, ndcg, mrr
FROM user_means WHERE experiment = ?
"""
Q_TIMINGS = "SELECT * FROM timings WHERE experiment = ? ORDER BY dataset, method"
Q_EPOCH_TIMINGS = """
SELECT * FROM epoch_timings WHERE experiment = ? ORDER BY dataset, method, stage, domain
"""
Q_PLAN = """
SELECT dataset, method, display_name, kind, seed, cell_id, status, error, train_s, infer_s,
       epochs, best_epoch, best_valid, device
FROM plan WHERE experiment = ? ORDER BY dataset, method, seed
"""
Q_CELLS = """
SELECT p.cell_id, c.code_version, c.params, c.run_id, c.finished_at
FROM plan_cells p JOIN cells c USING (cell_id) WHERE p.experiment = ?
"""
Q_CURVES = """
SELECT dataset, method, seed, stage, coalesce(domain, '') AS domain, name, epoch, value
FROM training_curves WHERE experiment = ? ORDER BY dataset, method, stage, domain, name, seed, epoch
"""
Q_TEMPERATURES = "SELECT * FROM temperature_summary WHERE experiment = ?"
Q_ACTIVITY = "SELECT * FROM activity_distribution WHERE experiment = ?"
Q_SEEDS = "SELECT DISTINCT seed FROM plan_cells WHERE experiment = ? ORDER BY seed"


@dataclass
class ReportData:
    experiment: str
    run: dict[str, Any]
    versions: dict[str, str]
    seeds: list[int]
    protocol: pl.DataFrame
    table1: pl.DataFrame
    test_cases: pl.DataFrame
    methods: pl.DataFrame
    leaderboard: pl.DataFrame
    sparse: pl.DataFrame
    buckets: pl.DataFrame
    user_means: pl.DataFrame
    timings: pl.DataFrame
    epoch_timings: pl.DataFrame
    plan: pl.DataFrame
    cells: pl.DataFrame
    curves: pl.DataFrame
    temperatures: pl.DataFrame
    activity: pl.DataFrame
    datasets: list[str] = field(default_factory=list)

    def protocol_of(self, dataset: str) -> dict[str, Any]:
        rows = self.protocol.filter(pl.col("dataset") == dataset).to_dicts()
        if not rows:
            return {}
        row = dict(rows[0])
        try:
            row["protocol_json"] = json.loads(row.get("protocol") or "{}")
        except json.JSONDecodeError:
            row["protocol_json"] = {}
        return row

    def display_names(self, dataset: str) -> dict[str, str]:
        part = self.methods.filter(pl.col("dataset") == dataset)
        return {r["method"]: r["display_name"] or r["method"] for r in part.iter_rows(named=True)}


def load_report_data(con: duckdb.DuckDBPyConnection, experiment: str) -> ReportData:
    def q(sql: str) -> pl.DataFrame:
        return fetch(con, sql, [experiment])

    run = q(Q_RUN)
    info = run.row(0, named=True) if len(run) else {}
    try:
        versions = json.loads(info.get("versions") or "{}")
    except json.JSONDecodeError:
        versions = {}
    protocol = q(Q_PROTOCOL)
    plan = q(Q_PLAN)
    datasets = sorted(set(plan["dataset"].to_list()) | set(protocol["dataset"].to_list()))
    return ReportData(
        experiment=experiment,
        run=info,
        versions=versions,
        seeds=[int(s) for s in q(Q_SEEDS)["seed"].to_list()],
        protocol=protocol,
        table1=q(Q_TABLE1),
        test_cases=q(Q_TEST_CASES),
        methods=q(Q_METHODS),
        leaderboard=q(Q_LEADERBOARD),
        sparse=q(Q_SPARSE),
        buckets=q(Q_BUCKETS),
        user_means=q(Q_USER_MEANS),
        timings=q(Q_TIMINGS),
        epoch_timings=q(Q_EPOCH_TIMINGS),
        plan=plan,
        cells=q(Q_CELLS),
        curves=q(Q_CURVES),
        temperatures=q(Q_TEMPERATURES),
        activity=q(Q_ACTIVITY),
        datasets=datasets,
    )
