"""One budget for every method (issue 24): a selection made once on seed 0 and run on every
seed, median pruning on the validation curve (stored as pruned, reproducible, never selected,
content-addressed), selection on validation only, and what a search cost."""

from __future__ import annotations

import inspect
import json
import math
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from harness.runner.cells import plan_cells
from harness.runner.prepare import prepare
from harness.search import driver as driver_mod
from harness.search.driver import Search, SearchGroup, SeedSearch, Trial
from harness.search.pruning import PruneMonitor, TrialPruned, build_rule
from harness.search.space import Dimension
from harness.search.strategies import Pruned, tpe_points
from harness.spec.load import SpecError, load_spec
from methods.base import EpochLog

SPEC = """
[experiment]
name = "budget"
seeds = [0, 1, 2]

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 200
n_items = [300, 200, 200]
n_interactions = [3000, 1200, 1200]

[protocol]
negatives = 49
ks = [10]

[methods.bprmf]
kind = "bprmf"
[methods.bprmf.params]
embedding_size = 16
batch_size = 256
max_epochs = 8
patience = 3
[methods.bprmf.search]
strategy = "tpe"
trials = 5
startup_trials = 2
{search}
learning_rate = {{ low = 1e-6, high = 0.1, log = true }}
"""
# With this sampler seed the median rule stops trials 2, 3 and 5 (checked: see
# test_pruned_trials_are_stored_as_pruned_with_their_curves_and_never_selected); every property
# below is asserted on whatever the rule stopped, the count only guards that it stopped some.
PRUNING = 'select_on = [0]\npruner = "median"\nprune_warmup = 1\nprune_min_trials = 1'


def _write(tmp: Path, search: str, name: str = "budget.toml") -> Path:
    path = tmp / name
    path.write_text(SPEC.format(search=search))
    return path


def _q(db: Path, sql: str, params: list | None = None) -> list:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _propose(loaded, db: Path) -> Search:
    """Replay the search over a stored results file (no cell runs)."""
    from harness.store.store import Store

    prepared = {n: prepare(loaded, n, None) for n in loaded.spec.datasets}
    search = Search(loaded, plan_cells(loaded, prepared, "cpu"))
    with Store(db) as store:
        search.propose(store)
    return search


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    from harness.runner.runner import run_spec
    from reports.leaderboard import ReportOptions, write_report

    tmp = tmp_path_factory.mktemp("budget")
    loaded = load_spec(_write(tmp, PRUNING))
    out = tmp / "out"
    summary = run_spec(loaded, out, device="cpu")
    write_report(
        out / "results.duckdb",
        out / "report",
        experiment="budget",
        options=ReportOptions.from_spec(loaded.spec),
    )
    return tmp, loaded, out, summary


# -- select_on: one selection per method, run on every seed -------------------------------------
def test_select_on_searches_seed_0_and_runs_the_one_selection_on_every_seed(budget_run):
    _tmp, _loaded, out, summary = budget_run
    db = out / "results.duckdb"
    assert summary.failed == 0
    # trials only on seed 0; a paper cell on every seed; the selection as 'final' on seeds 1, 2
    roles = _q(db, "SELECT seed, role, count(*) FROM search_trials GROUP BY ALL ORDER BY ALL")
    assert roles == [
        (0, "paper", 1),
        (0, "trial", 5),
        (1, "final", 1),
        (1, "paper", 1),
        (2, "final", 1),
        (2, "paper", 1),
    ]
    rows = _q(
        db,
        "SELECT seed, chosen_params, trial, select_on, select_score, complete, trials_used, "
        "budget FROM selections ORDER BY seed",
    )
    assert [r[0] for r in rows] == [0, 1, 2]
    assert len({(r[1], r[2], r[3], r[4]) for r in rows}) == 1  # one selection for all seeds
    assert rows[0][3] == "[0]" and all(r[5] and r[6] == r[7] == 5 for r in rows)
    # it is the best validation score of seed 0's finished trials
    best = _q(
        db,
        "SELECT trial, validation FROM search_trial_results WHERE role = 'trial' "
        "AND status = 'done' ORDER BY validation DESC, trial LIMIT 1",
    )[0]
    assert (rows[0][2], rows[0][4]) == best
    # plan_cells: seed 0 holds the selected trial cell, seeds 1-2 the final cells, all done,
    # every one with the chosen values
    chosen = json.loads(rows[0][1])["learning_rate"]
    planned = _q(
        db,
        "SELECT p.seed, p.cell_id, p.status, json_extract(c.params, '$.learning_rate')::DOUBLE, "
        "t.role FROM plan p JOIN cells c USING (cell_id) JOIN search_trials t "
        "ON t.cell_id = p.cell_id AND t.seed = p.seed ORDER BY p.seed",
    )
    assert [(r[0], r[2], r[3], r[4]) for r in planned] == [
        (0, "done", chosen, "trial"),
        (1, "done", chosen, "final"),
        (2, "done", chosen, "final"),
    ]
    assert len({r[1] for r in planned}) == 3
    # the leaderboard averages three seeds of the one selection
    assert _q(db, "SELECT DISTINCT n_seeds FROM leaderboard WHERE method = 'bprmf'") == [(3,)]


