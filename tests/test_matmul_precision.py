"""The float32 matmul precision option: part of a cell's identity only when reduced, applied
around fit and scoring, restored afterwards, recorded with the cell and carried by bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.runner.cells import plan_cells
from harness.runner.prepare import prepare
from harness.runner.publish import export_cells, import_bundles
from harness.runner.runner import run_spec
from harness.spec.load import SpecError, load_spec
from harness.store.bundle import bundle_table, read_bundle, write_bundle
from harness.store.store import Store, connect_read_only
from methods.popularity import Popularity

SPEC = """
[experiment]
name = "precision"
seeds = [0]
{experiment}

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 120
n_items = [60, 40, 50]
n_interactions = [300, 240, 200]

[protocol]
negatives = 20

[methods.pop]
kind = "popularity"
{pop}

[methods.pop_plain]
kind = "popularity"
"""


def _spec(tmp_path: Path, experiment: str = "", pop: str = "") -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(experiment=experiment, pop=pop))
    return path


def _prepared(loaded) -> dict:
    return {name: prepare(loaded, name, None) for name in loaded.spec.datasets}


def _cells(path: Path) -> dict[str, str]:
    loaded = load_spec(path)
    tasks = plan_cells(loaded, _prepared(loaded), "cpu")
    return {t.method: t.cell_id for t in tasks}


def test_full_precision_keeps_cell_ids_and_spec_hash(tmp_path: Path) -> None:
    plain = _cells(_spec(tmp_path))
    plain_hash = load_spec(_spec(tmp_path)).spec_hash
    explicit = _spec(tmp_path, experiment='matmul_precision = "highest"')
    assert _cells(explicit) == plain
    assert load_spec(explicit).spec_hash == plain_hash
    # Both methods are the same model; at full precision they are the same cell.
    assert plain["pop"] == plain["pop_plain"]


def test_reduced_precision_is_a_different_cell(tmp_path: Path) -> None:
    plain = _cells(_spec(tmp_path))
    medium = _cells(_spec(tmp_path, pop='matmul_precision = "medium"'))
    assert medium["pop"] != plain["pop"]
    assert medium["pop_plain"] == plain["pop_plain"]
    everywhere = _cells(_spec(tmp_path, experiment='matmul_precision = "high"'))
    assert everywhere["pop"] != plain["pop"] and everywhere["pop"] != medium["pop"]
    assert everywhere["pop_plain"] == everywhere["pop"]
    # A method's own setting wins over the experiment's.
    override = _cells(
        _spec(tmp_path, experiment='matmul_precision = "high"', pop='matmul_precision = "medium"')
    )
    assert override["pop"] == medium["pop"]


def test_unknown_precision_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="matmul_precision"):
        load_spec(_spec(tmp_path, pop='matmul_precision = "bf16"'))


def test_precision_applies_during_fit_and_is_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    fit = Popularity.fit

    def recording_fit(self, data, ctx):
        seen.append(torch.get_float32_matmul_precision())
        return fit(self, data, ctx)

    monkeypatch.setattr(Popularity, "fit", recording_fit)
    before = torch.get_float32_matmul_precision()
    spec = _spec(tmp_path, pop='matmul_precision = "medium"')
    run_spec(load_spec(spec), tmp_path / "out")
    assert sorted(seen) == ["highest", "medium"]
    assert torch.get_float32_matmul_precision() == before
    con = connect_read_only(tmp_path / "out" / "results.duckdb")
    notes = dict(
        con.execute(
            "SELECT json_extract_string(notes, '$.matmul_precision'), count(*) FROM cells "
            "GROUP BY 1 ORDER BY 1 NULLS FIRST"
        ).fetchall()
    )
    con.close()
    assert notes == {None: 1, "medium": 1}


def test_bundle_carries_precision_and_refuses_a_contradiction(tmp_path: Path) -> None:
    spec = _spec(tmp_path, pop='matmul_precision = "medium"')
    loaded = load_spec(spec)
    run_spec(loaded, tmp_path / "out")
    tasks = plan_cells(loaded, _prepared(loaded), "cpu")
    with Store(tmp_path / "out" / "results.duckdb") as store:
        paths = export_cells(store, tasks, tmp_path / "bundles", "precision", {})
    medium = next(t for t in tasks if t.method == "pop")
    bundle = tmp_path / "bundles" / f"{medium.cell_id}.parquet"
    assert bundle in paths
    fresh = tmp_path / "fresh.duckdb"
    with Store(fresh) as store:
        report = import_bundles(store, paths, _prepared(loaded))
    assert not report.rejected, report.rejected
    # The same rows claiming full precision: the identity still says medium, so it is refused.
    _rewrite_notes(bundle, {"matmul_precision": "highest"})
    with Store(tmp_path / "other.duckdb") as store:
        report = import_bundles(store, [bundle], _prepared(loaded))
    assert report.rejected and "matmul precision" in report.rejected[0][1]


def _rewrite_notes(path: Path, notes: dict) -> None:
    bundle = read_bundle(path)
    meta = dict(bundle.meta)
    meta["cell"] = {**meta["cell"], "notes": json.dumps(notes)}
    write_bundle(path, meta, bundle_table(bundle.metrics, bundle.curves, bundle.values))
