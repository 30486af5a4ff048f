"""The report site: pages, tables, escaping, bucket arithmetic, exports, CLI and spec options."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.runner.runner import run_spec
from harness.spec.load import load_spec
from reports.options import ReportOptions
from reports.site import build_report
from tests.demo_store import SCRIPT_LABEL, make_demo_store

SCRIPT = "<script>alert(1)</script>"
TINY = f"""
[experiment]
name = "tiny-report"
seeds = [0, 1]

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 200
n_items = [300, 150, 150]
n_interactions = [2500, 1200, 1000]

[protocol]
negatives = 99
ks = [10, 20]
full_ranking = true

[methods.bprmf]
kind = "bprmf"
label = "{SCRIPT}"
[methods.bprmf.params]
embedding_size = 8
batch_size = 256
max_epochs = 3
patience = 2

[methods.pop]
kind = "popularity"
label = "MostPop"
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    spec = root / "tiny.toml"
    spec.write_text(TINY)
    out = root / "out"
    summary = run_spec(load_spec(spec), out, device="cpu")
    assert summary.failed == 0
    # The report is the CLI's last step of `harness run`; the runner never imports reports/.
    result = CliRunner().invoke(app, ["report", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return spec, out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    store = root / "results.duckdb"
    experiment = make_demo_store(store, n_users=160)
    result = build_report(store, root / "report", experiment)
    return store, root / "report", experiment, result


def _rows(store: Path, sql: str, params=None):
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_run_writes_index_and_dataset_page_with_notes_for_missing_tables(tiny):
    _, out = tiny
    index = (out / "report" / "index.html").read_text()
    page = (out / "report" / "dataset-syn.html").read_text()
    assert 'href="dataset-syn.html"' in index
    for text in (
        "Table 1: dataset statistics",
        "Table 7: syn · training and inference time",
        "Provenance",
        "spec hash",
    ):
        assert text in index, text
    for text in (
        "Table 2: syn · Metric@10",
        "Table 8: syn · Metric@20",
        "Full ranking: syn · Metric@10",
        "Table 3: syn · sparse users · Metric@10",
        "Activity buckets: syn · books · Metric@10",
        "Figs. 3/4: user activity distribution",
        "Sampled vs full ranking: syn · method-rank agreement",
        "Significance: syn · all users",
        "syn · seconds per training epoch, by stage",
        "Not in this run: no UCLR ablation variants",
        "Not in this run: no UCLR method",
        "Not in this run: no per-user temperatures",
        "No paper numbers: dataset loader &#39;synthetic&#39;",
        "<svg",
    ):
        assert text in page, text
    for html in (index, page):  # self-contained: no external resources
        assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
        assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "https://" not in html


def test_method_name_with_script_renders_as_text(tiny, demo):
    _, out = tiny
    report = out / "report"
    for path in (report / "index.html", report / "dataset-syn.html"):
        html = path.read_text()
        assert SCRIPT not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert html.count("<script") == 1  # only the report's own inline script
    md = (report / "exports" / "leaderboard-syn-k10.md").read_text()
    assert SCRIPT not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    tex = (report / "exports" / "leaderboard-syn-k10.tex").read_text()
    assert "<script>" not in tex and r"\textless{}script\textgreater{}" in tex
    # also inside the SVG legends of the fabricated report
    page = (demo[1] / "dataset-douban.html").read_text()
    assert SCRIPT_LABEL not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page


def test_bucket_counts_add_up_to_the_domains_users(tiny):
    _, out = tiny
    db = out / "results.duckdb"
    users = dict(
        _rows(
            db,
            "SELECT d.domain, d.n_users FROM dataset_domains d JOIN experiment_protocol e "
            "USING (dataset_fingerprint) WHERE e.experiment = 'tiny-report'",
        )
    )
    activity = dict(
        _rows(
            db,
            "SELECT domain, sum(n_users) FROM activity_distribution "
            "WHERE experiment = 'tiny-report' GROUP BY domain",
        )
    )
    assert activity == users
    assert len(_rows(db, "SELECT DISTINCT bucket FROM activity_distribution")) == 9
    mismatches = _rows(
        db,
        "SELECT b.method, b.domain, b.k, b.n, l.n_users FROM (SELECT method, ranking, domain, k, "
        "sum(n_users) AS n FROM bucket_summary GROUP BY ALL) b JOIN leaderboard l "
        "USING (method, ranking, domain, k) WHERE b.n <> l.n_users",
    )
    assert mismatches == []
    per_domain = dict(
        _rows(
            db, "SELECT domain, max(n_users) FROM leaderboard WHERE ranking = 'sampled' GROUP BY 1"
        )
    )
    assert per_domain == users  # every user with an interaction has a test case
    sparse = dict(
        _rows(
            db,
            "SELECT domain, count(*) FROM user_activity WHERE n_train BETWEEN 1 AND 2 "
            "AND n_interactions > 0 GROUP BY domain",
        )
    )
    sparse_summary = dict(
        _rows(
            db,
            "SELECT domain, max(n_users) FROM sparse_summary WHERE ranking = 'sampled' GROUP BY 1",
        )
    )
    assert sparse_summary == sparse


def test_bucket_edges_and_report_options_follow_the_spec(tiny):
    spec, out = tiny
    db = out / "results.duckdb"
    options = ReportOptions.from_spec(load_spec(spec).spec, n_boot=100)
    build_report(db, out / "report-edges", "tiny-report", options.with_overrides(buckets=(0, 5)))
    labels = [r[0] for r in _rows(db, "SELECT bucket_label FROM activity_buckets ORDER BY bucket")]
    assert labels == ["0", "1-5", "6+"]
    assert not _rows(
        db,
        "SELECT * FROM (SELECT method, ranking, domain, k, sum(n_users) AS n FROM bucket_summary "
        "GROUP BY ALL) b JOIN leaderboard l USING (method, ranking, domain, k) WHERE b.n <> "
        "l.n_users",
    )
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(spec),
            "--out",
            str(out),
            "--test",
            "wilcoxon",
            "--correction",
            "bh",
            "--reference",
            "bprmf",
            "--bootstrap",
            "200",
        ],
    )
    assert result.exit_code == 0, result.output
    assert _rows(db, "SELECT DISTINCT test, correction, n_boot FROM significance") == [
        ("wilcoxon", "bh", 200)
    ]
    assert _rows(
        db, "SELECT DISTINCT reference FROM significance WHERE comparison = 'reference'"
    ) == [("bprmf",)]
    labels = [r[0] for r in _rows(db, "SELECT bucket_label FROM activity_buckets ORDER BY bucket")]
    assert len(labels) == 9  # the spec's default edges again
    bad = CliRunner().invoke(app, ["report", str(spec), "--out", str(out), "--reference", "bpr"])
    assert bad.exit_code == 2
    assert "did you mean 'bprmf'" in re.sub(r"[│╭╮╰╯─\s]+", " ", bad.output)