def test_paper_cells_and_final_runs_are_never_pruned(budget_run):
    _tmp, _loaded, out, _summary = budget_run
    db = out / "results.duckdb"
    rows = _q(
        db,
        "SELECT t.role, t.prune, c.status, c.epochs FROM search_trials t JOIN cells c "
        "USING (cell_id) WHERE t.role IN ('paper', 'final')",
    )
    assert len(rows) == 5
    assert all(prune is None and status == "done" for _r, prune, status, _e in rows)


def test_describe_counts_trials_on_the_searched_seed_and_finals_elsewhere(tmp_path):
    from harness.search.space import describe

    loaded = load_spec(_write(tmp_path, PRUNING))
    line = describe(loaded.spec)
    # 5 trials on seed 0 + 3 paper cells + the selection on seeds 1 and 2
    assert "5 trials on seed(s) 0, then the selection on all, median pruning" in line
    assert line.endswith("-> 10 trial and paper cells in their place")


# -- pruning -----------------------------------------------------------------------------------
def test_pruned_trials_are_stored_as_pruned_with_their_curves_and_never_selected(budget_run):
    _tmp, _loaded, out, summary = budget_run
    db = out / "results.duckdb"
    pruned = _q(
        db,
        "SELECT cell_id, notes, best_valid FROM cells WHERE status = 'pruned' ORDER BY cell_id",
    )
    assert summary.pruned == len(pruned) >= 1  # (3 with this sampler seed)
    selected = {r[0] for r in _q(db, "SELECT cell_id FROM selections")}
    for cell_id, notes, best_valid in pruned:
        where = json.loads(notes)["pruned"]
        assert best_valid is None and cell_id not in selected
        assert where["best"] < where["threshold"]
        # the curve up to the validation that stopped it is kept, nothing after it
        series = _q(
            db,
            "SELECT value FROM curves WHERE cell_id = ? AND name = 'valid_ndcg' AND stage = ? "
            "AND domain IS NOT DISTINCT FROM ? ORDER BY epoch",
            [cell_id, where["stage"], where["domain"]],
        )
        assert len(series) == where["validation"] > 1  # warm-up: never at the first
        assert max(v for (v,) in series) == pytest.approx(where["best"])
        # no test evaluation
        assert _q(db, "SELECT count(*) FROM user_metrics WHERE cell_id = ?", [cell_id]) == [(0,)]
    shown = _q(
        db,
        "SELECT status, validation, pruned_at IS NOT NULL, selected FROM search_trial_results "
        "WHERE status = 'pruned'",
    )
    assert shown and all(v is None and at and not sel for _s, v, at, sel in shown)
    costs = _q(
        db,
        "SELECT trial_cells, trials_done, trials_pruned, trials_failed, trials_pending, "
        "trial_cpu_s, pruned_cpu_s, total_cpu_s, cpu_estimated FROM search_costs",
    )
    cells, done, n_pruned, failed, pending, trial_s, pruned_s, total_s, estimated = costs[0]
    assert (cells, done + n_pruned, n_pruned, failed, pending) == (5, 5, len(pruned), 0, 0)
    assert 0 < pruned_s < trial_s < total_s and estimated == 0


