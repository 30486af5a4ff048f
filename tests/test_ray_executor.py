"""The Ray executor on a real two-node Ray cluster on this machine (no mocks).

The cluster is two ``ray start --block`` processes (a head and a second node with its own
raylet, as a second machine would have), one CPU each; the fixture stops exactly those two
processes (SIGTERM to ``ray start --block`` stops the Ray processes it started), never other
Ray instances on the machine.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import torch

from harness.runner.ray_executor import RayExecutor
from harness.runner.runner import run_spec
from harness.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = Path(sys.executable).parent / "ray"
ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",  # a private test cluster on 127.0.0.1, no token files
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}
USER_ROWS = "SELECT method, seed, domain, user_idx, k, hr, ndcg, mrr, rank, ties FROM per_user"
DUPLICATES = (
    "SELECT count(*) FROM (SELECT cell_id, ranking, domain, user_idx, k "
    "FROM user_metrics GROUP BY ALL HAVING count(*) > 1)"
)

TINY = """
[experiment]
name = "tiny"
seeds = {seeds}

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 300
n_items = [400, 200, 250]
n_interactions = [4000, 2000, 1800]

[protocol]
negatives = 99
ks = [10, 20]
full_ranking = true

[methods.bprmf]
kind = "bprmf"
[methods.bprmf.params]
embedding_size = 16
batch_size = 256
learning_rate = 0.01
max_epochs = {epochs}
patience = {epochs}

[methods.pop]
kind = "popularity"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _spec(tmp_path: Path, seeds=(0, 1), epochs: int = 4) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(seeds=list(seeds), epochs=epochs))
    return path


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(RAY_BIN), "start", "--block", "--num-cpus", "1", "--disable-usage-stats", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=ENV,
    )
    deadline = time.monotonic() + 90
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"ray start failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Address of a running two-node Ray cluster (head + one worker node, 1 CPU each)."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e .[ray])")
    logs = tmp_path_factory.mktemp("ray_logs")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # in-process drivers join without a token
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = f"/tmp/ray_t{port}"  # short: Ray's unix socket paths must stay below 108 bytes
    nodes = []
    try:
        nodes.append(
            _start_node(
                [
                    "--head",
                    "--port",
                    str(port),
                    "--include-dashboard=false",
                    "--dashboard-agent-listen-port",
                    str(_free_port()),
                    "--temp-dir",
                    temp_dir,
                ],
                logs / "head.log",
            )
        )
        nodes.append(
            _start_node(
                [
                    "--address",
                    address,
                    "--dashboard-agent-listen-port",
                    str(_free_port()),
                ],
                logs / "worker.log",
            )
        )
        yield address
    finally:
        for proc in reversed(nodes):  # only the processes this fixture started
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(nodes):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["rm", "-rf", temp_dir], check=False)


def _harness(*args: str, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness.cli", "run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, **kwargs)


