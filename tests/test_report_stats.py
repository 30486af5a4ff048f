"""Report statistics: scipy agreement, corrections, reproducible bootstrap, persisted results."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from scipy import stats

from reports.options import ReportOptions
from reports.site import build_report
from reports.stats import (
    adjust,
    benjamini_hochberg,
    bootstrap_mean_ci,
    cohens_dz,
    comparison_seed,
    holm,
    paired_tests,
)
from tests.demo_store import make_demo_store

# Known paired sample (e.g. per-user NDCG of two methods on 12 users).
X = np.array([0.50, 0.31, 0.00, 1.00, 0.63, 0.39, 0.43, 0.00, 0.36, 0.50, 0.29, 1.00])
Y = np.array([0.39, 0.30, 0.00, 0.63, 0.50, 0.33, 0.50, 0.00, 0.29, 0.43, 0.00, 0.63])


def test_paired_tests_agree_with_scipy_on_known_inputs():
    res = paired_tests(X, Y)
    t = stats.ttest_rel(X, Y)
    w = stats.wilcoxon(X - Y, method="asymptotic")  # zeros and ties: normal approximation
    assert res.n == 12
    assert res.mean_diff[0] == pytest.approx(np.mean(X - Y))
    assert res.t_stat[0] == pytest.approx(t.statistic)
    assert res.t_p[0] == pytest.approx(t.pvalue)
    assert res.w_stat[0] == pytest.approx(w.statistic)
    assert res.w_p[0] == pytest.approx(w.pvalue)
    d = X - Y
    assert res.d_z[0] == pytest.approx(d.mean() / d.std(ddof=1))
    # hand-checked: mean diff 1.41 / 12, sd 0.14759, t = 0.1175 / (0.14759 / sqrt 12) = 2.7578;
    # the only negative difference (-0.07) ties with two +0.07 at ranks 3-5, so W = 4
    assert res.mean_diff[0] == pytest.approx(0.1175, abs=1e-12)
    assert res.t_stat[0] == pytest.approx(2.7578, abs=1e-4)
    assert res.w_stat[0] == 4.0
    # without zeros or ties a small sample gets scipy's exact p-value (its "auto" choice)
    a, b = np.array([0.9, 0.4, 0.75, 0.3, 0.62]), np.array([0.5, 0.45, 0.2, 0.1, 0.12])
    assert paired_tests(a, b).w_p[0] == pytest.approx(stats.wilcoxon(a - b).pvalue)
    assert paired_tests(a, b).w_p[0] == pytest.approx(stats.wilcoxon(a - b, method="exact").pvalue)
    # columns are independent comparisons: a 2-column call equals two 1-column calls
    both = paired_tests(np.column_stack([X, Y]), np.column_stack([Y, X]))
    assert both.t_p[1] == pytest.approx(t.pvalue)
    assert both.t_stat[1] == pytest.approx(-t.statistic)


def test_identical_methods_get_p_one_instead_of_nan():
    res = paired_tests(X, X.copy())
    assert res.t_p[0] == 1.0 and res.w_p[0] == 1.0 and res.mean_diff[0] == 0.0
    assert np.isnan(res.d_z[0])
    assert np.isnan(cohens_dz(np.zeros((1, 1)))[0])


def test_holm_known_values_and_a_changed_decision():
    p = [0.01, 0.04, 0.03]
    adjusted = holm(p)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06])
    raw_decisions = [v < 0.05 for v in p]
    holm_decisions = [v < 0.05 for v in adjusted]
    assert raw_decisions == [True, True, True]
    assert holm_decisions == [True, False, False]  # Holm changes two decisions
    # textbook example: step-down multipliers 4, 3, 2, 1 with monotonicity
    assert holm([0.005, 0.011, 0.02, 0.04]) == pytest.approx([0.02, 0.033, 0.04, 0.04])
    assert holm([]).size == 0
    assert holm([float("nan"), 0.01])[0] == 1.0  # an undefined test never rejects


def test_bh_is_scipys_false_discovery_control():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205])
    assert benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p, method="bh"))
    assert adjust(p, "bh") == pytest.approx(benjamini_hochberg(p))
    assert adjust(p, "holm") == pytest.approx(holm(p))
    with pytest.raises(ValueError):
        adjust(p, "bonferroni")


def test_bootstrap_ci_is_reproducible_and_matches_scipy():
    rng = np.random.default_rng(3)
    d = rng.normal(0.02, 0.3, 400)
    seed = comparison_seed("douban", "sampled", "books", "all", None, "users")
    assert seed == comparison_seed("douban", "sampled", "books", "all", None, "users")
    assert seed != comparison_seed("douban", "sampled", "music", "all", None, "users")
    a = bootstrap_mean_ci(d, seed, n_boot=3000)
    b = bootstrap_mean_ci(d, seed, n_boot=3000)
    assert a[0][0] == b[0][0] and a[1][0] == b[1][0]  # identical, not just close
    ref = stats.bootstrap(
        (d,), np.mean, n_resamples=3000, method="percentile", random_state=np.random.default_rng(0)
    ).confidence_interval
    assert a[0][0] == pytest.approx(ref.low, abs=0.006)
    assert a[1][0] == pytest.approx(ref.high, abs=0.006)
    assert a[0][0] < d.mean() < a[1][0]
    # a different seed gives a (slightly) different interval: the seed is really used
    c = bootstrap_mean_ci(d, seed + 1, n_boot=3000)
    assert (c[0][0], c[1][0]) != (a[0][0], a[1][0])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    store = root / "results.duckdb"
    experiment = make_demo_store(store, n_users=160)
    result = build_report(store, root / "report", experiment)
    return store, root, experiment, result


def _rows(store, sql, params=None):
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_significance_rows_reproduce_from_per_user_values(demo):
    store, _, experiment, result = demo
    assert result["references"]["douban"][0] == "uclr"  # kind uclr with the BPRMF backbone
    assert result["persisted"] and result["significance_rows"] > 0
    # recompute one comparison from the documented user_means view with scipy
    pairs = _rows(
        store,
        "SELECT m.ndcg, r.ndcg FROM user_means m JOIN user_means r "
        "USING (experiment, dataset, ranking, domain, k, user_id) WHERE m.experiment = ? "
        "AND m.method = 'catart' AND r.method = 'uclr' AND m.ranking = 'sampled' AND m.k = 10 "
        "AND m.domain = 'books' ORDER BY user_id",
        [experiment],
    )
    x, y = np.array(pairs).T
    (row,) = _rows(
        store,
        "SELECT n_users, mean_diff, t_stat, t_p, w_p, d_z, family, family_size, t_p_adj "
        "FROM significance WHERE experiment = ? AND method = 'catart' AND reference = 'uclr' "
        "AND ranking = 'sampled' AND subset = 'all' AND k = 10 AND domain = 'books' "
        "AND metric = 'ndcg'",
        [experiment],
    )
    n, diff, t_stat, t_p, w_p, d_z, family, size, t_adj = row
    assert n == len(x)
    assert diff == pytest.approx(np.mean(x - y))
    assert t_stat == pytest.approx(stats.ttest_rel(x, y).statistic)
    assert t_p == pytest.approx(stats.ttest_rel(x, y).pvalue)
    assert w_p == pytest.approx(stats.wilcoxon(x - y).pvalue)
    assert d_z == pytest.approx(np.mean(x - y) / np.std(x - y, ddof=1))
    # the family is every method vs the reference across both domains for NDCG@10
    members = _rows(store, "SELECT t_p, t_p_adj FROM significance WHERE family = ?", [family])
    assert size == len(members) == 2 * 9  # 2 domains x 9 non-reference methods
    assert t_adj == pytest.approx(holm([m[0] for m in members])[[m[0] for m in members].index(t_p)])


def test_rerendering_gives_identical_statistics(demo):
    store, root, experiment, _ = demo
    query = (
        "SELECT ranking, comparison, subset, bucket, domain, k, metric, method, ci_low, ci_high, "
        "t_p_adj, boot_seed FROM significance WHERE experiment = ? ORDER BY ALL"
    )
    before = _rows(store, query, [experiment])
    build_report(store, root / "report2", experiment)
    assert _rows(store, query, [experiment]) == before


def test_correction_option_changes_family_adjustment(demo, tmp_path):
    store, _, experiment, _ = demo
    build_report(store, tmp_path / "bh", experiment, ReportOptions(correction="bh", n_boot=200))
    rows = _rows(
        store,
        "SELECT family, t_p, t_p_adj, correction FROM significance WHERE experiment = ?",
        [experiment],
    )
    assert {r[3] for r in rows} == {"bh"}
    fam = rows[0][0]
    members = [r for r in rows if r[0] == fam]
    expected = stats.false_discovery_control([m[1] for m in members], method="bh")
    assert [m[2] for m in members] == pytest.approx(list(expected))
    build_report(store, tmp_path / "holm", experiment)  # back to the defaults for other tests