def test_a_trial_is_pruned_against_the_finished_trials_of_earlier_rounds_only(budget_run):
    _tmp, loaded, out, _summary = budget_run
    db = out / "results.duckdb"
    search = _propose(loaded, db)
    state = search.seeds[0]
    first = state.trials[0]
    # round 1 has nothing to compare with: its cell is the ordinary one
    assert first.round == 1 and first.task.prune is None
    assert first.task.cell_id == search._trial_task(state.base, first.values).cell_id
    done_before: set[str] = set()
    for trial in state.trials:
        if trial.round > 1:
            rule = trial.task.prune
            assert rule is not None and set(rule.reference) == done_before
            assert trial.task.cell_id != search._trial_task(state.base, trial.values).cell_id
        if trial.status == "done":
            done_before.add(trial.task.cell_id)
    # the stored rule is the one in the identity
    stored = dict(_q(db, "SELECT cell_id, prune FROM search_trials WHERE prune IS NOT NULL"))
    for trial in state.trials[1:]:
        assert json.loads(stored[trial.task.cell_id]) == trial.task.prune.identity()


def test_the_pruning_decision_is_reproducible(budget_run):
    from harness.runner.runner import run_spec

    tmp, loaded, out, _summary = budget_run
    db = out / "results.duckdb"
    sql = (
        "SELECT t.seed, t.trial, t.role, t.cell_id, c.status, c.best_valid, "
        "json_extract_string(c.notes, '$.pruned') FROM search_trials t "
        "JOIN cells c USING (cell_id) ORDER BY ALL"
    )
    again = tmp / "again"
    rerun = run_spec(loaded, again, device="cpu")
    assert rerun.failed == 0 and rerun.pruned == len(
        _q(db, "SELECT 1 FROM cells WHERE status = 'pruned'")
    )
    assert _q(again / "results.duckdb", sql) == _q(db, sql)
    # the same store: a pruned trial is finished, nothing is recomputed
    same = run_spec(loaded, out, device="cpu")
    assert (same.done, same.failed, same.pruned) == (0, 0, 0)


def test_a_changed_reference_curve_changes_the_ids_of_the_trials_that_used_it(budget_run, tmp_path):
    _tmp, loaded, out, _summary = budget_run
    db = tmp_path / "copy.duckdb"
    shutil.copy(out / "results.duckdb", db)
    before = _propose(loaded, db).seeds[0].trials
    con = duckdb.connect(str(db))
    con.execute(
        "UPDATE curves SET value = value + 0.01 WHERE cell_id = ? AND name = 'valid_ndcg'",
        [before[0].task.cell_id],
    )
    con.close()
    after = _propose(loaded, db).seeds[0].trials
    assert after[0].task.cell_id == before[0].task.cell_id  # round 1: no reference
    # round 2 used that curve: another rule, another cell (not the stored pruned/done one)
    assert after[1].values == before[1].values
    assert after[1].task.cell_id != before[1].task.cell_id and after[1].status is None


