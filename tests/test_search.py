"""Hyperparameter search: spaces and their errors, proposals (grid / random / TPE), trials as
cells, selection on validation only, and that specs without a search plan what they did."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import duckdb
import pytest

import harness.runner.cells as cells_mod
from harness.runner.cells import plan_cells
from harness.runner.prepare import prepare
from harness.search.driver import PENDING_PREFIX, Search
from harness.search.space import Dimension
from harness.search.strategies import random_points, tpe_points
from harness.spec.load import SpecError, load_spec
from harness.spec.schema import ProtocolSpec
from tests.conftest import require_spec_data

REPO = Path(__file__).resolve().parents[1]

BASE = """
[experiment]
name = "s"
seeds = [0, 1]
{budget}

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 200
n_items = [300, 200, 200]
n_interactions = [3000, 1200, 1200]

[protocol]
negatives = 49
ks = [10]

[methods.pop]
kind = "popularity"

[methods.bprmf]
kind = "bprmf"
[methods.bprmf.params]
embedding_size = 16
batch_size = 256
max_epochs = 8
patience = 3
{search}
"""


def _load(tmp_path: Path, search: str = "", budget: str = "", name: str = "s.toml"):
    path = tmp_path / name
    path.write_text(BASE.format(search=search, budget=budget))
    return load_spec(path)


def _issues(tmp_path: Path, search: str, budget: str = "") -> list:
    with pytest.raises(SpecError) as info:
        _load(tmp_path, search, budget)
    return info.value.issues


def run_and_report(loaded, out: Path):
    """`harness run` without the CLI: run the cells, then write the report (the CLI's job)."""
    from harness.runner.runner import run_spec
    from reports.leaderboard import ReportOptions, write_report

    summary = run_spec(loaded, out, device="cpu")
    write_report(
        out / "results.duckdb",
        out / "report",
        experiment=loaded.spec.experiment.name,
        options=ReportOptions.from_spec(loaded.spec),
    )
    return summary


def _tasks(loaded):
    prepared = {n: prepare(loaded, n, None) for n in loaded.spec.datasets}
    return plan_cells(loaded, prepared, "cpu")


# -- specs without a search are untouched -------------------------------------------------------
def test_fingerprints_and_spec_hashes_of_specs_without_search_are_unchanged():
    # values computed before the search fields existed
    assert ProtocolSpec().fingerprint() == "c3ba017603adcfba"
    for spec, digest in [
        ("bprmf_reg_douban", "7cbece7fe5c0aa38"),  # names the registered dataset since #22
        ("uclr_stage_c", "aa7ee311cb5ef114"),
        ("amazon_synthetic", "9cb4c76610527e88"),
    ]:
        assert load_spec(REPO / "specs" / f"{spec}.toml", check_files=False).spec_hash == digest


def test_spec_without_search_plans_exactly_the_same_cells(monkeypatch):
    # cell ids of specs/bprmf_reg_douban.toml (real Douban) before the search existed (code
    # version held fixed, so a method's version bump does not change this golden list)
    monkeypatch.setattr(cells_mod, "code_version", lambda kind: "fixed")
    require_spec_data(REPO / "specs" / "bprmf_reg_douban.toml")
    loaded = load_spec(REPO / "specs" / "bprmf_reg_douban.toml")
    tasks = _tasks(loaded)
    golden = [
        "6c3d1894a018a7aab7d0", "3aca12ece41699cf2f4f", "38e94e38cdd3a2264bfd",
        "745e702bb815a660a2b5", "845ca2d57cfb5ab78dc1", "dab4e6558604898738fe",
        "0075667918cfdb5d6609", "a33944a1ea22524a4b5a", "6eac668ad18f04293c6a",
        "ed43d48929f736f2e3b8", "21895f644f9616bfc0eb", "096e60980de2f7c5d6cb",
        "062aabf56e17a089ab3a", "8f961ddb57d4f45ec266", "2970fd2446b24821349e",
    ]  # fmt: skip
    assert [t.cell_id for t in tasks] == golden
    search = Search(loaded, tasks)
    assert not search.active
    assert [t.cell_id for t in search.propose(None)] == golden
    assert [t.cell_id for t in search.plan_tasks()] == golden


def test_a_search_leaves_other_methods_and_the_paper_cell_unchanged(tmp_path):
    plain = _tasks(_load(tmp_path))
    loaded = _load(tmp_path, "[methods.bprmf.search]\nreg = [1e-5, 1e-2]", name="b.toml")
    search = Search(loaded, _tasks(loaded))
    proposed = search.propose(None)
    ids = {t.cell_id for t in proposed}
    assert {t.cell_id for t in plain} <= ids  # pop cells and bprmf's own params (paper) cells
    assert len(proposed) == len(plain) + 2 * 2
    planned = search.plan_tasks()
    assert [(t.method, t.seed) for t in planned] == [(t.method, t.seed) for t in plain]
    pending = [t for t in planned if t.method == "bprmf"]
    assert all(t.cell_id.startswith(PENDING_PREFIX) for t in pending)


# -- spaces and their errors ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("search", "key", "needle"),
    [
        ("regg = [1e-5]", "methods.bprmf.search.regg", "did you mean 'reg'"),
        (
            'strategy = "random"\ntrials = 2\nreg = { low = 1.0, high = 0.1 }',
            "methods.bprmf.search.reg.low",
            "low must be below high",
        ),
        (
            'strategy = "tpe"\ntrials = 2\nreg = { low = 0.0, high = 0.1, log = true }',
            "methods.bprmf.search.reg.low",
            "log range needs low > 0",
        ),
        ('init = ["xavier_normal", "uniform"]', "methods.bprmf.search.init.1", "'uniform'"),
        (
            'strategy = "random"\ntrials = 2\ninit = { low = 1, high = 2 }',
            "methods.bprmf.search.init",
            "numeric parameter",
        ),
        (
            'strategy = "random"\ntrials = 2\nembedding_size = { low = 4.5, high = 16 }',
            "methods.bprmf.search.embedding_size.low",
            "must be an int",
        ),
        ("reg = { low = 1e-5, high = 0.1 }", "methods.bprmf.search.reg", "grid search needs"),
        ("trials = 3\nreg = [1e-5, 1e-3]", "methods.bprmf.search.trials", "grid has 2 points"),
        ('strategy = "random"\nreg = [1e-5, 1e-3]', "methods.bprmf.search.trials", "needs trials"),
        ("reg = [-1.0, 0.1]", "methods.bprmf.search.reg.0", "greater than or equal to 0"),
        ("reg = 0.1", "methods.bprmf.search.reg", "expected a list"),
        ('strategy = "grid"', "methods.bprmf.search", "at least one parameter"),
    ],
)
def test_bad_spaces_give_one_line_errors_with_file_line_and_key(tmp_path, search, key, needle):
    issues = _issues(tmp_path, "[methods.bprmf.search]\n" + search)
    assert len(issues) == 1, issues
    line = str(issues[0])
    assert line.startswith(f"{tmp_path / 's.toml'}:") and issues[0].line is not None
    assert f": {key}: " in line and needle in line, line
    assert "\n" not in line


