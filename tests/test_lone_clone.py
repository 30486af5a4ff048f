"""A clone with nothing beside it: no sibling data folder, an empty data home, no downloads.
The published leaderboards still render (marked as not yet checked against the data), `plan`
and `sql` work, a spec without published results fails with one line and leaves no empty
store, and the real-data tests skip with the fetch command (or fail when required)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.store.bundle import META_KEY

REPO = Path(__file__).resolve().parents[1]


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """specs/ and leaderboard/ in a fresh folder; the data home is empty and no file may be
    fetched (no mirror, upstream downloads off)."""
    root = tmp_path / "clone"
    for part in ("specs", "leaderboard"):
        shutil.copytree(REPO / part, root / part)
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "empty-home"))
    monkeypatch.delenv("HARNESS_DATA_MIRROR", raising=False)
    monkeypatch.setenv("HARNESS_DATA_OFFLINE", "1")
    monkeypatch.chdir(root)
    return root


def labels(folder: Path) -> set[str]:
    return {
        json.loads(pq.read_schema(f).metadata[META_KEY])["exported_as"]["label"]
        for f in folder.glob("*.parquet")
    }


@pytest.mark.parametrize("name", ["douban", "amazon_pairs"])
def test_the_published_leaderboard_renders_without_the_data(clone, name):
    spec = clone / "specs" / f"{name}.toml"
    out = clone / "results" / name
    result = cli("report", spec, "--out", out, "--bootstrap", "200")
    assert result.exit_code == 0, result.output
    n_cells = len(list((clone / "leaderboard" / name).glob("*.parquet")))
    assert n_cells >= 39 and f"{n_cells} imported" in result.output, result.output
    assert "0 rejected" in result.output
    index = (out / "report" / "index.html").read_text(encoding="utf-8")
    pages = [p.read_text(encoding="utf-8") for p in (out / "report").glob("dataset-*.html")]
    assert all("Not yet checked against the data" in page for page in [index, *pages])
    expected = labels(clone / "leaderboard" / name)
    assert len(expected) >= 13 and all(label in pages[0] for label in expected)
    plan = cli("plan", spec, "--out", out)
    assert plan.exit_code == 0, plan.output
    assert f"done: {n_cells}" in plan.output, plan.output
    assert "not yet checked against the data" in plan.output
    board = cli("sql", "--out", out, "--format", "csv",
                "SELECT DISTINCT method FROM leaderboard WHERE k = 10")  # fmt: skip
    assert board.exit_code == 0 and len(board.output.strip().splitlines()) == 1 + len(expected)


def test_a_spec_without_data_or_published_results_fails_in_one_line(clone):
    spec = clone / "specs" / "douban3.toml"
    out = clone / "results" / "douban3"
    for command in ("report", "run", "plan", "verify"):
        result = cli(command, spec, "--out", out)
        assert result.exit_code == 3, (command, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("error")]
        assert len(errors) == 1, (command, result.output)
        assert not (out / "results.duckdb").exists()  # no empty store left behind
    assert "harness data fetch douban" in errors[0]
    assert cli("sql", "--out", out, "SELECT 1").exit_code == 3  # no store: says so


@pytest.mark.parametrize(("required", "outcome"), [("0", "1 skipped"), ("1", "1 error")])
def test_real_data_tests_skip_with_the_fetch_command_or_fail_when_required(
    tmp_path, required, outcome
):
    env = {
        **os.environ,
        "HARNESS_DATA": str(tmp_path / "empty-home"),
        "HARNESS_DATA_OFFLINE": "1",
        "HARNESS_REQUIRE_REAL_DATA": required,
    }
    env.pop("HARNESS_DATA_MIRROR", None)
    test = "tests/test_data_loaders.py::test_douban_real_data_matches_readme"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert outcome in run.stdout, run.stdout  # required: the data fixture fails the test
    assert "harness data fetch douban" in run.stdout


def test_once_the_data_is_fetched_the_bundles_are_checked_and_the_label_goes(clone, monkeypatch):
    spec = clone / "specs" / "douban.toml"
    out = clone / "results" / "douban"
    assert cli("report", spec, "--out", out, "--bootstrap", "100").exit_code == 0
    index = out / "report" / "index.html"
    assert "Not yet checked against the data" in index.read_text(encoding="utf-8")
    monkeypatch.delenv("HARNESS_DATA_OFFLINE")
    monkeypatch.delenv("HARNESS_DATA")  # the real data home (fetched there if needed)
    from tests.conftest import real_data_home

    monkeypatch.setenv("HARNESS_DATA", str(real_data_home("douban")))
    again = cli("report", spec, "--out", out, "--bootstrap", "100")
    assert again.exit_code == 0 and "0 rejected" in again.output, again.output
    assert "Not yet checked against the data" not in index.read_text(encoding="utf-8")
    plan = cli("plan", spec, "--out", out)
    assert "not yet checked" not in plan.output