# -- selection on validation only ----------------------------------------------------------------
def test_selection_never_reads_test_metrics_and_never_picks_a_pruned_trial(budget_run, tmp_path):
    _tmp, loaded, out, _summary = budget_run
    db = tmp_path / "copy.duckdb"
    shutil.copy(out / "results.duckdb", db)

    def chosen() -> tuple[int, list[str]]:
        search = _propose(loaded, db)
        group = search.groups[0]
        return group.best, [s.plan_task().cell_id for s in search.seeds]

    before = chosen()
    trials = _q(
        db,
        "SELECT trial, cell_id, status FROM search_trial_results WHERE role = 'trial' "
        "ORDER BY trial",
    )
    winner = before[0] + 1
    con = duckdb.connect(str(db))
    # test metrics: perfect for every other trial, zero for the selected one
    for trial, cell_id, _status in trials:
        value = 0.0 if trial == winner else 1.0
        con.execute(
            "UPDATE user_metrics SET ndcg = ?, hr = ?, mrr = ? WHERE cell_id = ?",
            [value, value, value, cell_id],
        )
    # a pruned trial with a perfect stored validation score is still not selectable
    pruned = [c for _t, c, s in trials if s == "pruned"]
    con.execute("UPDATE cells SET best_valid = 1.0 WHERE cell_id IN (SELECT unnest(?))", [pruned])
    con.close()
    assert chosen() == before
    # the control: a better *validation* score does move the selection
    loser = next(c for t, c, s in trials if s == "done" and t != winner)
    con = duckdb.connect(str(db))
    con.execute("UPDATE cells SET best_valid = 1.0 WHERE cell_id = ?", [loser])
    con.close()
    assert chosen() != before
    # and the code that selects never names the per-user (test) rows
    assert "user_metrics" not in inspect.getsource(driver_mod)


def test_a_pruned_trial_is_never_selected_even_with_the_best_partial_score():
    stub = None  # the selection never looks at a trial's task

    def trial(number: int, status: str, valid: float | None) -> Trial:
        return Trial(number, "trial", number, {"x": number}, stub, status, valid)

    group = SearchGroup("d", "m", "tpe", 3, (0,), True)
    state = SeedSearch("d", "m", 0, "tpe", 3, stub, group=group)
    group.seeds[0] = state
    state.trials = [trial(1, "done", 0.2), trial(2, "pruned", 0.9), trial(3, "done", 0.1)]
    group.points = [({"x": i}, i) for i in (1, 2, 3)]
    assert group.complete and group.best == 0
    assert group.counts() == {"done": 2, "failed": 0, "pruned": 1}
    state.trials[1].status = None  # not finished: no selection yet
    assert not group.complete and group.best is None


# -- the rule itself -----------------------------------------------------------------------------
def _curves(*rows: list[float], key=("s", None)) -> dict:
    return {f"c{i}": {key: np.array(r)} for i, r in enumerate(rows)}


def test_median_thresholds_follow_optuna_with_warmup_and_minimum_trials():
    ref = _curves([0.1, 0.2, 0.3, 0.4], [0.3, 0.4, 0.5], [0.2, 0.6])
    rule = build_rule("median", 50.0, 1, 2, ref)
    ((stage, domain, th),) = rule.series
    assert (stage, domain) == ("s", None)
    assert math.isnan(th[0])  # warm-up
    assert th[1] == pytest.approx(0.4) and th[2] == pytest.approx(0.4)  # medians of 3, of 2
    assert len(th) == 3  # one trial reached validation 4: fewer than min_trials
    # percentile 25 keeps the top quarter: the threshold is the 75th percentile
    top = build_rule("percentile", 25.0, 0, 1, ref)
    assert top.series[0][2][1] == pytest.approx(np.percentile([0.2, 0.4, 0.6], 75))
    assert build_rule("median", 50.0, 5, 1, ref) is None  # nothing past the warm-up
    assert build_rule("median", 50.0, 0, 1, {}) is None  # round 1
    moved = _curves([0.1, 0.2, 0.31, 0.4], [0.3, 0.4, 0.5], [0.2, 0.6])
    assert rule.identity() != build_rule("median", 50.0, 1, 2, moved).identity()