def test_a_budget_that_a_grid_does_not_fill_is_an_error(tmp_path):
    issues = _issues(tmp_path, "[methods.bprmf.search]\nreg = [1e-5, 1e-3]", "search_budget = 3")
    assert len(issues) == 1 and "experiment.search_budget = 3" in issues[0].message


# -- proposals ------------------------------------------------------------------------------------
def test_grid_covers_exactly_the_declared_product(tmp_path):
    loaded = _load(
        tmp_path,
        "[methods.bprmf.search]\nreg = [1e-5, 1e-3, 0.1]\nlearning_rate = [0.001, 0.01]\n"
        'init = ["xavier_normal", "normal"]',
    )
    search = Search(loaded, _tasks(loaded))
    search.propose(None)
    expected = {
        (r, lr, i)
        for r, lr, i in itertools.product(
            [1e-5, 1e-3, 0.1], [0.001, 0.01], ["xavier_normal", "normal"]
        )
    }
    for state in search.seeds:
        got = [(t.values["reg"], t.values["learning_rate"], t.values["init"]) for t in state.trials]
        assert len(got) == 12 and set(got) == expected
        assert state.budget == 12
        params = {
            (t.task.params.reg, t.task.params.learning_rate, t.task.params.init)
            for t in state.trials
        }
        assert params == expected  # the values reach the cell's parameters
        assert len({t.task.cell_id for t in state.trials}) == 12


