"""Mid-training checkpoints: a cell killed after epoch k continues at k + 1 and ends exactly
where an uninterrupted run ends (``methods.checkpoint``, GA-MTCDR opts in)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE, STDOUT

import pytest
import torch

from harness.runner.runner import plan_status, run_spec
from harness.spec.load import load_spec
from harness.store.store import connect_read_only
from methods.checkpoint import EpochCheckpoints

SPEC = """
[experiment]
name = "resume"
seeds = [0]
device = "cpu"

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 150
n_items = [60, 40, 50]
n_interactions = [440, 300, 300]

[protocol]
negatives = 20

[methods.ga]
kind = "gamtcdr"
[methods.ga.params]
embedding_size = 8
batch_size = 128
max_epochs = 6
patience = 6
n2v_walk_length = 10
n2v_walks_per_node = 2
"""

REPO = Path(__file__).resolve().parents[1]
ROWS = "SELECT * FROM per_user ORDER BY ALL"
CURVE = (
    "SELECT stage, epoch, name, value FROM training_curves "
    "WHERE name NOT IN ('train_s', 'valid_s') ORDER BY ALL"
)


class Killed(BaseException):
    """Stands for the process dying right after a checkpoint was written."""


def _query(folder: Path, sql: str) -> list[tuple]:
    con = connect_read_only(folder / "results.duckdb")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_killed_cell_resumes_after_its_checkpoint_and_matches_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_spec(load_spec(spec), whole, checkpoint_every_s=0.0)
    assert not list((whole / "checkpoints").glob("*.pt"))  # removed once the cell is done

    save = EpochCheckpoints.save
    saved_epochs: list[int] = []

    def save_then_die_at_epoch_3(self, key, state):
        save(self, key, state)
        saved_epochs.append(state["epoch"])
        if state["epoch"] == 3:
            raise Killed

    monkeypatch.setattr(EpochCheckpoints, "save", save_then_die_at_epoch_3)
    with pytest.raises(Killed):
        run_spec(load_spec(spec), resumed, checkpoint_every_s=0.0)
    assert saved_epochs == [1, 2, 3]  # every epoch with checkpoint_every_s = 0
    (checkpoint,) = (resumed / "checkpoints").glob("*.pt")
    assert torch.load(checkpoint, weights_only=True)["stages"]["gamtcdr"]["epoch"] == 3
    planned = plan_status(load_spec(spec), resumed / "results.duckdb")
    assert planned.select("status", "checkpoint").rows() == [("pending", "gamtcdr epoch 3")]

    monkeypatch.setattr(EpochCheckpoints, "save", save)
    trained: list[int] = []
    from methods import gamtcdr

    batch_loss = gamtcdr.GAMTCDR._batch_loss

    def counting(self, *args):
        trained.append(1)
        return batch_loss(self, *args)

    monkeypatch.setattr(gamtcdr.GAMTCDR, "_batch_loss", counting)
    run_spec(load_spec(spec), resumed, checkpoint_every_s=0.0)

    assert _query(resumed, ROWS) == _query(whole, ROWS)  # the same per-user results
    assert _query(resumed, CURVE) == _query(whole, CURVE)  # and the whole curve, epochs 1..6
    epochs = _query(whole, "SELECT epochs, best_epoch FROM cells")
    assert _query(resumed, "SELECT epochs, best_epoch FROM cells") == epochs
    notes = _query(
        resumed, "SELECT json_extract_string(notes, '$.resumed_after_epoch.gamtcdr') FROM cells"
    )
    assert notes == [("3",)]
    assert not list((resumed / "checkpoints").glob("*.pt"))
    whole_epochs = epochs[0][0]
    steps_per_epoch = len(trained) / (whole_epochs - 3)
    assert steps_per_epoch > 0 and len(trained) < whole_epochs * steps_per_epoch  # 4..6 only


def test_damaged_checkpoint_is_ignored_and_the_cell_trains_from_the_start(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    reference, damaged = tmp_path / "reference", tmp_path / "damaged"
    run_spec(load_spec(spec), reference)
    (cell_id,) = _query(reference, "SELECT cell_id FROM cells")[0]
    folder = damaged / "checkpoints"
    folder.mkdir(parents=True)
    (folder / f"{cell_id}.pt").write_bytes(b"not a checkpoint")  # e.g. a disk filled up
    run_spec(load_spec(spec), damaged)
    assert _query(damaged, ROWS) == _query(reference, ROWS)
    sql = "SELECT json_extract_string(notes, '$.checkpoint_discarded') FROM cells"
    (discarded,) = _query(damaged, sql)[0]
    assert discarded
    assert not (folder / f"{cell_id}.pt").exists()


def test_checkpoints_are_written_at_most_every_interval(tmp_path: Path) -> None:
    store = EpochCheckpoints(tmp_path / "c.pt", every_s=3600.0)
    assert not store.due()  # the interval counts from the start of the fit
    store.save("stage", {"epoch": 1})
    assert not store.due()
    again = EpochCheckpoints(tmp_path / "c.pt", every_s=0.0)
    assert again.due()
    assert again.load("stage") == {"epoch": 1} and again.resumed == {"stage": 1}
    assert again.load("other") is None
    assert again.carried_s >= 0.0


KILL_SPEC = SPEC.replace(
    "n_users = 150\nn_items = [60, 40, 50]\nn_interactions = [440, 300, 300]",
    "n_users = 600\nn_items = [200, 150, 150]\nn_interactions = [1800, 1200, 1200]",
).replace("max_epochs = 6\npatience = 6", "max_epochs = 20\npatience = 20")
assert "n_users = 600" in KILL_SPEC and "max_epochs = 20" in KILL_SPEC


def _run_cli(spec: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out)]
    command += ["--threads", "1", "--no-report", "--checkpoint-every", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=PIPE, stderr=STDOUT, text=True)


def _saved_epoch(folder: Path) -> int:
    for path in folder.glob("*.pt"):
        try:
            return int(torch.load(path, weights_only=True)["stages"]["gamtcdr"]["epoch"])
        except Exception:  # replaced while read: look again
            return 0
    return 0


def test_kill_9_mid_training_then_rerun_continues_from_the_checkpoint(tmp_path: Path) -> None:
    """The real thing: `harness run` killed with SIGKILL after its third saved epoch; the same
    command again continues there and stores what an uninterrupted run stores."""
    spec = tmp_path / "spec.toml"
    spec.write_text(KILL_SPEC)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = _run_cli(spec, whole)
    assert reference.wait(timeout=600) == 0, reference.stdout.read()  # type: ignore[union-attr]

    victim = _run_cli(spec, killed)
    deadline = time.monotonic() + 300
    while _saved_epoch(killed / "checkpoints") < 3:
        assert victim.poll() is None, "the run ended before its third checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert _query(killed, "SELECT count(*) FROM cells WHERE status = 'done'") == [(0,)]

    again = _run_cli(spec, killed)
    assert again.wait(timeout=600) == 0, again.stdout.read()  # type: ignore[union-attr]
    assert _query(killed, ROWS) == _query(whole, ROWS)
    assert _query(killed, CURVE) == _query(whole, CURVE)
    sql = "SELECT json_extract_string(notes, '$.resumed_after_epoch.gamtcdr') FROM cells"
    (resumed,) = _query(killed, sql)[0]
    assert int(resumed) >= 3