@pytest.mark.slow
def test_quickstart_matrix_on_two_nodes_equals_in_process(tmp_path, cluster):
    """specs/quickstart.toml with 2 seeds and fewer epochs: cells on both nodes, same rows."""
    text = (REPO / "specs" / "quickstart.toml").read_text()
    text = re.sub(
        r"(\w*max_epochs) = \d+", r"\1 = 3", text.replace("seeds = [0, 1, 2]", "seeds = [0, 1]")
    )
    n_cells = 2 * len(load_spec_text_methods(text))
    spec = tmp_path / "quickstart.toml"
    spec.write_text(text)
    serial, distributed = tmp_path / "serial", tmp_path / "ray"
    # Same thread count as each Ray cell (--cpus-per-cell 1): a CPU reduction split over
    # another number of threads may round differently (UCLR's does), so only equal thread
    # counts promise identical rows.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_spec(load_spec(spec), serial, device="cpu")
    finally:
        torch.set_num_threads(before)
    started = time.monotonic()
    result = _harness(
        str(spec), "--out", str(distributed), "--device", "cpu", "--no-report",
        "--executor", "ray", "--address", cluster, timeout=300,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    db = distributed / "results.duckdb"
    assert _query(db, "SELECT count(*) FROM plan WHERE status = 'done'") == [(n_cells,)]
    nodes = _query(
        db, "SELECT DISTINCT json_extract_string(notes, '$.node') FROM cells WHERE status = 'done'"
    )
    assert len(nodes) == 2 and all(n and len(n) > 20 for (n,) in nodes), nodes
    assert _query(db, "SELECT DISTINCT json_extract_string(notes, '$.executor') FROM cells") == [
        ("ray",)
    ]
    assert _query(db, "SELECT DISTINCT device FROM cells") == [("cpu",)]
    order = " ORDER BY ALL"
    expected = _query(serial / "results.duckdb", USER_ROWS + order)
    assert expected and _query(db, USER_ROWS + order) == expected
    full = "SELECT method, seed, domain, user_idx, k, ndcg, rank FROM per_user_full ORDER BY ALL"
    assert _query(db, full) == _query(serial / "results.duckdb", full)
    print(f"ray run of {n_cells} quickstart cells: {elapsed:.1f}s wall (driver start included)")


def load_spec_text_methods(text: str) -> list[str]:
    import tomllib

    return list(tomllib.loads(text)["methods"])


class _KillOnFirstEpoch(RayExecutor):
    """Kills (SIGKILL) the Ray worker process training ``target`` at its first epoch event,
    by the pid the task reported with its start event."""

    def __init__(self, target: str, **kwargs):
        super().__init__(**kwargs)
        self.target, self.killed = target, []

    def run(self, tasks, on_start, on_epoch):
        def epoch(task, entry):
            if task.method == self.target and not self.killed:
                pid = self.placements[task.cell_id]["pid"]
                assert pid != os.getpid()
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
            on_epoch(task, entry)

        yield from super().run(tasks, on_start, epoch)


LADDER = """
[experiment]
name = "ladder"
seeds = {seeds}

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 300
n_items = [400, 200, 250]
n_interactions = [4000, 2000, 1800]

[protocol]
negatives = 99
ks = [10]

[methods.pge]
kind = "pge"
params = {params}

[methods.uclr]
kind = "uclr"
params = {params}

[methods.pop]
kind = "popularity"
"""
LADDER_PARAMS = (
    "{ embedding_size = 16, batch_size = 256, learning_rate = 0.01, patience = 30, "
    "pge_max_epochs = 30, ae_hidden = 16, ae_latent = 8, ae_max_epochs = 3, ae_max_steps = 1, "
    "ae_eval_every_epochs = 1, ae_eval_every_steps = 1, lora_rank = 4, lora_max_epochs = 10 }"
)


@pytest.mark.slow
def test_a_worker_killed_in_a_chain_reruns_only_the_unfinished_cells(tmp_path, cluster):
    """The ladder (pge, uclr) on one seed is one chain: killing its worker while uclr trains
    reruns uclr alone (attempt 1) on a fresh worker; pge, already returned, is not rerun."""
    spec = tmp_path / "ladder.toml"
    spec.write_text(LADDER.format(params=LADDER_PARAMS, seeds=[0]))
    out = tmp_path / "out"
    starts = []

    class Watched(_KillOnFirstEpoch):
        def run(self, tasks, on_start, on_epoch):
            def start(task):
                starts.append(task.method)
                on_start(task)

            yield from super().run(tasks, start, on_epoch)

    # device auto: the GPU Ray assigned to the task, none here (no --gpus-per-cell) -> cpu
    executor = Watched("uclr", address=cluster, max_retries=1, device="auto")
    summary = run_spec(load_spec(spec), out, device="cpu", executor=executor)
    assert len(executor.killed) == 1
    assert (summary.done, summary.failed) == (3, 0)
    assert sorted(starts) == ["pge", "pop", "uclr", "uclr"]
    db = out / "results.duckdb"
    attempts = dict(_query(db, "SELECT kind, notes::JSON->>'attempt' FROM cells"))
    assert attempts == {"pge": "0", "uclr": "1", "popularity": "0"}
    assert _query(db, "SELECT DISTINCT device FROM cells") == [("cpu",)]
    assert _query(db, DUPLICATES) == [(0,)]
    cases = _query(db, "SELECT sum(n_test_cases) FROM candidate_sets")[0][0]
    per_method = "SELECT method, count(*) FROM per_user GROUP BY ALL ORDER BY ALL"
    assert _query(db, per_method) == [("pge", cases), ("pop", cases), ("uclr", cases)]


@pytest.mark.slow
def test_a_worker_killed_past_max_retries_fails_its_cell_and_the_run_goes_on(tmp_path, cluster):
    spec = _spec(tmp_path, seeds=(0,), epochs=60)
    out = tmp_path / "out"
    executor = _KillOnFirstEpoch("bprmf", address=cluster, max_retries=0)
    summary = run_spec(load_spec(spec), out, device="cpu", executor=executor)
    assert len(executor.killed) == 1
    assert (summary.done, summary.failed) == (1, 1)
    db = out / "results.duckdb"
    assert dict(_query(db, "SELECT kind, status FROM cells")) == {
        "popularity": "done",
        "bprmf": "failed",
    }
    error = _query(db, "SELECT error FROM cells WHERE kind = 'bprmf'")[0][0]
    assert "Ray worker died" in error and "--max-retries 0" in error
    assert _query(db, "SELECT count(*) FROM user_metrics u JOIN cells c USING (cell_id) "
                  "WHERE c.kind = 'bprmf'") == [(0,)]  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_then_driver_kill_9_then_rerun_completes_without_retraining(tmp_path, cluster):
    """Ctrl-C (SIGINT) after the first committed cell: exit 130, run recorded as interrupted.
    Rerun, kill -9 the driver after its first committed cell. Rerun: the rest completes, no
    row twice, and no cell committed by the earlier runs is trained again."""
    spec = _spec(tmp_path, seeds=(0, 1, 2, 3), epochs=10)
    out = tmp_path / "out"
    db = out / "results.duckdb"
    args = [
        str(spec), "--out", str(out), "--device", "cpu", "--no-report",
        "--executor", "ray", "--address", cluster,
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "harness.cli", "run", *args]
    for signum, expected in ((signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)):
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV, cwd=REPO
        )
        for line in proc.stdout:
            if line.startswith("cell done"):
                proc.send_signal(signum)
                break
        proc.wait(timeout=120)
        assert proc.returncode == expected
    runs = "SELECT status, count(*) FROM runs GROUP BY ALL ORDER BY ALL"
    assert _query(db, runs) == [("interrupted", 1), ("running", 1)]  # kill -9 records nothing
    before = dict(_query(db, "SELECT cell_id, run_id FROM cells WHERE status = 'done'"))
    assert 2 <= len(before) < 8
    assert len(set(before.values())) == 2  # each of the two runs committed cells

    result = _harness(*args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(before)} already done, {8 - len(before)} to run" in result.stderr
    after = dict(_query(db, "SELECT cell_id, run_id FROM cells WHERE status = 'done'"))
    assert len(after) == 8
    assert {cell: after[cell] for cell in before} == before  # finished cells not retrained
    assert _query(db, DUPLICATES) == [(0,)]
    # the rerun finds the kill -9'd run still 'running' and records it as interrupted
    assert _query(db, runs) == [("finished", 1), ("interrupted", 2)]