def test_random_is_reproducible_for_a_seed_and_stays_in_its_space():
    dims = [
        Dimension("reg", low=1e-6, high=1.0, log=True),
        Dimension("embedding_size", low=4, high=64, integer=True),
        Dimension("init", values=("xavier_normal", "normal")),
    ]
    first, again = random_points(dims, 20, seed=3), random_points(dims, 20, seed=3)
    assert first == again
    assert first != random_points(dims, 20, seed=4)
    assert all(1e-6 <= p["reg"] <= 1.0 for p in first)
    assert all(
        isinstance(p["embedding_size"], int) and 4 <= p["embedding_size"] <= 64 for p in first
    )
    assert {p["init"] for p in first} == {"xavier_normal", "normal"}
    # log-uniform: about half the draws below 1e-3
    assert 5 <= sum(p["reg"] < 1e-3 for p in first) <= 15


def _objective(point: dict, _round: int = 0) -> float:
    """Peaks at reg = 1e-2 (the planted right setting); TPE also passes the round."""
    return -((math.log10(point["reg"]) + 2.0) ** 2)


def test_tpe_is_reproducible_for_a_seed_and_finds_the_planted_optimum():
    dims = [Dimension("reg", low=1e-6, high=1.0, log=True)]
    runs = [tpe_points(dims, 20, 7, _objective, startup_trials=5) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 20
    assert runs[0] != tpe_points(dims, 20, 8, _objective, startup_trials=5)
    best = max((p for p, _ in runs[0]), key=_objective)
    assert 10**-2.5 <= best["reg"] <= 10**-1.5
    # random search with the same budget lands further away on average: TPE uses the scores
    later = [abs(math.log10(p["reg"]) + 2) for p, _ in runs[0][10:]]
    assert sum(later) / len(later) < 1.0


def test_tpe_stops_at_the_first_round_that_has_not_run_and_resumes_identically():
    dims = [Dimension("reg", low=1e-6, high=1.0, log=True)]
    full = tpe_points(dims, 9, 1, _objective, round_size=3, startup_trials=3)
    assert [r for _, r in full] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    known: dict = {}

    def stored(point, _round):
        return known.get(repr(point))

    step = tpe_points(dims, 9, 1, stored, round_size=3, startup_trials=3)
    assert step == full[:3]  # round 1 only: nothing has run
    for point, _ in step:
        known[repr(point)] = _objective(point)
    step = tpe_points(dims, 9, 1, stored, round_size=3, startup_trials=3)
    assert step == full[:6]
    for point, _ in step:
        known[repr(point)] = _objective(point)
    assert tpe_points(dims, 9, 1, stored, round_size=3, startup_trials=3) == full


def test_equal_budgets_from_the_experiment_unless_a_method_says_otherwise(tmp_path):
    search = (
        '[methods.bprmf.search]\nstrategy = "random"\nreg = { low = 1e-6, high = 1.0, log = true }'
        '\n\n[methods.tpe]\nkind = "bprmf"\n[methods.tpe.search]\nstrategy = "tpe"\n'
        "reg = { low = 1e-6, high = 1.0, log = true }"
        '\n\n[methods.few]\nkind = "bprmf"\n[methods.few.search]\nstrategy = "random"\ntrials = 2\n'
        "reg = { low = 1e-6, high = 1.0, log = true }"
    )
    loaded = _load(tmp_path, search, "search_budget = 5")
    state = Search(loaded, _tasks(loaded))
    state.propose(None)
    budgets = {(s.method, s.seed): s.budget for s in state.seeds}
    assert budgets == {
        (m, seed): b for m, b in [("bprmf", 5), ("tpe", 5), ("few", 2)] for seed in (0, 1)
    }
    proposed = {(s.method, s.seed): len(s.trials) for s in state.seeds}
    assert proposed[("bprmf", 0)] == 5 and proposed[("few", 1)] == 2
    assert proposed[("tpe", 0)] == 1  # TPE proposes round by round (round_size 1)


# -- end to end: trials as cells, selection on validation, nothing of the trials in tables -------
PLANTED = """[methods.bprmf.search]
learning_rate = [1e-6, 0.03, 1e-5]

[methods.tuned]
kind = "bprmf"
label = "BPRMF (TPE)"
[methods.tuned.params]
embedding_size = 16
batch_size = 256
max_epochs = 8
patience = 3
learning_rate = 1e-6
[methods.tuned.search]
strategy = "tpe"
trials = 5
startup_trials = 2
learning_rate = { low = 1e-6, high = 0.1, log = true }
"""


def _q(db: Path, sql: str) -> list:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):

    tmp = tmp_path_factory.mktemp("search")
    loaded = _load(tmp, PLANTED)
    out = tmp / "out"
    summary = run_and_report(loaded, out)
    return tmp, loaded, out, summary


