"""The tuning page of a dataset: what each hyperparameter search tried, what it chose per seed on
validation, and the selected settings against the method's own (paper) settings on test.

Reads ``search_trial_results``, ``selections``, ``search_costs`` and ``search_trials`` only.
Test metrics enter this page only for the paper-settings cell and the selected cell of each seed
(the comparison tables, one set per ranking the store holds: sampled and, where the protocol
enables it, full); every other trial is shown by its validation score alone, and a pruned trial
by where its pruning rule stopped it.
"""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import polars as pl

from harness.store.store import fetch
from reports.figures import Figure
from reports.model import (
    MARK_DOWN,
    MARK_UP,
    Cell,
    Head,
    Row,
    Table,
    fmt_p,
    fmt_pm,
    signed,
    sql_lit,
)
from reports.stats import holm, paired_tests
from reports.svg import Chart

__all__ = ["has_search", "tuning_blocks", "tuning_page_name"]

ALPHA = 0.05  # significance level of the Holm-adjusted paired t-test

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
Q_COSTS = """
SELECT * FROM search_costs WHERE experiment = ? ORDER BY dataset, method
"""
# Per-user test values of the paper-settings cell and the selected cell of every seed that has
# a selection, per ranking ('sampled', and 'full' where the protocol enables it); averaged over
# those seeds (the unit of the paired tests, as in user_means).
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
SELECT s.dataset, s.method, s.side, m.ranking, m.domain, m.k, m.user_idx,
       any_value(m.n_train_domain) AS n_train_domain, count(*) AS n_seeds,
       avg(m.ndcg) AS ndcg, avg(m.hr) AS hr, avg(m.mrr) AS mrr
FROM sides s
JOIN cells c ON c.cell_id = s.cell_id AND c.status = 'done'
JOIN user_metrics m ON m.cell_id = s.cell_id
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
SELECT s.dataset, s.method, s.side, s.seed, m.ranking, m.domain, m.k,
       avg(m.ndcg) AS ndcg
FROM sides s
JOIN cells c ON c.cell_id = s.cell_id AND c.status = 'done'
JOIN user_metrics m ON m.cell_id = s.cell_id
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
    board = fetch(
        con,
        "SELECT ranking, method, domain, k, ndcg_mean FROM leaderboard WHERE experiment = ? "
        "AND dataset = ?",
        [experiment, dataset],
    )
    compare: list = []
    for ranking in _rankings(paired, seed_means):
        here = pl.col("ranking") == ranking
        paired_r, seed_means_r = paired.filter(here), seed_means.filter(here)
        board_r = board.filter(here)
        tables = [
            _paper_vs_tuned(paired_r, seed_means_r, dataset, k, subset, sparse_max, ranking)
            for k in sorted(paired_r["k"].unique().to_list())
            for subset in ("all", "sparse")
        ]
        ks = sorted(board_r["k"].unique().to_list())
        if ks:
            tables.append(_order_table(board_r, seed_means_r, dataset, ks[0], ranking))
            tables.append(_order_changes(board_r, seed_means_r, dataset, ks[0], ranking))
        compare += [t for t in tables if t is not None]
    sections.append(("Paper settings vs tuned (test)", compare))
    return sections


RANKINGS = ("sampled", "full")
RANKING_TEXT = {
    "sampled": "sampled ranking (the held-out item among the stored negatives)",
    "full": "full ranking (every item the user has not interacted with)",
}


def _rankings(*frames: pl.DataFrame) -> list[str]:
    """The rankings present in the frames: 'sampled' first, then 'full', then any other."""
    present = {r for f in frames if "ranking" in f.columns for r in f["ranking"].unique()}
    present.discard(None)
    return [r for r in RANKINGS if r in present] + sorted(present - set(RANKINGS))


def _only(frame: pl.DataFrame, ranking: str) -> pl.DataFrame:
    """The frame's rows of one ranking (a frame without a ranking column is taken as is)."""
    if "ranking" in frame.columns:
        return frame.filter(pl.col("ranking") == ranking)
    return frame


def _order_sides(board: pl.DataFrame, seed_means: pl.DataFrame, k: int, ranking: str):
    """NDCG@k per (method, domain) at paper settings and tuned, with the ranks of each side.

    Returns (merged, domains, methods, ranks, searched) or None without data. ``merged`` has
    ``paper`` (a searched method's paper-settings cell, mean over seeds; any other method's
    leaderboard value) and ``ndcg_mean`` (the leaderboard: selected cells); ranks order each
    domain by value, ties by method name."""
    board = _only(board, ranking).filter(pl.col("k") == k)
    paper = (
        _only(seed_means, ranking)
        .filter((pl.col("k") == k) & (pl.col("side") == "paper"))
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
    return merged, domains, methods, ranks, searched


def _order_table(
    board: pl.DataFrame,
    seed_means: pl.DataFrame,
    dataset: str,
    k: int,
    ranking: str = "sampled",
):
    """Table 2's order (NDCG@k per domain) with every searched method at its paper settings
    and with its selected settings; the other methods are the same in both."""
    sides = _order_sides(board, seed_means, k, ranking)
    if sides is None:
        return None
    merged, domains, methods, ranks, searched = sides
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
        f"order-{dataset}-{ranking}-k{k}",
        f"Table 2 order with paper settings vs tuned · {dataset} · NDCG@{k} ×100 (rank) · "
        f"{ranking} ranking",
        header,
        rows,
        caption=f"Mean over seeds on the {RANKING_TEXT.get(ranking, ranking + ' ranking')}; "
        "searched methods at their own params (left) and at the validation-selected trial of "
        "each seed (right, as in Table 2).",
    )


