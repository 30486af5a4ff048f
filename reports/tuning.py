"""The tuning page of a dataset: what each hyperparameter search tried, what it chose per seed on
validation, and the selected settings against the method's own (paper) settings on test.

Reads ``search_trial_results``, ``selections``, ``search_costs`` and ``search_trials`` only.
Test metrics enter this page only for the paper-settings cell and the selected cell of each seed
(the comparison table); every other trial is shown by its validation score alone, and a pruned
trial by where its pruning rule stopped it.
"""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import polars as pl

from harness.store.store import fetch
from reports.figures import Figure
from reports.model import Cell, Head, Row, Table, fmt_p, fmt_pm, signed, sql_lit
from reports.stats import paired_tests
from reports.svg import Chart

__all__ = ["has_search", "tuning_blocks", "tuning_page_name"]

Q_TRIALS = """
SELECT dataset, method, seed, trial, role, strategy, round, cell_id, search_values, status,
       validation, train_s, infer_s, selected, pruned_at, cpu_s
FROM search_trial_results WHERE experiment = ? ORDER BY dataset, method, seed, trial
"""
Q_SELECTIONS = """
SELECT dataset, method, seed, strategy, chosen_params, validation, trials_used, budget,
       trials_failed, complete, trial, cell_id, trials_pruned, select_on, select_score
FROM selections WHERE experiment = ? ORDER BY dataset, method, seed
"""
# Per-user test values of the paper-settings cell and the selected cell of every seed that has
# a selection; averaged over those seeds (the unit of the paired tests, as in user_means).
Q_COSTS = """
SELECT * FROM search_costs WHERE experiment = ? ORDER BY dataset, method
"""
Q_PAIRED = """
WITH chosen AS (
    SELECT dataset, method, seed, cell_id FROM search_selections
    WHERE experiment = $1 AND cell_id IS NOT NULL
), sides AS (
    SELECT dataset, method, seed, 'tuned' AS side, cell_id FROM chosen
    UNION ALL
    SELECT t.dataset, t.method, t.seed, 'paper' AS side, t.cell_id
    FROM search_trials t JOIN chosen USING (dataset, method, seed)
    WHERE t.experiment = $1 AND t.role = 'paper'
)
SELECT s.dataset, s.method, s.side, m.domain, m.k, m.user_idx,
       any_value(m.n_train_domain) AS n_train_domain, count(*) AS n_seeds,
       avg(m.ndcg) AS ndcg, avg(m.hr) AS hr, avg(m.mrr) AS mrr
FROM sides s
JOIN cells c ON c.cell_id = s.cell_id AND c.status = 'done'
JOIN user_metrics m ON m.cell_id = s.cell_id AND m.ranking = 'sampled'
GROUP BY ALL
"""
Q_SEED_MEANS = """
WITH chosen AS (
    SELECT dataset, method, seed, cell_id FROM search_selections
    WHERE experiment = $1 AND cell_id IS NOT NULL
), sides AS (
    SELECT dataset, method, seed, 'tuned' AS side, cell_id FROM chosen
    UNION ALL
    SELECT t.dataset, t.method, t.seed, 'paper' AS side, t.cell_id
    FROM search_trials t JOIN chosen USING (dataset, method, seed)
    WHERE t.experiment = $1 AND t.role = 'paper'
)
SELECT s.dataset, s.method, s.side, s.seed, m.domain, m.k, avg(m.ndcg) AS ndcg
FROM sides s
JOIN cells c ON c.cell_id = s.cell_id AND c.status = 'done'
JOIN user_metrics m ON m.cell_id = s.cell_id AND m.ranking = 'sampled'
GROUP BY ALL
"""


def tuning_page_name(dataset: str, safe_name) -> str:
    return f"tuning-{safe_name(dataset)}.html"


def has_search(con: duckdb.DuckDBPyConnection, experiment: str) -> list[str]:
    """Datasets of the experiment with stored search trials (none for an older store)."""
    try:
        rows = con.execute(
            "SELECT DISTINCT dataset FROM search_trials WHERE experiment = ? ORDER BY dataset",
            [experiment],
        ).fetchall()
    except duckdb.Error:
        return []
    return [r[0] for r in rows]