def test_fabricated_run_shows_every_paper_table_and_figure(demo):
    store, report, experiment, result = demo
    page = (report / "dataset-douban.html").read_text()
    for text in (
        "Table 1: dataset statistics · douban",
        "Table 2: douban · Metric@10",
        "Table 8: douban · Metric@20",
        "Table 3: douban · sparse users · Metric@10",
        "Tables 4/5: douban · ablation ladder (bprmf) · Metric@10",
        "Table 6: douban · UCLR per pretraining backbone · Metric@10",
        "Table 7: douban · training and inference time",
        "Fig. 5: user temperatures · douban · UCLR",
        "Figs. 3/4: user activity distribution · douban",
        "Paper deltas: douban vs the paper&#39;s Douban",
        "2 (books, music) instead of the paper&#39;s 3 Douban domains",
        "Significance: douban · ablation steps",
        "UCLR (reference)",
        "▼",
    ):
        assert text in page, text
    assert "Not in this run" not in page
    # a leaderboard cell is exactly the leaderboard view's number
    ((mean, std),) = _rows(
        store,
        "SELECT ndcg_mean, ndcg_std FROM leaderboard WHERE experiment = ? AND method = 'uclr' "
        "AND ranking = 'sampled' AND k = 10 AND domain = 'books'",
        [experiment],
    )
    assert f"{100 * mean:.2f} ± {100 * std:.2f}" in page
    # the paper's UCLR Douban books MRR@10 (Table 2) sits beside ours
    assert "29.75 ± 0.50" in page
    # every table has its SQL and its three exports
    assert page.count('<figure class="table"') == page.count("SQL behind this table") > 20
    for stem in result["tables"]:
        for ext in ("md", "tex", "csv"):
            assert (report / "exports" / f"{stem}.{ext}").stat().st_size > 0
    md = (report / "exports" / "leaderboard-douban-k10.md").read_text()
    assert "**" in md and "<u>" in md and "▼" in md
    tex = (report / "exports" / "leaderboard-douban-k10.tex").read_text()
    assert r"\textbf{" in tex and r"\multicolumn{3}{c}{books" in tex and r"$\pm$" in tex


def test_reference_falls_back_to_the_best_method_without_uclr(tmp_path):
    from tests.demo_store import DEMO_METHODS

    methods = {k: v for k, v in DEMO_METHODS.items() if v[0] in ("bprmf", "catart", "lightgcn")}
    store = tmp_path / "r.duckdb"
    experiment = make_demo_store(store, n_users=80, seeds=(0, 1), methods=methods)
    result = build_report(store, tmp_path / "report", experiment, ReportOptions(n_boot=50))
    method, why = result["references"]["douban"]
    assert method == "catart" and "best method by NDCG@10" in why
    page = (tmp_path / "report" / "dataset-douban.html").read_text()
    assert "Not in this run: no UCLR ablation variants" in page