def _order_changes(
    board: pl.DataFrame,
    seed_means: pl.DataFrame,
    dataset: str,
    k: int,
    ranking: str = "sampled",
):
    """The pairs of methods (per domain) whose order in :func:`_order_table` differs between
    the paper-settings side and the tuned side (a strict order on both sides; a tie is no
    change)."""
    sides = _order_sides(board, seed_means, k, ranking)
    if sides is None:
        return None
    merged, domains, methods, _ranks, searched = sides
    value = {
        (r["domain"], r["method"], side): r[col]
        for r in merged.iter_rows(named=True)
        for side, col in (("paper", "paper"), ("tuned", "ndcg_mean"))
    }

    def shown(domain: str, first: str, second: str, side: str) -> str:
        a, b = value[(domain, first, side)], value[(domain, second, side)]
        return f"{first} > {second} ({100 * a:.2f} vs {100 * b:.2f})"

    rows = []
    for domain in domains:
        present = [m for m in methods if (domain, m, "paper") in value]
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                paper_gap = value[(domain, a, "paper")] - value[(domain, b, "paper")]
                tuned_gap = value[(domain, a, "tuned")] - value[(domain, b, "tuned")]
                if paper_gap * tuned_gap >= 0:  # same order, or a tie on one side
                    continue
                paper_a_first = paper_gap > 0
                hi, lo = (a, b) if paper_a_first else (b, a)
                moved = ", ".join(m for m in (a, b) if m in searched) or "–"
                rows.append(
                    Row(
                        [
                            Cell(domain, numeric=False),
                            Cell(
                                shown(domain, hi, lo, "paper") + " at paper settings", numeric=False
                            ),
                            Cell(shown(domain, lo, hi, "tuned") + " tuned", numeric=False),
                            Cell(moved, numeric=False),
                        ]
                    )
                )
    none = not rows
    if none:
        rows.append(Row(group="no pair of methods changes order"))
    header = [
        [
            Head("Domain", sort=0),
            Head("At paper settings", sort=1, title="NDCG@k ×100 in parentheses"),
            Head("Tuned", sort=2, title="NDCG@k ×100 in parentheses"),
            Head("Searched", sort=3, title="the methods of the pair that were searched"),
        ]
    ]
    return Table(
        f"order-changes-{dataset}-{ranking}-k{k}",
        f"Orderings that change · {dataset} · {ranking} ranking · NDCG@{k}",
        header,
        rows,
        caption=(
            "No pair of methods changes order between the paper-settings and the tuned side of "
            "the table above."
            if none
            else f"{len(rows)} pair(s) of methods whose order (per domain, in the table above) "
            "differs between the paper-settings side and the tuned side; a tie on either side "
            "is no change."
        ),
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
    paired: pl.DataFrame,
    seed_means: pl.DataFrame,
    dataset: str,
    k: int,
    subset: str,
    sparse_max,
    ranking: str = "sampled",
) -> Table | None:
    """Per (method, domain): the paper-settings cell against the selected cells on test, paired
    by user, with the t-test p Holm-adjusted over the table's rows (its family)."""
    part = _only(paired, ranking).filter(pl.col("k") == k)
    seed_means = _only(seed_means, ranking)
    if subset == "sparse":
        part = part.filter(pl.col("n_train_domain").is_between(1, sparse_max))
    found = []
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
            found.append((method, domain, res, stds))
    if not found:
        return None
    adjusted = holm([float(res.t_p[0]) for _m, _d, res, _s in found])
    rows = []
    for (method, domain, res, stds), holm_p in zip(found, adjusted, strict=True):
        diff = float(res.mean_diff[0])
        holm_p = float(holm_p)
        mark = (MARK_UP if diff > 0 else MARK_DOWN) if holm_p < ALPHA and diff != 0 else ""
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
                    Cell(signed(100 * diff), diff, mark=mark),
                    Cell(fmt_p(float(res.t_p[0])), float(res.t_p[0])),
                    Cell(fmt_p(float(res.w_p[0])), float(res.w_p[0])),
                    Cell(fmt_p(holm_p), holm_p, bold=holm_p < ALPHA),
                ]
            )
        )
    who = "all users" if subset == "all" else f"sparse users (1-{sparse_max} training interactions)"
    header = [
        [
            Head("Method", sort=0),
            Head("Domain", sort=1),
            Head("Users", sort=2),
            Head(f"Paper NDCG@{k}", sort=3),
            Head(f"Tuned NDCG@{k}", sort=4),
            Head("Δ", sort=5, title="tuned - paper, ×100"),
            Head("t-test p", sort=6, title="per comparison (uncorrected)"),
            Head("Wilcoxon p", sort=7, title="per comparison (uncorrected)"),
            Head("Holm p", sort=8, title="t-test p, Holm-adjusted over this table's rows"),
        ]
    ]
    n = len(rows)
    return Table(
        f"paper-vs-tuned-{dataset}-{ranking}-{subset}-k{k}",
        f"Paper settings vs tuned · {dataset} · {who} · NDCG@{k} · {ranking} ranking",
        header,
        rows,
        caption="The method's own params (paper settings) against the configuration selected on "
        "validation (once for every seed with select_on, else per seed), run on each seed, on "
        f"test, {RANKING_TEXT.get(ranking, ranking + ' ranking')}: per-user "
        "NDCG averaged over seeds, paired by user (two-sided paired t-test and Wilcoxon "
        "signed-rank test; both raw p's are per comparison). Holm p adjusts the t-test p over "
        f"this table's {n} comparison{'s' if n != 1 else ''} (its rows, Holm step-down); "
        f"{MARK_UP}/{MARK_DOWN} on Δ and a bold Holm p: tuned significantly above / below the "
        f"paper settings at Holm p < {ALPHA}. ± is the std over seeds.",
    )
