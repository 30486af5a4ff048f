"""The committed leaderboards: every bundle imports into a fresh store, the report renders, and
one cheap real-data cell retrains to identical per-user rows on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.spec.load import load_spec
from harness.store.bundle import META_KEY
from tests.conftest import require_spec_data

REPO = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p for p in (REPO / "leaderboard").glob("*") if any(p.glob("*.parquet")))


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def spec_of(folder: Path) -> Path:
    """The shipped spec a leaderboard folder belongs to: the one naming it in ``results``."""
    for spec in sorted((REPO / "specs").glob("*.toml")):
        results = load_spec(spec, check_files=False).spec.experiment.results
        if any((spec.parent / r).resolve() == folder.resolve() for r in results):
            return spec
    raise AssertionError(f"no spec in specs/ lists {folder} in experiment.results")


def test_leaderboard_folders_exist():
    assert FOLDERS, "leaderboard/ holds no bundles"
    total = sum(f.stat().st_size for folder in FOLDERS for f in folder.iterdir())
    assert total < 50 * 2**20  # the size budget


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_committed_bundles_import_and_render(folder, tmp_path):
    spec = spec_of(folder)
    require_spec_data(spec)  # checked against the data (tests/test_lone_clone.py: without)
    out = tmp_path / "out"
    result = cli("import", folder, "--spec", spec, "--out", out)
    assert result.exit_code == 0, result.output
    n_files = len(list(folder.glob("*.parquet")))
    assert f"{n_files} bundle(s)" in result.output and "0 rejected" in result.output
    report = cli("report", spec, "--out", out, "--bootstrap", "200")
    assert report.exit_code == 0, report.output
    page = out / "report" / f"dataset-{next(iter(load_spec(spec).spec.datasets))}.html"
    assert page.exists()
    # every imported method appears in the rendered leaderboard
    kinds = {
        json.loads(pq.read_schema(f).metadata[META_KEY])["exported_as"]["label"]
        for f in folder.glob("*.parquet")
    }
    text = page.read_text(encoding="utf-8")
    assert all(label in text for label in kinds)


def test_a_published_douban_cell_retrains_to_an_exact_or_equivalent_result(tmp_path):
    """BPRMF seed 0 retrained from its bundle: exact where this machine selects the kernels it
    was trained with, else equivalent within the stated margin (harness/runner/verify.py)."""
    require_spec_data(REPO / "specs" / "douban.toml")
    folder = REPO / "leaderboard" / "douban"
    bundles = {
        json.loads(pq.read_schema(f).metadata[META_KEY])["exported_as"]["method"]
        + f"/{json.loads(pq.read_schema(f).metadata[META_KEY])['cell']['seed']}": f
        for f in folder.glob("*.parquet")
    }
    target = bundles["bprmf/0"]
    out = tmp_path / "out"
    spec = REPO / "specs" / "douban.toml"
    assert cli("import", target, "--spec", spec, "--out", out).exit_code == 0
    result = cli("verify", spec, "--out", out, "--cell", target.stem, "--device", "cpu")
    assert result.exit_code == 0, result.output
    exact = f"OK {target.stem} (exact:" in result.output and " 0 of " in result.output
    equivalent = f"EQUIVALENT {target.stem} (equivalence:" in result.output
    assert exact or equivalent, result.output