@pytest.mark.slow
def test_grid_and_tpe_select_the_learning_rate_that_trains(searched):
    _tmp, _loaded, out, summary = searched
    db = out / "results.duckdb"
    assert summary.failed == 0
    rows = _q(
        db,
        "SELECT method, seed, json_extract(chosen_params, '$.learning_rate')::DOUBLE, "
        "validation, trials_used, budget, strategy FROM selections ORDER BY method, seed",
    )
    assert [(r[0], r[1]) for r in rows] == [("bprmf", 0), ("bprmf", 1), ("tuned", 0), ("tuned", 1)]
    for method, _seed, lr, _valid, used, budget, strategy in rows:
        assert used == budget == (3 if method == "bprmf" else 5)
        assert strategy == ("grid" if method == "bprmf" else "tpe")
        # 1e-6 and 1e-5 do not train in 8 epochs: the planted right setting is a large rate
        assert lr == 0.03 if method == "bprmf" else lr >= 3e-3
    # the selected trial has the best validation score of its seed
    best = _q(
        db,
        "SELECT method, seed, max(validation) FROM search_trial_results WHERE role = 'trial' "
        "GROUP BY ALL ORDER BY method, seed",
    )
    assert [r[2] for r in best] == [r[3] for r in rows]
    # plan_cells holds the selected cell; only planned cells reach per-user rows
    assert _q(
        db,
        "SELECT count(*) FROM plan p JOIN selections s USING (experiment, dataset, method, seed) "
        "WHERE p.cell_id = s.cell_id AND p.status = 'done'",
    ) == [(4,)]
    assert _q(db, "SELECT count(DISTINCT cell_id) FROM per_user") == [(6,)]
    rows, cells = _q(db, "SELECT count(*), count(DISTINCT cell_id) FROM search_trials")[0]
    assert rows == 2 * (3 + 1) + 2 * (5 + 1)  # trials and paper cells of both methods
    # content addressing: 'tuned' with its own params (lr 1e-6) is bprmf's grid trial lr 1e-6
    assert cells == rows - 2
    assert _q(db, "SELECT count(*) FROM cells WHERE status = 'done'") == [(cells + 2,)]  # + pop
    page = (out / "report" / "tuning-syn.html").read_text()
    assert page.count("<svg") == 2  # validation vs learning_rate for both methods
    assert "Paper settings vs tuned · syn · all users · NDCG@10" in page
    assert 'href="tuning-syn.html"' in (out / "report" / "index.html").read_text()


def _tuning_tables(out: Path) -> list:
    from harness.store.store import connect_read_only
    from reports.model import Table
    from reports.tuning import tuning_blocks

    con = connect_read_only(out / "results.duckdb")
    try:
        sections = tuning_blocks(con, "s", "syn")
    finally:
        con.close()
    return [b for _title, blocks in sections for b in blocks if isinstance(b, Table)]


def _shown(tables: list) -> list:
    return [(t.id, t.title, [[c.text for c in r.cells] for r in t.rows]) for t in tables]


