"""Report Table 1 shows the cold-item test cases of pre-split data whenever there are any."""

from __future__ import annotations

import json
from types import SimpleNamespace

import polars as pl

from reports.tables import dataset_table


def _ctx(cold: dict[str, int] | None, bad_rows: dict | None = None) -> SimpleNamespace:
    table1 = pl.DataFrame(
        {
            "dataset": ["p", "p"],
            "domain": ["cloth", "sport"],
            "n_users": [10, 10],
            "n_items": [50, 40],
            "n_interactions": [100, 90],
            "density": [0.2, 0.225],
            "median_train": [8.0, 7.0],
            "n_cold": [0, 0],
            "n_sparse": [1, 2],
            "sparse_max": [2, 2],
        }
    )
    source = {"loader": "amazon_pairs"}
    if cold is not None:
        source["cold_test_cases"] = cold
    if bad_rows is not None:
        source["bad_rows"] = bad_rows
    protocol = pl.DataFrame({"dataset": ["p"], "n_users": [10], "source": [json.dumps(source)]})
    test_cases = pl.DataFrame({"dataset": ["p"], "domain": ["cloth"], "n_test_cases": [10]})
    data = SimpleNamespace(table1=table1, protocol=protocol, test_cases=test_cases, experiment="e")
    return SimpleNamespace(data=data)


def _texts(table) -> tuple[list[str], list[list[str]]]:
    heads = [h.text if hasattr(h, "text") else str(h) for h in table.header[-1]]
    rows = [[c.text for c in row.cells] for row in table.rows]
    return heads, rows


def test_cold_item_column_appears_only_when_there_are_cold_cases():
    table = dataset_table(_ctx({"cloth": 3, "sport": 0}), ["p"])
    heads, rows = _texts(table)
    assert heads[-1] == "Cold-item test cases"
    assert [r[-1] for r in rows[:2]] == ["3", "0"]
    assert len({len(r) for r in rows}) == 1  # the total row is padded to the same width
    for cold in ({"cloth": 0, "sport": 0}, None):
        heads, rows = _texts(dataset_table(_ctx(cold), ["p"]))
        assert "Cold-item test cases" not in heads


def test_skipped_malformed_rows_are_stated_under_table_1():
    bad = {"cloth_sport/train.txt": {"too few fields: expected 3 (user<TAB>item<TAB>label)": 2}}
    table = dataset_table(_ctx(None, bad), ["p"])
    assert "p: 2 malformed rows skipped (cloth_sport/train.txt: too few fields" in table.caption
    assert "malformed rows skipped" not in dataset_table(_ctx(None), ["p"]).caption
