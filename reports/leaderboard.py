"""Static HTML leaderboard built from the store's views only (never from training code).

Layout follows the paper's Tables 2/8: one table per dataset and K, methods grouped by family
(single-domain, cross-domain, ours) as rows, domains x (MRR, HR, NDCG) as columns, mean ± std
over seeds (×100), best value per column in bold and runner-up underlined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
from jinja2 import Environment, PackageLoader, select_autoescape

from harness.store.store import fetch

__all__ = ["LeaderboardTable", "leaderboard_tables", "write_report"]

FAMILY_ORDER = {"single-domain": 0, "cross-domain": 1, "ours": 2}
METRICS = ("mrr", "hr", "ndcg")


@dataclass
class Cell:
    mean: float | None
    std: float | None
    n_seeds: int
    rank: int | None = None  # 1 = best in its column, 2 = runner-up

    def text(self) -> str:
        if self.mean is None:
            return "–"
        std = "" if self.std is None else f" ± {100 * self.std:.2f}"
        return f"{100 * self.mean:.2f}{std}"


@dataclass
class LeaderboardTable:
    dataset: str
    k: int
    ranking: str
    domains: list[str]
    rows: list[tuple[str, str, list[Cell]]]  # (family, method, cells in domain x metric order)
    n_users: dict[str, int]


def leaderboard_tables(con: duckdb.DuckDBPyConnection, experiment: str) -> list[LeaderboardTable]:
    board = fetch(con, "SELECT * FROM leaderboard WHERE experiment = ?", [experiment])
    names = fetch(
        con,
        "SELECT DISTINCT dataset, method, display_name FROM plan_cells WHERE experiment = ?",
        [experiment],
    )
    shown = {(r["dataset"], r["method"]): r["display_name"] for r in names.iter_rows(named=True)}
    tables = []
    for (dataset, k, ranking), part in sorted(
        board.group_by(["dataset", "k", "ranking"]),
        key=lambda g: (g[0][0], g[0][2] != "sampled", g[0][1]),
    ):
        domains = sorted(part["domain"].unique().to_list())
        methods = (
            part.select("method", "family")
            .unique()
            .with_columns(pl.col("family").replace_strict(FAMILY_ORDER, default=9).alias("order"))
            .sort("order", "method")
        )
        index = {(r["method"], r["domain"]): r for r in part.iter_rows(named=True)}
        rows = []
        for method, family, _ in methods.iter_rows():
            cells = []
            for domain in domains:
                r = index.get((method, domain))
                for metric in METRICS:
                    cells.append(
                        Cell(r[f"{metric}_mean"], r[f"{metric}_std"], r["n_seeds"])
                        if r
                        else Cell(None, None, 0)
                    )
            rows.append((family, shown.get((dataset, method), method), cells))
        _mark_best(rows)
        n_users = {r["domain"]: r["n_users"] for r in part.iter_rows(named=True)}
        tables.append(LeaderboardTable(dataset, int(k), ranking, domains, rows, n_users))
    return tables


def _mark_best(rows: list[tuple[str, str, list[Cell]]]) -> None:
    if not rows:
        return
    for col in range(len(rows[0][2])):
        values = sorted(
            {round(r[2][col].mean, 12) for r in rows if r[2][col].mean is not None}, reverse=True
        )
        for r in rows:
            cell = r[2][col]
            if cell.mean is None:
                continue
            position = values.index(round(cell.mean, 12)) + 1
            cell.rank = position if position <= 2 else None


def _provenance(con: duckdb.DuckDBPyConnection, experiment: str) -> dict:
    run = fetch(
        con,
        "SELECT * FROM runs WHERE experiment = ? ORDER BY started_at DESC LIMIT 1",
        [experiment],
    )
    datasets = fetch(
        con,
        "SELECT DISTINCT p.dataset, c.dataset_fingerprint, c.candidate_set_id, s.content_hash, "
        "s.split_rule, s.n_negatives, s.n_valid_cases, s.n_test_cases "
        "FROM plan_cells p JOIN cells c USING (cell_id) "
        "JOIN candidate_sets s ON s.candidate_set_id = c.candidate_set_id "
        "WHERE p.experiment = ? ORDER BY p.dataset",
        [experiment],
    )
    stats = fetch(
        con,
        "SELECT DISTINCT p.dataset, d.domain, d.n_users, d.n_items, d.n_interactions "
        "FROM plan_cells p JOIN cells c USING (cell_id) JOIN dataset_domains d "
        "ON d.dataset_fingerprint = c.dataset_fingerprint WHERE p.experiment = ? "
        "ORDER BY p.dataset, d.domain",
        [experiment],
    )
    plan = fetch(
        con,
        "SELECT dataset, method, seed, status, error, train_s, infer_s, epochs, "
        "device FROM plan WHERE experiment = ? ORDER BY dataset, method, seed",
        [experiment],
    )
    info = run.row(0, named=True) if len(run) else {}
    versions = json.loads(info.get("versions") or "{}")
    return {
        "run": info,
        "versions": versions,
        "datasets": datasets.to_dicts(),
        "stats": stats.to_dicts(),
        "plan": plan.to_dicts(),
        "seeds": sorted({r["seed"] for r in plan.to_dicts()}),
    }


def write_report(store_path: Path, out_dir: Path, experiment: str) -> Path:
    """Render ``index.html`` (self-contained, no network) into ``out_dir``; return its path."""
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        tables = leaderboard_tables(con, experiment)
        provenance = _provenance(con, experiment)
    finally:
        con.close()
    env = Environment(
        loader=PackageLoader("reports", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    html = env.get_template("leaderboard.html.j2").render(
        experiment=experiment, tables=tables, metrics=[m.upper() for m in METRICS], prov=provenance
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(html, encoding="utf-8")
    return path