@pytest.mark.slow
def test_paper_vs_tuned_adds_holm_p_over_each_tables_rows(searched):
    import numpy as np

    from reports.model import MARK_DOWN, MARK_UP, header_grid
    from reports.stats import holm

    _tmp, _loaded, out, _summary = searched
    tables = _tuning_tables(out)
    # the store has sampled rows only: the sampled tables alone, as before
    assert all("-sampled-" in t.id for t in tables if t.id.startswith(("paper-vs", "order")))
    compared = [t for t in tables if t.id.startswith("paper-vs-tuned-")]
    assert len(compared) == 2  # all and sparse users, K = 10
    for table in compared:
        labels = header_grid(table.header)[0]
        assert labels[-3:] == ["t-test p", "Wilcoxon p", "Holm p"]
        assert "Holm p adjusts the t-test p" in table.caption
        assert "uncorrected" not in table.caption
        raw = np.array([r.cells[-3].value for r in table.rows])
        adjusted = np.array([r.cells[-1].value for r in table.rows])
        # the family: bprmf and tuned in three domains (fewer where a domain lacks sparse users)
        assert len(raw) == 2 * 3 if "-all-" in table.id else 1 <= len(raw) <= 2 * 3
        np.testing.assert_allclose(adjusted, holm(raw))
        assert np.all(adjusted >= np.nan_to_num(raw, nan=1.0) - 1e-12)
        for row, p in zip(table.rows, adjusted, strict=True):
            delta = row.cells[5]
            expected = (MARK_UP if delta.value > 0 else MARK_DOWN) if p < 0.05 else ""
            assert delta.mark == expected
    page = (out / "report" / "tuning-syn.html").read_text()
    assert page.count(">Holm p</th>") == 2
    assert "Orderings that change · syn · sampled ranking · NDCG@10" in page


@pytest.mark.slow
def test_tuning_page_compares_paper_and_tuned_under_both_rankings(searched, tmp_path):
    import shutil

    from reports.leaderboard import ReportOptions, write_report

    _tmp, loaded, out, _summary = searched
    db = tmp_path / "results.duckdb"
    shutil.copy(out / "results.duckdb", db)
    # full-ranking rows for every stored cell, as full_ranking = true stores them (without
    # training the fixture again): each user's sampled values halved
    con = duckdb.connect(str(db))
    con.execute(
        "INSERT INTO user_metrics SELECT * REPLACE ('full' AS ranking, hr / 2 AS hr, "
        "ndcg / 2 AS ndcg, mrr / 2 AS mrr) FROM user_metrics WHERE ranking = 'sampled'"
    )
    con.close()
    tables = _tuning_tables(tmp_path)
    ids = [t.id for t in tables]
    assert len(ids) == len(set(ids))
    titles = {t.title for t in tables}
    for ranking in ("sampled", "full"):
        for who in ("all users", "sparse users (1-2 training interactions)"):
            assert f"Paper settings vs tuned · syn · {who} · NDCG@10 · {ranking} ranking" in titles
        assert (
            f"Table 2 order with paper settings vs tuned · syn · NDCG@10 ×100 (rank) · "
            f"{ranking} ranking" in titles
        )
        assert f"Orderings that change · syn · {ranking} ranking · NDCG@10" in titles
    by_id = {t.id: t for t in tables}
    sampled = by_id["paper-vs-tuned-syn-sampled-all-k10"]
    full = by_id["paper-vs-tuned-syn-full-all-k10"]
    assert [r.cells[0].text for r in full.rows] == [r.cells[0].text for r in sampled.rows]
    for s_row, f_row in zip(sampled.rows, full.rows, strict=True):
        for col in (3, 4):  # paper and tuned NDCG: the full rows, not the sampled ones
            assert f_row.cells[col].value == pytest.approx(s_row.cells[col].value / 2)
    write_report(
        db,
        tmp_path / "report",
        experiment=loaded.spec.experiment.name,
        options=ReportOptions.from_spec(loaded.spec),
    )
    page = (tmp_path / "report" / "tuning-syn.html").read_text()
    assert "Paper settings vs tuned · syn · all users · NDCG@10 · full ranking" in page
    assert "Orderings that change · syn · full ranking · NDCG@10" in page
    assert page.count(">Holm p</th>") == 4
    # perfect full-ranking test metrics of a trial that is neither selected nor the paper cell
    # change no table of the page
    con = duckdb.connect(str(db))
    victim = con.execute(
        "SELECT cell_id FROM search_trial_results WHERE NOT selected AND role = 'trial' "
        "AND cell_id NOT IN (SELECT cell_id FROM search_trials WHERE role = 'paper') "
        "AND cell_id NOT IN (SELECT cell_id FROM plan_cells) ORDER BY validation LIMIT 1"
    ).fetchall()[0][0]
    con.execute(
        "UPDATE user_metrics SET hr = 1, ndcg = 1, mrr = 1, rank = 1 "
        "WHERE cell_id = ? AND ranking = 'full'",
        [victim],
    )
    con.close()
    assert _shown(_tuning_tables(tmp_path)) == _shown(tables)