def test_the_monitor_stops_at_the_first_validation_below_the_threshold_after_warmup():
    rule = build_rule("median", 50.0, 1, 1, _curves([0.5, 0.5, 0.5, 0.5]))
    monitor = PruneMonitor(rule)

    def log(epoch: int, value: float | None, stage: str = "s") -> None:
        values = {"loss": 1.0} if value is None else {"valid_ndcg": value}
        monitor.observe(EpochLog(stage, epoch, values))

    log(1, 0.1)  # below, but within the warm-up
    log(2, None)  # no validation at this epoch
    log(3, 0.1, stage="other")  # another series has no threshold
    log(4, 0.6)  # best so far 0.6 >= 0.5
    log(5, 0.2)  # the best so far counts, not the last value
    monitor2 = PruneMonitor(rule)
    monitor2.observe(EpochLog("s", 1, {"valid_ndcg": 0.4}))
    with pytest.raises(TrialPruned) as info:
        monitor2.observe(EpochLog("s", 2, {"valid_ndcg": 0.45}))
    assert info.value.record["validation"] == 2 and info.value.record["epoch"] == 2
    assert info.value.record["best"] == 0.45 and info.value.record["threshold"] == 0.5


def test_tpe_learns_pruned_trials_reproducibly():
    dims = [Dimension("reg", low=1e-6, high=1.0, log=True)]

    def outcome(point: dict, _round: int):
        x = -((math.log10(point["reg"]) + 2.0) ** 2)
        return Pruned(step=3, value=x) if x < -4 else x

    runs = [tpe_points(dims, 12, 5, outcome, startup_trials=3) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 12

    def as_failed(point: dict, round_no: int):
        got = outcome(point, round_no)
        return "failed" if isinstance(got, Pruned) else got

    failed = tpe_points(dims, 12, 5, as_failed, startup_trials=3)
    assert failed[:3] == runs[0][:3]  # the random start-up trials do not depend on it
    assert failed != runs[0]  # a pruned trial's reported value reaches the model


# -- spec errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("search", "key", "needle"),
    [
        ("select_on = [5]", "methods.bprmf.search.select_on", "not among experiment.seeds"),
        ("select_on = [0, 0]", "methods.bprmf.search.select_on", "seeds repeat"),
        ("select_on = []", "methods.bprmf.search.select_on", "at least 1"),
        ('pruner = "hyperband"', "methods.bprmf.search.pruner", "'median'"),
        ("prune_percentile = 100.0", "methods.bprmf.search.prune_percentile", "less than 100"),
    ],
)
def test_bad_budget_options_give_one_line_errors(tmp_path, search, key, needle):
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, search))
    issues = info.value.issues
    assert len(issues) == 1, issues
    line = str(issues[0])
    assert f": {key}: " in line and needle in line and "\n" not in line, line


def test_pruning_needs_tpe_rounds(tmp_path):
    text = SPEC.format(search='pruner = "median"').replace(
        'strategy = "tpe"', 'strategy = "random"'
    )
    path = tmp_path / "random.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (issue,) = info.value.issues
    assert "methods.bprmf.search.pruner" in str(issue) and "needs strategy 'tpe'" in str(issue)


def test_tuning_page_reports_pruned_trials_and_cpu_seconds(budget_run):
    _tmp, _loaded, out, _summary = budget_run
    page = (out / "report" / "tuning-syn.html").read_text()
    assert "What each search cost · syn" in page
    assert "once, on seed 0" in page
    assert "FROM search_costs" in page


def test_tpe_proposes_list_valued_choices_without_optuna_warnings(recwarn):
    # NeuMF's tower widths: Optuna stores only plain values, so they travel as their index
    towers = ([128], [128, 64], [128, 64, 32])
    dims = [Dimension("mlp_layers", values=towers), Dimension("dropout", values=(0.0, 0.1))]

    def outcome(point: dict, _round: int) -> float:
        return -abs(len(point["mlp_layers"]) - 2) + point["dropout"]

    points = tpe_points(dims, 8, 0, outcome, startup_trials=3)
    assert points == tpe_points(dims, 8, 0, outcome, startup_trials=3)
    assert all(p["mlp_layers"] in towers and p["dropout"] in (0.0, 0.1) for p, _ in points)
    assert not [w for w in recwarn if "optuna" in str(w.filename).lower()]