def _values(text: str | None) -> dict:
    return json.loads(text) if text else {}


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _metric_name(con, experiment: str, dataset: str) -> str:
    rows = con.execute(
        "SELECT protocol FROM experiment_protocol WHERE experiment = ? AND dataset = ?",
        [experiment, dataset],
    ).fetchall()
    try:
        k = json.loads(rows[0][0]).get("validation_k", 10) if rows else 10
    except (TypeError, json.JSONDecodeError):
        k = 10
    return f"validation NDCG@{k}"


def _sparse_max(con, experiment: str, dataset: str) -> int:
    rows = con.execute(
        "SELECT sparse_max FROM experiment_protocol WHERE experiment = ? AND dataset = ?",
        [experiment, dataset],
    ).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else 2


def tuning_blocks(con: duckdb.DuckDBPyConnection, experiment: str, dataset: str) -> list:
    """(title, [tables and figures]) sections of the dataset's tuning page."""
    trials = fetch(con, Q_TRIALS, [experiment]).filter(pl.col("dataset") == dataset)
    selections = fetch(con, Q_SELECTIONS, [experiment]).filter(pl.col("dataset") == dataset)
    costs = fetch(con, Q_COSTS, [experiment]).filter(pl.col("dataset") == dataset)
    metric = _metric_name(con, experiment, dataset)
    sections = [
        (
            "Searches",
            [
                _summary_table(trials, selections, dataset, experiment, metric),
                _cost_table(costs, dataset, experiment),
            ],
        ),
        ("Chosen settings per seed", [_selection_table(trials, selections, dataset, experiment)]),
        ("Validation against each searched parameter", _figures(trials, dataset, metric)),
    ]
    paired = fetch(con, Q_PAIRED, [experiment]).filter(pl.col("dataset") == dataset)
    seed_means = fetch(con, Q_SEED_MEANS, [experiment]).filter(pl.col("dataset") == dataset)
    sparse_max = _sparse_max(con, experiment, dataset)
    compare = [
        _paper_vs_tuned(paired, seed_means, dataset, k, subset, sparse_max)
        for k in sorted(paired["k"].unique().to_list())
        for subset in ("all", "sparse")
    ]
    board = fetch(
        con,
        "SELECT method, domain, k, ndcg_mean FROM leaderboard WHERE experiment = ? "
        "AND dataset = ? AND ranking = 'sampled'",
        [experiment, dataset],
    )
    ks = sorted(board["k"].unique().to_list())
    order = _order_table(board, seed_means, dataset, ks[0]) if ks else None
    compare = [t for t in compare if t is not None] + ([order] if order else [])
    sections.append(("Paper settings vs tuned (test)", compare))
    return sections


def _order_table(board: pl.DataFrame, seed_means: pl.DataFrame, dataset: str, k: int):
    """Table 2's order (NDCG@k per domain) with every searched method at its paper settings
    and with its selected settings; the other methods are the same in both."""
    board = board.filter(pl.col("k") == k)
    paper = (
        seed_means.filter((pl.col("k") == k) & (pl.col("side") == "paper"))
        .group_by("method", "domain")
        .agg(pl.col("ndcg").mean().alias("paper"))
    )
    if board.height == 0 or paper.height == 0:
        return None
    merged = board.join(paper, on=["method", "domain"], how="left").with_columns(
        pl.col("paper").fill_null(pl.col("ndcg_mean"))
    )
    domains = sorted(merged["domain"].unique().to_list())
    methods = sorted(merged["method"].unique().to_list())
    ranks: dict[tuple[str, str, str], int] = {}
    for domain in domains:
        part = merged.filter(pl.col("domain") == domain)
        for side, col in (("paper", "paper"), ("tuned", "ndcg_mean")):
            ordered = part.sort([col, "method"], descending=[True, False])["method"].to_list()
            for i, method in enumerate(ordered, start=1):
                ranks[(domain, method, side)] = i
    searched = set(paper["method"].to_list())
    rows = []
    for method in methods:
        cells = [Cell(method + (" (searched)" if method in searched else ""), numeric=False)]
        for domain in domains:
            got = merged.filter((pl.col("method") == method) & (pl.col("domain") == domain))
            if got.height == 0:
                cells += [Cell("–"), Cell("–")]
                continue
            for side, col in (("paper", "paper"), ("tuned", "ndcg_mean")):
                value = got[col][0]
                rank = ranks[(domain, method, side)]
                cells.append(Cell(f"{100 * value:.2f} (#{rank})", float(value)))
        rows.append(Row(cells))
    header = [
        [Head("Method", rowspan=2, sort=0)] + [Head(d, colspan=2) for d in domains],
        [
            Head(label, sort=1 + 2 * i + j)
            for i in range(len(domains))
            for j, label in enumerate(("paper settings", "tuned"))
        ],
    ]
    return Table(
        f"order-{dataset}-k{k}",
        f"Table 2 order with paper settings vs tuned · {dataset} · NDCG@{k} ×100 (rank)",
        header,
        rows,
        caption="Mean over seeds; searched methods at their own params (left) and at the "
        "validation-selected trial of each seed (right, as in Table 2).",
    )