def _order_inputs():
    import polars as pl

    # a and b are searched; c is not (the same on both sides). Domain x: b leads at paper
    # settings, a once tuned; domain y: nothing changes.
    board = pl.DataFrame(
        {
            "ranking": ["sampled"] * 6 + ["full"] * 6,
            "method": ["a", "b", "c"] * 4,
            "domain": (["x"] * 3 + ["y"] * 3) * 2,
            "k": [10] * 12,
            "ndcg_mean": [0.30, 0.20, 0.10, 0.30, 0.20, 0.10] * 2,
        }
    )
    seed_means = pl.DataFrame(
        {
            "ranking": ["sampled"] * 8,
            "method": ["a", "a", "b", "b"] * 2,
            "side": ["paper"] * 8,
            "seed": [0, 1] * 4,
            "domain": ["x"] * 4 + ["y"] * 4,
            "k": [10] * 8,
            "ndcg": [0.14, 0.16, 0.25, 0.25, 0.28, 0.28, 0.15, 0.15],
        }
    )
    return board, seed_means


def test_order_changes_list_the_pairs_that_swap_and_say_when_none_does():
    import polars as pl

    from reports.tuning import _order_changes, _order_table

    board, seed_means = _order_inputs()
    order = _order_table(board, seed_means, "d", 10, "sampled")
    assert order.id == "order-d-sampled-k10" and order.title.endswith("· sampled ranking")
    changes = _order_changes(board, seed_means, "d", 10, "sampled")
    assert changes.title == "Orderings that change · d · sampled ranking · NDCG@10"
    assert [[c.text for c in r.cells] for r in changes.rows] == [
        [
            "x",
            "b > a (25.00 vs 15.00) at paper settings",
            "a > b (30.00 vs 20.00) tuned",
            "a, b",
        ]
    ]
    # b at paper settings below c in x as well: two pairs swap there
    lower = seed_means.with_columns(
        pl.when(pl.col("method") == "b").then(0.05).otherwise(pl.col("ndcg")).alias("ndcg")
    )
    rows = [[c.text for c in r.cells][:3] for r in _order_changes(board, lower, "d", 10).rows]
    assert rows == [
        ["x", "c > b (10.00 vs 5.00) at paper settings", "b > c (20.00 vs 10.00) tuned"],
        ["y", "c > b (10.00 vs 5.00) at paper settings", "b > c (20.00 vs 10.00) tuned"],
    ]
    # paper settings in the same order as tuned: no pair changes
    same = seed_means.with_columns(
        pl.when(pl.col("method") == "a").then(0.4).otherwise(0.2).alias("ndcg")
    )
    none = _order_changes(board, same, "d", 10, "sampled")
    assert [r.group for r in none.rows] == ["no pair of methods changes order"]
    assert "No pair of methods changes order" in none.caption
    # a tie at paper settings (a = b in x) is no change either
    tie = seed_means.with_columns(
        pl.when((pl.col("method") == "a") & (pl.col("domain") == "x"))
        .then(0.25)
        .otherwise(pl.col("ndcg"))
        .alias("ndcg")
    )
    assert _order_changes(board, tie, "d", 10).rows[0].group == "no pair of methods changes order"
    # no full-ranking rows of the paper side: no full-ranking order tables
    assert _order_table(board, seed_means, "d", 10, "full") is None
    assert _order_changes(board, seed_means, "d", 10, "full") is None