def test_the_shipped_tuning_specs_search_every_learned_method_under_one_budget():
    from harness.search.space import budget_of, dimensions, searched_methods

    repo = Path(__file__).resolve().parents[1]
    ladder = ["pge", "pge_ae", "pge_cl_ae", "pge_ucl_ae", "uclr"]
    for name in ("tune_amazon_pairs.toml", "tune_douban.toml"):
        spec = load_spec(repo / "specs" / name, check_files=False).spec
        searched = searched_methods(spec)
        learned = {m for m, s in spec.methods.items() if s.kind != "popularity"}
        assert set(searched) == learned, name
        for method in searched.values():
            search = method.search
            assert budget_of(spec, method, dimensions(method)) == 8
            assert (search.strategy, search.select_on, search.pruner) == ("tpe", [0], "median")
            assert search.paper
            assert "learning_rate" in search.spaces()
        spaces = [searched[m].search.spaces() for m in ladder]
        assert all(s == spaces[-1] for s in spaces), "the ablation rungs share UCLR's space"
        assert {"lora_rank", "lora_alpha", "tau_eta", "tau_rho"} <= set(spaces[-1])


# -- pruned trials travel in bundles --------------------------------------------------------------
def test_pruned_trials_are_exported_and_imported_so_a_fresh_store_trains_nothing(
    budget_run, tmp_path
):
    from typer.testing import CliRunner

    from harness.cli import app

    tmp, _loaded, out, _summary = budget_run
    spec = tmp / "budget.toml"
    folder = tmp_path / "bundles"

    def cli(*args):
        return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)

    exported = cli("export", spec, "--results", out, "--out", folder)
    assert exported.exit_code == 0, exported.output
    stored = _q(out / "results.duckdb", "SELECT cell_id, status FROM cells ORDER BY cell_id")
    assert {p.stem for p in folder.glob("*.parquet")} == {c for c, _s in stored}
    fresh = tmp_path / "fresh"
    imported = cli("import", folder, "--spec", spec, "--out", fresh)
    assert imported.exit_code == 0 and "0 rejected" in imported.output, imported.output
    assert _q(fresh / "results.duckdb", "SELECT cell_id, status FROM cells ORDER BY 1") == stored
    rerun = cli("run", spec, "--out", fresh, "--no-report", "--device", "cpu")
    assert rerun.exit_code == 0 and "done 0 ran" in rerun.output, rerun.output


# -- harness plan: what a search still has to run, and what it will cost ------------------------
def test_plan_lists_the_unproposed_budget_and_the_seeds_awaiting_the_selection(tmp_path):
    from harness.runner.runner import plan_status

    loaded = load_spec(_write(tmp_path, PRUNING))
    plan = plan_status(loaded, tmp_path / "none.duckdb", device="cpu")
    bprmf = plan.filter(plan["method"] == "bprmf")
    counts = dict(bprmf.group_by("status").len().iter_rows())
    proposed = counts["pending"] - 3  # the three paper cells are pending too
    assert 0 < proposed < 5  # TPE proposes its first round only
    assert counts["to propose"] == 5 - proposed
    assert counts["awaits selection"] == 2  # seeds 1 and 2 run the selection made on seed 0
    waiting = bprmf.filter(bprmf["status"] == "awaits selection")
    assert sorted(waiting["seed"].to_list()) == [1, 2]
    assert bprmf.filter(bprmf["cell_id"].is_null()).height == 5 - proposed + 2
    assert bprmf["estimate_s"].is_null().all()  # nothing finished to estimate from