def _selection_rule(sel: pl.DataFrame) -> str:
    """'per seed', or the seeds one selection for every seed was made on."""
    on = sel["select_on"][0] if "select_on" in sel.columns else None
    if not on:
        return "per seed"
    seeds = json.loads(on)
    return f"once, on seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _summary_table(trials, selections, dataset, experiment, metric) -> Table:
    rows = []
    for method in sorted(selections["method"].unique().to_list()):
        sel = selections.filter(pl.col("method") == method)
        tr = trials.filter((pl.col("method") == method) & (pl.col("role") == "trial"))
        params = sorted({k for v in tr["search_values"].to_list() for k in _values(v)})
        once = bool(sel["select_on"][0])
        # one selection shared by every seed: its numbers once, not once per seed
        sel_rows = sel.head(1) if once else sel
        scores = sel_rows["select_score"] if once else sel["validation"]
        valid = [v for v in scores.to_list() if v is not None]
        pruned = sel_rows["trials_pruned"].fill_null(0)
        rows.append(
            Row(
                [
                    Cell(method, numeric=False, cls="name"),
                    Cell(sel["strategy"][0], numeric=False),
                    Cell(", ".join(params), numeric=False),
                    Cell(_selection_rule(sel), numeric=False),
                    Cell(str(sel["budget"][0]), float(sel["budget"][0])),
                    Cell(
                        " / ".join(str(x) for x in sel_rows["trials_used"].to_list()),
                        float(sel_rows["trials_used"].sum()),
                    ),
                    Cell(str(int(pruned.sum())), float(pruned.sum())),
                    Cell(
                        str(int(sel_rows["trials_failed"].sum())),
                        float(sel_rows["trials_failed"].sum()),
                    ),
                    Cell(
                        fmt_pm(
                            float(np.mean(valid)) if valid else None,
                            float(np.std(valid, ddof=1)) if len(valid) > 1 else None,
                        ),
                        float(np.mean(valid)) if valid else None,
                    ),
                ]
            )
        )
    header = [
        [
            Head("Method", sort=0),
            Head("Strategy", sort=1),
            Head("Searched", sort=2),
            Head("Selection", sort=3, title="a selection per seed, or one for every seed"),
            Head("Budget", sort=4, title="trials (configurations) per selection"),
            Head("Trials used", sort=5, title="finished trials per selection"),
            Head("Pruned", sort=6, title="trials stopped by the pruner (never selected)"),
            Head("Failed", sort=7),
            Head(f"Selected {metric} ×100", sort=8),
        ]
    ]
    return Table(
        f"search-{dataset}",
        f"Hyperparameter searches · {dataset}",
        header,
        rows,
        caption="Every searched method gets the same budget of trials unless it sets its own; "
        "a selection is the trial with the best validation score (mean over its seeds when "
        "made once for every seed). Pruned and failed trials count against the budget.",
        sql=f"SELECT * FROM selections WHERE experiment = {sql_lit(experiment)} "
        f"AND dataset = {sql_lit(dataset)} ORDER BY method, seed",
    )