def test_paper_vs_tuned_is_per_ranking_and_absent_without_full_rows():
    import polars as pl

    from reports.stats import holm, paired_tests
    from reports.tuning import _paper_vs_tuned

    users = list(range(6))
    rows = []
    for method, shift in (("a", 0.1), ("b", 0.0)):
        for domain in ("x", "y"):
            for side in ("paper", "tuned"):
                for u in users:
                    base = 0.2 + 0.05 * u
                    value = base + (shift + 0.01 * u if side == "tuned" else 0.0)
                    rows.append(("sampled", method, domain, side, u, value))
    paired = pl.DataFrame(
        rows, schema=["ranking", "method", "domain", "side", "user_idx", "ndcg"], orient="row"
    ).with_columns(k=pl.lit(10), n_train_domain=pl.lit(1))
    seed_means = paired.group_by("ranking", "method", "side", "domain", "k").agg(
        pl.col("ndcg").mean(), seed=pl.lit(0)
    )
    table = _paper_vs_tuned(paired, seed_means, "d", 10, "all", 2, "sampled")
    assert table.id == "paper-vs-tuned-d-sampled-all-k10"
    assert table.title == "Paper settings vs tuned · d · all users · NDCG@10 · sampled ranking"
    raw = []
    for method in ("a", "b"):
        for domain in ("x", "y"):
            part = paired.filter((pl.col("method") == method) & (pl.col("domain") == domain))
            tuned = part.filter(pl.col("side") == "tuned").sort("user_idx")["ndcg"].to_numpy()
            paper = part.filter(pl.col("side") == "paper").sort("user_idx")["ndcg"].to_numpy()
            raw.append(float(paired_tests(tuned, paper).t_p[0]))
    assert [r.cells[-3].value for r in table.rows] == raw
    assert [r.cells[-1].value for r in table.rows] == [float(p) for p in holm(raw)]
    assert _paper_vs_tuned(paired, seed_means, "d", 10, "all", 2, "full") is None


@pytest.mark.slow
def test_rerun_reuses_every_trial_and_proposes_the_same_ones(searched):
    from harness.runner.runner import run_spec

    _tmp, loaded, out, _summary = searched
    db = out / "results.duckdb"
    before = _q(db, "SELECT * EXCLUDE (selected_at) FROM search_selections ORDER BY ALL")
    trials = _q(db, "SELECT * FROM search_trials ORDER BY ALL")
    again = run_spec(loaded, out, device="cpu")
    assert again.done == 0 and again.failed == 0
    assert _q(db, "SELECT * EXCLUDE (selected_at) FROM search_selections ORDER BY ALL") == before
    assert _q(db, "SELECT * FROM search_trials ORDER BY ALL") == trials
    # `harness plan` lists every trial and paper cell, all done
    from harness.runner.runner import plan_status

    plan = plan_status(loaded, db, device="cpu")
    assert plan.height == 2 + 2 * (3 + 1) + 2 * (5 + 1)
    assert set(plan["status"].to_list()) == {"done"}


@pytest.mark.slow
def test_selection_and_every_table_ignore_the_test_metrics_of_trials(searched):

    _tmp, loaded, out, _summary = searched
    db = out / "results.duckdb"
    exports = out / "report" / "exports"
    tables_before = (exports / "all_tables.md").read_text()
    tuning_before = (out / "report" / "tuning-syn.html").read_text()
    selected_before = _q(db, "SELECT method, seed, cell_id FROM selections ORDER BY ALL")
    # poison a trial that is neither selected nor the paper cell: perfect test metrics
    victim = _q(
        db,
        "SELECT cell_id FROM search_trial_results WHERE NOT selected AND role = 'trial' "
        "AND cell_id NOT IN (SELECT cell_id FROM search_trials WHERE role = 'paper') "
        "AND cell_id NOT IN (SELECT cell_id FROM plan_cells) ORDER BY validation LIMIT 1",
    )[0][0]
    con = duckdb.connect(str(db))
    con.execute(
        "UPDATE user_metrics SET hr = 1, ndcg = 1, mrr = 1, rank = 1 WHERE cell_id = ?", [victim]
    )
    con.close()
    rerun = run_and_report(loaded, out)
    assert rerun.done == 0
    assert _q(db, "SELECT method, seed, cell_id FROM selections ORDER BY ALL") == selected_before
    assert (exports / "all_tables.md").read_text() == tables_before
    tuning_after = (out / "report" / "tuning-syn.html").read_text()
    strip = lambda html: "\n".join(x for x in html.splitlines() if "Generated" not in x)  # noqa: E731
    assert strip(tuning_after) == strip(tuning_before)