@pytest.mark.slow
def test_drain_stops_handing_out_chains_and_running_chains_stop_before_their_next_cell(
    tmp_path, cluster
):
    """Two ladder chains (pge -> uclr, seeds 0 and 1) fill the two nodes; drain at the first
    start: the running pge cells finish and are stored, no uclr starts (the workers see the
    drain), the popularity chains are never handed out, and the run is recorded as drained."""
    from harness.runner.executor import DRAIN

    started = []

    class DrainAtFirstStart(RayExecutor):
        def run(self, tasks, on_start, on_epoch):
            def start(task):
                started.append(task.method)
                DRAIN.set()
                on_start(task)

            yield from super().run(tasks, start, on_epoch)

    spec = tmp_path / "ladder.toml"
    spec.write_text(LADDER.format(params=LADDER_PARAMS, seeds=[0, 1]))
    out = tmp_path / "out"
    summary = run_spec(
        load_spec(spec), out, device="cpu",
        executor=DrainAtFirstStart(address=cluster),
    )  # fmt: skip
    # Both ladder chains were handed out; one whose worker was still starting when the drain
    # arrived skips its pge as well, so one or two pge cells ran, nothing else.
    assert summary.failed == 0 and 1 <= summary.done <= 2
    assert started == ["pge"] * summary.done
    db = out / "results.duckdb"
    status = "SELECT method, status, count(*) FROM plan GROUP BY ALL ORDER BY ALL"
    assert _query(db, status) == [
        *(
            [("pge", "done", 2)]
            if summary.done == 2
            else [("pge", "done", 1), ("pge", "pending", 1)]
        ),
        ("pop", "pending", 2),
        ("uclr", "pending", 2),
    ]
    assert _query(db, "SELECT status FROM runs") == [("drained",)]


def test_without_ray_the_ray_executor_explains_and_exits_2(tmp_path):
    spec = _spec(tmp_path)
    blocked = (
        "import sys; sys.modules['ray'] = None; from harness.cli import app; "
        f"sys.argv = ['harness', 'run', {str(spec)!r}, '--executor', 'ray', '--no-report', "
        f"'--out', {str(tmp_path / 'out')!r}]; app()"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, env=ENV, cwd=REPO,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert 'pip install -e ".[ray]"' in result.stderr
    assert not (tmp_path / "out").exists()  # nothing ran