def _cost_table(costs: pl.DataFrame, dataset: str, experiment: str) -> Table:
    """What each search cost in CPU seconds: trials (done / pruned), paper cells, final runs."""
    rows = []
    for r in costs.sort("method").iter_rows(named=True):
        cells = [
            Cell(r["method"], numeric=False, cls="name"),
            Cell(str(r["trial_cells"]), float(r["trial_cells"])),
            Cell(str(r["trials_done"]), float(r["trials_done"])),
            Cell(str(r["trials_pruned"]), float(r["trials_pruned"])),
            Cell(
                f"{r['trials_failed']} / {r['trials_pending']}",
                float(r["trials_failed"] + r["trials_pending"]),
            ),
        ]
        for key in ("trial_cpu_s", "pruned_cpu_s", "paper_cpu_s", "final_cpu_s", "total_cpu_s"):
            cells.append(Cell(f"{r[key]:.0f}" if r[key] >= 100 else f"{r[key]:.1f}", float(r[key])))
        cells.append(Cell(f"{r['total_cpu_s'] / 3600:.2f}", float(r["total_cpu_s"]) / 3600))
        rows.append(Row(cells))
    header = [
        [
            Head("Method", sort=0),
            Head("Trial cells", sort=1, title="every searched seed counted"),
            Head("Done", sort=2),
            Head("Pruned", sort=3),
            Head("Failed / pending", sort=4),
            Head("Trials CPU s", sort=5),
            Head("of which pruned", sort=6, title="CPU seconds of the pruned trials"),
            Head("Paper cells CPU s", sort=7),
            Head("Final runs CPU s", sort=8, title="the selected values on the other seeds"),
            Head("Total CPU s", sort=9),
            Head("CPU h", sort=10),
        ]
    ]
    estimated = int(costs["cpu_estimated"].sum()) if costs.height else 0
    note = (
        f" {estimated} cell(s) stored before CPU time was measured count as wall seconds × threads."
        if estimated
        else ""
    )
    return Table(
        f"search-cost-{dataset}",
        f"What each search cost · {dataset}",
        header,
        rows,
        caption="Process CPU seconds of training and evaluation per cell, each cell counted once "
        "(a pruned trial costs what it ran before it stopped)." + note,
        sql=f"SELECT * FROM search_costs WHERE experiment = {sql_lit(experiment)} "
        f"AND dataset = {sql_lit(dataset)} ORDER BY method",
    )


def _selection_table(trials, selections, dataset, experiment) -> Table:
    rows = []
    for r in selections.iter_rows(named=True):
        paper = trials.filter(
            (pl.col("method") == r["method"])
            & (pl.col("seed") == r["seed"])
            & (pl.col("role") == "paper")
        )
        paper_valid = paper["validation"][0] if paper.height else None
        chosen = _values(r["chosen_params"])
        rows.append(
            Row(
                [
                    Cell(r["method"], numeric=False, cls="name"),
                    Cell(str(r["seed"]), float(r["seed"])),
                    Cell(
                        ", ".join(f"{k} = {_show(v)}" for k, v in chosen.items())
                        if r["complete"]
                        else "search unfinished",
                        numeric=False,
                    ),
                    Cell(str(r["trial"] or "–"), float(r["trial"] or 0)),
                    Cell(fmt_pm(r["validation"], None), r["validation"]),
                    Cell(fmt_pm(paper_valid, None), paper_valid),
                ]
            )
        )
    header = [
        [
            Head("Method", sort=0),
            Head("Seed", sort=1),
            Head("Chosen values", sort=2),
            Head("Trial", sort=3),
            Head("Validation ×100", sort=4),
            Head("Paper settings, validation ×100", sort=5),
        ]
    ]
    return Table(
        f"selections-{dataset}",
        f"Chosen settings per seed · {dataset}",
        header,
        rows,
        sql=f"SELECT method, seed, chosen_params, trial, validation FROM selections "
        f"WHERE experiment = {sql_lit(experiment)} AND dataset = {sql_lit(dataset)}",
    )