KILLED = """[methods.bprmf.search]
strategy = "tpe"
trials = 4
startup_trials = 1
paper = false
learning_rate = { low = 1e-6, high = 0.1, log = true }
"""


@pytest.mark.slow
def test_kill_9_mid_search_then_rerun_gives_the_uninterrupted_selection(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from harness.runner.runner import run_spec

    loaded = _load(tmp_path, KILLED)
    whole = tmp_path / "whole"
    run_spec(loaded, whole, device="cpu", only_methods=["bprmf"])
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(loaded.path), "--out", str(out)]
    cmd += ["--device", "cpu", "--no-report", "--only", "bprmf"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO
    )
    committed = 0
    for line in proc.stdout:
        if line.startswith("cell done"):
            committed += 1
            if committed == 4:  # seed 0 round 1, seed 1 round 1, seed 0 round 2, ...
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    db = out / "results.duckdb"
    assert _q(db, "SELECT count(*) FROM cells WHERE status = 'done'")[0][0] < 8
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    reused = "SELECT method, seed, trial, cell_id FROM search_trials ORDER BY ALL"
    assert _q(db, reused) == _q(whole / "results.duckdb", reused)
    chosen = "SELECT * EXCLUDE (selected_at) FROM search_selections ORDER BY ALL"
    assert _q(db, chosen) == _q(whole / "results.duckdb", chosen)
    assert _q(db, "SELECT count(*) FROM cells WHERE status = 'done'") == [(8,)]


def test_a_search_whose_trials_all_fail_selects_nothing_and_plans_the_failure(
    tmp_path, monkeypatch
):
    from harness.runner.runner import run_spec
    from methods.bprmf import BPRMF

    def boom(self, data, ctx):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(BPRMF, "fit", boom)
    loaded = _load(tmp_path, "[methods.bprmf.search]\nreg = [1e-5, 1e-2]")
    out = tmp_path / "out"
    summary = run_spec(loaded, out, device="cpu")
    # two trials per seed; the paper cell (reg 1e-5) is the first trial's cell; pop is fine
    assert (summary.failed, summary.done) == (2 * 2, 2)
    db = out / "results.duckdb"
    rows = _q(db, "SELECT complete, cell_id, trials_failed FROM selections ORDER BY seed")
    assert rows == [(True, None, 2), (True, None, 2)]
    assert _q(db, "SELECT DISTINCT status FROM plan WHERE method = 'bprmf'") == [("failed",)]
    assert _q(db, "SELECT count(*) FROM per_user WHERE method = 'bprmf'") == [(0,)]
    # dropping the search from the spec drops its trials and selections from the experiment
    run_spec(_load(tmp_path, "", name="plain.toml"), out, device="cpu")
    assert _q(db, "SELECT count(*) FROM search_trials") == [(0,)]
    assert _q(db, "SELECT count(*) FROM selections") == [(0,)]


@pytest.mark.slow
def test_tuning_page_opens_in_headless_chromium(searched, tmp_path):
    import re

    from tests.test_report_browser import _run

    _tmp, _loaded, out, _summary = searched
    page = out / "report" / "tuning-syn.html"
    html = page.read_text()
    n_tables = html.count("<table")
    assert n_tables >= 5
    dom = _run(["--dump-dom", page.resolve().as_uri() + "?selftest"], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], "\n".join(console)
    root = re.search(r"<html[^>]*>", dom.stdout).group(0)
    assert 'data-report-ready="1"' in root and 'data-selftest="ok"' in root, root
    assert f'data-tables="{n_tables}"' in root
