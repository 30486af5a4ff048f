"""`harness verify` picks its rule from the hardware fingerprints: exact where the kernels can
be the same, the equivalence test (margin from the seed spread, paired TOST) elsewhere; a cell
perturbed beyond the margin fails either way, one perturbed within it passes only the
equivalence test."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.provenance import hardware_fingerprint, same_kernels
from harness.runner.verify import EquivalenceRule, compare_rows

SPEC = """
[experiment]
name = "verify"
seeds = [0, 1, 2]

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 300
n_items = [300, 200, 200]
n_interactions = [2500, 1500, 1500]

[protocol]
negatives = 49
ks = [10]

[methods.bprmf]
kind = "bprmf"
[methods.bprmf.params]
embedding_size = 8
batch_size = 256
learning_rate = 0.01
max_epochs = 4
patience = 2
"""


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    spec = root / "spec.toml"
    spec.write_text(SPEC, encoding="utf-8")
    result = cli("run", spec, "--out", root / "out", "--no-report", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return spec, root / "out"


@pytest.fixture
def store(trained, tmp_path):
    spec, out = trained
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    con = duckdb.connect(str(copy / "results.duckdb"))
    cell = con.execute("SELECT cell_id FROM cells WHERE seed = 0").fetchone()[0]
    con.close()
    return spec, copy, cell


def sql(out, query: str, params: list | None = None):
    con = duckdb.connect(str(out / "results.duckdb"))
    try:
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


def fake_other_cpu(out, cell: str) -> None:
    stored = json.loads(sql(out, "SELECT hardware FROM cells WHERE cell_id = ?", [cell])[0][0])
    stored["cpu_model"], stored["cpu_capability"] = "Some Other CPU", "AVX2"
    sql(out, "UPDATE cells SET hardware = ? WHERE cell_id = ?", [json.dumps(stored), cell])


def verify(spec, out, cell):
    return cli("verify", spec, "--out", out, "--cell", cell[:10], "--device", "cpu")


def test_cells_record_the_hardware_that_selects_kernels(store):
    _spec, out, cell = store
    recorded = json.loads(sql(out, "SELECT hardware FROM cells WHERE cell_id = ?", [cell])[0][0])
    import torch

    here = hardware_fingerprint(torch.device("cpu"))
    assert recorded["cpu_capability"] == here["cpu_capability"]
    assert recorded["torch"] == torch.__version__ and recorded["cpu_model"]
    assert same_kernels(recorded, {**here, "threads": recorded["threads"]})[0]
    assert not same_kernels(None, here)[0]


def test_same_fingerprint_exact_other_fingerprint_equivalence(store):
    spec, out, cell = store
    exact = verify(spec, out, cell)
    assert exact.exit_code == 0, exact.output
    assert f"OK {cell} (exact:" in exact.output
    fake_other_cpu(out, cell)
    other = verify(spec, out, cell)
    assert other.exit_code == 0, other.output
    assert f"EQUIVALENT {cell} (equivalence: cpu_model differs" in other.output
    rows = sql(out, "SELECT rule, ok, margin, reason, stored_hardware FROM verifications "
               "ORDER BY verified_at")  # fmt: skip
    assert [(r[0], r[1]) for r in rows] == [("exact", True), ("equivalence", True)]
    assert rows[1][2] > 0 and "Some Other CPU" in rows[1][4]


def test_a_small_perturbation_fails_exact_and_passes_equivalence(store):
    spec, out, cell = store
    sql(out, "UPDATE user_metrics SET ndcg = ndcg + 1e-6 WHERE cell_id = ? AND user_idx < 3",
        [cell])  # fmt: skip
    assert verify(spec, out, cell).exit_code == 1  # same kernels: any difference is real
    fake_other_cpu(out, cell)
    result = verify(spec, out, cell)
    assert result.exit_code == 0 and "EQUIVALENT" in result.output, result.output


def test_rows_perturbed_beyond_the_margin_fail_the_equivalence_test(store):
    spec, out, cell = store
    fake_other_cpu(out, cell)
    sql(out, "UPDATE user_metrics SET ndcg = ndcg + 0.05 WHERE cell_id = ? AND domain = "
        "(SELECT min(domain) FROM user_metrics)", [cell])  # fmt: skip
    result = verify(spec, out, cell)
    assert result.exit_code == 1
    assert f"MISMATCH {cell} (equivalence:" in result.output and "failed:" in result.output
    assert sql(out, "SELECT rule, ok FROM verifications")[-1] == ("equivalence", False)


def _rows(values: np.ndarray) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame(
        {
            "ranking": ["sampled"] * n,
            "domain": ["d"] * n,
            "user_idx": np.arange(n, dtype=np.int32),
            "k": np.full(n, 10, dtype=np.int32),
            "hr": values,
            "ndcg": values,
            "mrr": values,
            "rank": np.ones(n),
            "ties": np.zeros(n, dtype=np.int32),
            "n_train_domain": np.ones(n, dtype=np.int32),
            "n_train_total": np.ones(n, dtype=np.int32),
        }
    )


def test_tost_needs_the_whole_interval_inside_the_margin():
    rng = np.random.default_rng(0)
    base = rng.random(2000)
    rule = EquivalenceRule(std_fraction=0.5, min_margin=0.01)
    tight = compare_rows(_rows(base), _rows(base + rng.normal(0, 0.01, 2000)), "equivalence",
                         None, rule)  # fmt: skip
    assert tight.ok and tight.margin == 0.01
    # the same small mean shift, but so noisy per user that the data cannot show equivalence
    noisy = compare_rows(_rows(base), _rows(base + 0.004 + rng.normal(0, 0.5, 2000)),
                         "equivalence", None, rule)  # fmt: skip
    assert not noisy.ok and "failed" in noisy.worst
    # a seed spread widens the margin: std 0.1 -> margin 0.05
    spread = pl.DataFrame({"ranking": ["sampled"], "domain": ["d"], "k": [10], "n_seeds": [3],
                           "hr": [0.1], "ndcg": [0.1], "mrr": [0.1]})  # fmt: skip
    shifted = _rows(base + 0.03)
    assert not compare_rows(_rows(base), shifted, "equivalence", None, rule).ok
    assert compare_rows(_rows(base), shifted, "equivalence", spread, rule).ok


def test_sql_writes_list_and_struct_cells_as_json_in_csv(trained):
    _spec, out = trained
    result = cli("sql", "--out", out, "--format", "csv",
                 "SELECT [1, 2] AS pair, {'a': 1} AS record, 3 AS plain")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["pair,record,plain", '"[1, 2]","{""a"": 1}",3']