def test_plan_estimates_the_rest_of_a_larger_budget_from_the_finished_trials(budget_run):
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.runner.runner import plan_status

    tmp, _loaded, out, _summary = budget_run
    done = plan_status(_loaded, out / "results.duckdb", device="cpu")
    assert set(done["status"].to_list()) <= {"done", "pruned"}
    bigger = tmp / "bigger.toml"
    bigger.write_text(SPEC.format(search=PRUNING).replace("trials = 5", "trials = 7"))
    plan = plan_status(load_spec(bigger), out / "results.duckdb", device="cpu")
    rest = plan.filter(plan["cell_id"].is_null())
    assert set(rest["status"].to_list()) <= {"to propose", "awaits selection"}
    assert rest.filter(rest["status"] == "awaits selection").height == 2  # no selection yet
    assert rest.height >= 2 and rest["estimate_s"].is_not_null().all()
    assert set(rest["estimate_from"].to_list()) == {"same kind"}
    result = CliRunner().invoke(app, ["plan", str(bigger), "--out", str(out)])
    assert result.exit_code == 0, result.output
    todo = plan.filter(~plan["status"].is_in(["done", "pruned"])).height
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "not proposed yet" in text and f"syn/bprmf {todo} cells" in text


@pytest.mark.parametrize("round_size", [1, 2])
def test_start_up_trials_proposed_ahead_are_the_trials_proposed_one_by_one(round_size):
    """Proposing the random start-up trials before earlier ones have run (so workers train them
    side by side) changes no point, no round and nothing TPE proposes after them."""
    dims = [
        Dimension("reg", low=1e-6, high=1.0, log=True),
        Dimension("layers", values=[1, 2, 3]),
    ]

    def outcome(point: dict, round_no: int):
        x = -((math.log10(point["reg"]) + 2.0) ** 2)
        if round_no == 2:
            return "failed"
        return Pruned(step=2, value=x) if x < -6 else x

    for seed in range(4):
        full = tpe_points(dims, 10, seed, outcome, round_size, startup_trials=4)
        known: dict = {}

        def stored(point, _round, known=known):
            return known.get(repr(point))

        first = tpe_points(dims, 10, seed, stored, round_size, startup_trials=4, ahead=4)
        assert first == full[:4]  # the whole start-up at once, nothing run yet
        assert tpe_points(dims, 10, seed, stored, round_size, startup_trials=4) == full[:round_size]
        capped = tpe_points(dims, 10, seed, stored, round_size, startup_trials=4, ahead=3)
        assert capped == full[: max(round_size, 3 // round_size * round_size)]
        for point, round_no in first[1:]:  # all but the first finish: still nothing new
            known[repr(point)] = outcome(point, round_no)
        assert tpe_points(dims, 10, seed, stored, round_size, startup_trials=4, ahead=4) == full[:4]
        known[repr(first[0][0])] = outcome(*first[0])
        step = tpe_points(dims, 10, seed, stored, round_size, startup_trials=4, ahead=4)
        assert step == full[: 4 + round_size]  # then model-based rounds, one at a time
        for point, round_no in full:
            known[repr(point)] = outcome(point, round_no)
        assert tpe_points(dims, 10, seed, stored, round_size, startup_trials=4, ahead=4) == full


def test_a_search_proposes_its_start_up_trials_at_once_with_the_ids_of_one_by_one(tmp_path):
    """On a spec: with prune_min_trials = startup_trials the start-up trials come in one
    proposal (each without a pruning rule, as when proposed one by one), and not beyond it."""
    from harness.store.store import Store

    spec = _write(
        tmp_path,
        'select_on = [0]\npruner = "median"\nprune_warmup = 1\nprune_min_trials = 2',
    )
    loaded = load_spec(spec)
    db = tmp_path / "results.duckdb"
    Store(db).close()
    trials = _propose(loaded, db).groups[0].seeds[0].trials
    assert [t.trial for t in trials] == [1, 2]  # startup_trials = 2, both at once
    assert all(t.task.prune is None for t in trials)
    assert len({t.task.cell_id for t in trials}) == 2
    one_by_one = tpe_points(  # every trial finished before the next is asked
        [Dimension("learning_rate", low=1e-6, high=0.1, log=True)],
        5,
        (loaded.spec.methods["bprmf"].search.seed * 1_000_003) % 2**31,
        lambda point, _round: -abs(math.log10(point["learning_rate"]) + 2),
        startup_trials=2,
    )
    assert [t.values for t in trials] == [p for p, _ in one_by_one[:2]]
