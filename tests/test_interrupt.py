"""A Ctrl-C that a library swallows on its way up still stops the run (``INTERRUPT``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runner.executor import INTERRUPT
from harness.runner.runner import run_spec
from harness.spec.load import load_spec
from harness.store.store import connect_read_only
from methods.popularity import Popularity

SPEC = """
[experiment]
name = "interrupt"
seeds = [0, 1, 2]

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
"""


def test_swallowed_interrupt_stops_after_the_running_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit = Popularity.fit

    def fit_then_swallow_ctrl_c(self, data, ctx):
        try:  # as the CLI's handler does on SIGINT, then a library eats the exception
            INTERRUPT.set()
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        return fit(self, data, ctx)

    monkeypatch.setattr(Popularity, "fit", fit_then_swallow_ctrl_c)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_spec(load_spec(spec), tmp_path / "out")
    finally:
        INTERRUPT.clear()
    con = connect_read_only(tmp_path / "out" / "results.duckdb")
    cells = con.execute("SELECT count(*) FROM cells WHERE status = 'done'").fetchone()[0]
    runs = con.execute("SELECT status FROM runs").fetchall()
    con.close()
    assert cells == 1  # the cell in progress is kept; no further cell started
    assert runs == [("interrupted",)]