def _figures(trials: pl.DataFrame, dataset: str, metric: str) -> list[Figure]:
    out = []
    searched = trials.filter(pl.col("role") == "trial")
    for method in sorted(searched["method"].unique().to_list()):
        rows = searched.filter(pl.col("method") == method).to_dicts()
        names = sorted({k for r in rows for k in _values(r["search_values"])})
        for name in names:
            values = [_values(r["search_values"]).get(name) for r in rows]
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            positive = numeric and all(v > 0 for v in values)
            log = positive and max(values) / min(values) >= 100
            categories = None
            if not numeric:
                categories = sorted({str(v) for v in values})
            chart = Chart(
                f"{method}: {metric} vs {name}",
                xlabel=f"log10({name})" if log else name,
                ylabel=f"{metric} ×100",
                categories=categories,
            )
            for seed in sorted({r["seed"] for r in rows}):
                xs, ys, labels, titles = [], [], [], []
                for r, v in zip(rows, values, strict=True):
                    if r["seed"] != seed or r["validation"] is None:
                        continue
                    if not math.isfinite(r["validation"]):
                        continue
                    x = categories.index(str(v)) if categories else (math.log10(v) if log else v)
                    xs.append(x)
                    ys.append(100 * r["validation"])
                    labels.append("★" if r["selected"] else "")
                    titles.append(
                        f"seed {seed}, trial {r['trial']}: {name} = {_show(v)}, "
                        f"{100 * r['validation']:.2f}" + (" (selected)" if r["selected"] else "")
                    )
                if xs:
                    chart.points(f"seed {seed}", xs, ys, labels, titles)
            out.append(
                Figure(
                    f"tuning-{dataset}-{method}-{name}",
                    f"{method}: {name}",
                    chart.render(),
                    caption=f"{metric} of every finished trial (one point per trial and seed; "
                    "★ the selected trial). Other searched parameters vary too; pruned trials "
                    "have no final score and are not shown.",
                )
            )
    return out


def _paper_vs_tuned(
    paired: pl.DataFrame, seed_means: pl.DataFrame, dataset: str, k: int, subset: str, sparse_max
) -> Table | None:
    part = paired.filter(pl.col("k") == k)
    if subset == "sparse":
        part = part.filter(pl.col("n_train_domain").is_between(1, sparse_max))
    rows = []
    for method in sorted(part["method"].unique().to_list()):
        for domain in sorted(part["domain"].unique().to_list()):
            both = part.filter((pl.col("method") == method) & (pl.col("domain") == domain))
            paper = both.filter(pl.col("side") == "paper").select("user_idx", "ndcg")
            tuned = both.filter(pl.col("side") == "tuned").select("user_idx", "ndcg")
            joined = paper.join(tuned, on="user_idx", suffix="_tuned").sort("user_idx")
            if joined.height == 0:
                continue
            res = paired_tests(joined["ndcg_tuned"].to_numpy(), joined["ndcg"].to_numpy())
            seeds = seed_means.filter(
                (pl.col("method") == method) & (pl.col("domain") == domain) & (pl.col("k") == k)
            )
            stds = {}
            for side in ("paper", "tuned"):
                vals = seeds.filter(pl.col("side") == side)["ndcg"].to_list()
                stds[side] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
            diff = float(res.mean_diff[0])
            rows.append(
                Row(
                    [
                        Cell(method, numeric=False, cls="name"),
                        Cell(domain, numeric=False),
                        Cell(str(res.n), float(res.n)),
                        Cell(
                            fmt_pm(
                                float(res.reference_mean[0]),
                                stds["paper"] if subset == "all" else None,
                            ),
                            float(res.reference_mean[0]),
                        ),
                        Cell(
                            fmt_pm(
                                float(res.method_mean[0]),
                                stds["tuned"] if subset == "all" else None,
                            ),
                            float(res.method_mean[0]),
                        ),
                        Cell(signed(100 * diff), diff),
                        Cell(fmt_p(float(res.t_p[0])), float(res.t_p[0])),
                        Cell(fmt_p(float(res.w_p[0])), float(res.w_p[0])),
                    ]
                )
            )
    if not rows:
        return None
    who = "all users" if subset == "all" else f"sparse users (1-{sparse_max} training interactions)"
    header = [
        [
            Head("Method", sort=0),
            Head("Domain", sort=1),
            Head("Users", sort=2),
            Head(f"Paper NDCG@{k}", sort=3),
            Head(f"Tuned NDCG@{k}", sort=4),
            Head("Δ", sort=5, title="tuned - paper, ×100"),
            Head("t-test p", sort=6),
            Head("Wilcoxon p", sort=7),
        ]
    ]
    return Table(
        f"paper-vs-tuned-{dataset}-{subset}-k{k}",
        f"Paper settings vs tuned · {dataset} · {who} · NDCG@{k}",
        header,
        rows,
        caption="The method's own params (paper settings) against the validation-selected trial "
        "of each seed, on test: per-user NDCG averaged over seeds, paired by user (two-sided "
        "paired t-test and Wilcoxon signed-rank test, uncorrected); ± is the std over seeds.",
    )
