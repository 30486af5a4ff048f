"""Reliability: thread policy, damaged stores, one writer per store, the `harness sql` sandbox,
and the layering rule (nothing in harness/ imports reports/). Locks and kills use real
subprocesses."""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from harness.cli import app

REPO = Path(__file__).resolve().parents[1]

SPEC = """
[experiment]
name = "rel"
seeds = {seeds}

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 200
n_items = [300, 150, 200]
n_interactions = [2500, 1200, 1000]

[protocol]
negatives = 49
ks = [10]
full_ranking = false

[methods.bprmf]
kind = "bprmf"
[methods.bprmf.params]
embedding_size = 8
batch_size = 256
max_epochs = {epochs}
patience = 1000

[methods.pop]
kind = "popularity"
"""


def _spec(tmp_path: Path, seeds=(0,), epochs: int = 2) -> Path:
    path = tmp_path / "rel.toml"
    path.write_text(SPEC.format(seeds=list(seeds), epochs=epochs))
    return path


def _rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


# -- thread policy ----------------------------------------------------------------------------


def test_thread_policy_divides_the_cores_given_and_threads_overrides(monkeypatch):
    from harness.runner import threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)  # a quiet machine
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.available_cores() == 6
    assert threads.thread_policy(1).threads == 6
    assert threads.thread_policy(2).threads == 3
    assert threads.thread_policy(4).threads == 1  # never zero, never more than cores
    assert threads.thread_policy(8).threads == 1
    forced = threads.thread_policy(2, threads=2)
    assert (forced.threads, forced.source) == (2, "--threads")
    assert threads.thread_policy(1, threads=1).threads == 1  # in-process too
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a caller's lower limit is kept ...
    assert (threads.thread_policy(1).threads, threads.thread_policy(1).source) == (
        2,
        "OMP_NUM_THREADS",
    )
    assert threads.thread_policy(4).threads == 1  # ... but never raises the share
    assert threads.thread_policy(1, threads=4).threads == 4


def test_thread_policy_leaves_the_cores_other_processes_keep_busy(monkeypatch):
    """A busy neighbour on a 2-core machine: one thread, not two spinning against it."""
    from harness.runner import threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    loaded = threads.thread_policy(1, busy=1.0)
    assert (loaded.threads, loaded.source) == (1, "free cores/workers")
    assert "2 cores, 1.0 busy" in loaded.describe()
    assert threads.thread_policy(1, busy=0.4).threads == 2  # less than half a core: free
    assert threads.thread_policy(1, busy=2.0).threads == 1  # never zero
    assert threads.thread_policy(1, threads=2, busy=1.0).threads == 2  # --threads wins
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)), raising=False)
    assert threads.thread_policy(2, busy=2.2).threads == 3  # (8 - 2) cores / 2 workers
    assert threads.thread_policy(2, busy=0.0).threads == 4
    sampled = []
    monkeypatch.setattr(threads, "busy_cores", lambda: sampled.append(1) or 0.0)
    assert threads.thread_policy(8).threads == 1 and not sampled  # one each: nothing to sample
    assert threads.thread_policy(1).threads == 8 and sampled == [1]


def test_busy_cores_sees_a_cpu_bound_neighbour():
    """Sampled from /proc/stat: a spinning child reads as (about) one busy core."""
    from harness.runner.threads import busy_cores

    if not os.path.exists("/proc/stat"):
        pytest.skip("needs /proc/stat (Linux)")
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores(0.5) >= 0.7
    finally:
        neighbour.kill()
        neighbour.wait()


def test_pool_sets_thread_variables_for_spawned_workers_and_restores_them(monkeypatch):
    """Workers inherit the variables when they are spawned (they import torch before any
    initializer runs), so they are set while the pool starts workers; the parent's own
    environment comes back afterwards."""
    from harness.runner import pool

    seen = {}

    class FakePool:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def submit(self, *_args):  # where real workers would be spawned
            seen.update({var: os.environ.get(var) for var in pool.THREAD_VARS})
            raise RuntimeError("stop here")

        def shutdown(self, **_kwargs):
            pass

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(pool, "ProcessPoolExecutor", FakePool)
    monkeypatch.setattr(pool, "chains", lambda tasks: [[0]])
    with pytest.raises(RuntimeError, match="stop here"):
        list(pool.PoolExecutor(2, threads=1).run([object()], None, None))
    assert seen == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert os.environ["OMP_NUM_THREADS"] == "7" and "OPENBLAS_NUM_THREADS" not in os.environ


def test_run_applies_and_records_the_thread_policy(tmp_path):
    """`harness run --workers 2` trains with cores/2 threads per worker, also when the caller's
    environment asks for more; `--threads` overrides for the in-process executor. Both land in
    the runs table (provenance) and on every cell."""
    from harness.runner.threads import available_cores

    spec = _spec(tmp_path, seeds=(0, 1))
    pooled, serial = tmp_path / "pooled", tmp_path / "serial"
    env = _env(OMP_NUM_THREADS="5", MKL_NUM_THREADS="5")
    args = ("run", str(spec), "--device", "cpu", "--no-report")
    result = subprocess.run(
        _harness(*args, "--out", str(pooled), "--workers", "2"),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    expected = max(1, available_cores() // 2)
    assert _rows(pooled / "results.duckdb", "SELECT threads, workers FROM runs") == [(expected, 2)]
    assert _rows(pooled / "results.duckdb", "SELECT DISTINCT threads FROM cells") == [(expected,)]
    assert f"threads 2 training process(es) x {expected} thread(s)" in result.stderr
    # Logs (no terminal) get each finished cell once and no progress bars or "0/?" rows.
    assert "━" not in result.stderr and "0/?" not in result.stderr
    assert sorted(
        line.split(": ")[1].split(" (")[0]
        for line in result.stderr.splitlines()
        if line.startswith("cell ") and " done: " in line
    ) == ["syn/bprmf/seed 0", "syn/bprmf/seed 1", "syn/pop/seed 0", "syn/pop/seed 1"]

    result = subprocess.run(
        _harness(*args, "--out", str(serial), "--threads", "1"),
        capture_output=True,
        text=True,
        env=_env(OMP_NUM_THREADS="5"),
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert _rows(serial / "results.duckdb", "SELECT threads, workers FROM runs") == [(1, 1)]
    assert _rows(serial / "results.duckdb", "SELECT DISTINCT threads FROM cells") == [(1,)]
    device = _rows(serial / "results.duckdb", "SELECT device FROM runs")[0][0]
    assert device.endswith("x1 threads")


# -- damaged stores ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> tuple[Path, bytes]:
    root = tmp_path_factory.mktemp("good")
    spec = _spec(root)
    result = _cli("run", str(spec), "--out", str(root / "out"), "--only", "pop", "--threads", "1")
    assert result.exit_code == 0, result.output
    return spec, (root / "out" / "results.duckdb").read_bytes()


BAD_STORES = {
    "empty": lambda good: b"",
    "not_duckdb": lambda good: b"user_id,item_id\n1,2\n" * 50,
    "truncated": lambda good: good[: len(good) // 2],
    "truncated_header": lambda good: good[:5000],
}


@pytest.mark.parametrize("command", ["run", "report", "plan", "sql"])
@pytest.mark.parametrize("damage", sorted(BAD_STORES))
def test_a_damaged_store_is_one_line_and_exit_3(tmp_path, good_store, damage, command):
    spec, good = good_store
    out = tmp_path / "out"
    out.mkdir()
    db = out / "results.duckdb"
    content = BAD_STORES[damage](good)
    db.write_bytes(content)
    args = {
        "run": ["run", str(spec), "--out", str(out), "--threads", "1"],
        "report": ["report", str(spec), "--out", str(out)],
        "plan": ["plan", str(spec), "--out", str(out)],
        "sql": ["sql", "SELECT * FROM leaderboard", "--out", str(out)],
    }[command]
    result = _cli(*args)
    assert result.exit_code == 3, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1, result.output
    assert str(db) in lines[0] and "move it aside" in lines[0] and "--out" in lines[0]
    assert "Traceback" not in result.output
    assert db.read_bytes() == content  # nothing written into it
    assert not (out / "results.duckdb.lock").exists()
    assert not (out / "report").exists()


# -- one writer per store ---------------------------------------------------------------------


def _start_run(spec: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        _harness("run", str(spec), "--out", str(out), "--device", "cpu", "--no-report", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )


def _wait_for_commit(proc: subprocess.Popen) -> str:
    for line in proc.stdout:
        if line.startswith("cell done"):
            return line
    raise AssertionError(f"no cell committed: {proc.stderr.read()}")


def test_a_second_run_on_a_busy_store_refuses_naming_the_writer(tmp_path):
    spec = _spec(tmp_path, seeds=(0, 1, 2), epochs=3000)  # long cells: the writer stays busy
    out = tmp_path / "out"
    first = _start_run(spec, out, "--threads", "1", "--only", "pop", "--only", "bprmf")
    try:
        _wait_for_commit(first)  # MostPop cells commit at once; BPRMF trains on
        holder = json.loads((out / "results.duckdb.lock").read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        second = subprocess.run(
            _harness("run", str(spec), "--out", str(out), "--threads", "1", "--no-report"),
            capture_output=True,
            text=True,
            env=_env(),
            cwd=REPO,
            timeout=120,
        )
        assert first.poll() is None, "the first run ended before the second started"
        assert second.returncode == 3, second.stderr
        lines = _error_lines(second.stderr)
        assert len(lines) == 1, second.stderr
        assert f"pid {first.pid}" in lines[0] and socket.gethostname() in lines[0]
        assert f"since {holder['started']}" in lines[0] and "--out" in lines[0]
        assert "cell" not in second.stdout  # it trained nothing
    finally:
        first.send_signal(signal.SIGTERM)  # stops at once, like Ctrl-C
        rest = first.communicate(timeout=120)
    assert first.returncode == 130, rest[1]
    db = out / "results.duckdb"
    runs = _rows(db, "SELECT run_id, status FROM runs")
    assert len(runs) == 1 and runs[0][1] == "interrupted"  # the second never registered
    assert _rows(db, "SELECT DISTINCT run_id FROM cells") == [(runs[0][0],)]
    assert not (out / "results.duckdb.lock").exists()


def test_a_killed_run_is_recorded_interrupted_and_its_lock_does_not_block(tmp_path):
    spec = _spec(tmp_path, seeds=(0, 1, 2), epochs=40)
    out = tmp_path / "out"
    db = out / "results.duckdb"
    victim = _start_run(spec, out, "--threads", "1")
    _wait_for_commit(victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert json.loads((out / "results.duckdb.lock").read_text())["pid"] == victim.pid
    assert _rows(db, "SELECT status, finished_at FROM runs") == [("running", None)]

    again = subprocess.run(
        _harness("run", str(spec), "--out", str(out), "--threads", "1", "--no-report"),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    assert "recorded as interrupted" in again.stderr
    runs = _rows(db, "SELECT status, finished_at IS NOT NULL, cells_done FROM runs ORDER BY 1")
    assert runs[0] == ("finished", True, runs[0][2])
    assert runs[1][:2] == ("interrupted", True) and runs[1][2] >= 1
    assert _rows(db, "SELECT count(*) FROM cells WHERE status = 'done'") == [(6,)]


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    from harness.store.lock import WriterLock, lock_path

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = tmp_path / "results.duckdb"
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}
    lock_path(store).write_text(json.dumps(stale))
    with WriterLock(store, "r2") as lock:
        assert lock.took_over["pid"] == dead.pid
        assert json.loads(lock_path(store).read_text())["pid"] == os.getpid()
    assert not lock_path(store).exists()


def test_the_writer_lock_is_exclusive_until_released(tmp_path):
    from harness.store.lock import StoreBusy, WriterLock

    store = tmp_path / "results.duckdb"
    busy = rf"pid {os.getpid()} on host .* since .*run a"
    with WriterLock(store, "a"), pytest.raises(StoreBusy, match=busy):
        WriterLock(store, "b").acquire()
    with WriterLock(store, "c"):  # free again
        pass


# -- harness sql sandbox ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sql_store(tmp_path_factory, good_store) -> Path:
    out = tmp_path_factory.mktemp("sql") / "out"
    out.mkdir()
    (out / "results.duckdb").write_bytes(good_store[1])
    return out


ESCAPES = {
    "copy_to": "COPY (SELECT 1 AS x) TO '{tmp}/copied.csv'",
    "copy_table": "COPY cells TO '{tmp}/cells.parquet' (FORMAT parquet)",
    "export": "EXPORT DATABASE '{tmp}/exported'",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "attach": "ATTACH '{tmp}/other.duckdb' AS other",
    "unlock": "SET lock_configuration = false",
    "reenable": "SET enable_external_access = true",
    "url": "SELECT * FROM 'https://example.com/data.csv'",
    "write": "DELETE FROM cells",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_sql_is_a_sandbox(sql_store, tmp_path, name):
    query = ESCAPES[name].format(tmp=tmp_path)
    before = (sql_store / "results.duckdb").read_bytes()
    result = _cli("sql", query, "--out", str(sql_store))
    assert result.exit_code == 2, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1 and lines[0].startswith("sql error"), result.output
    assert "root:" not in result.output  # nothing of /etc/passwd came back
    assert list(tmp_path.iterdir()) == []  # no file written
    assert (sql_store / "results.duckdb").read_bytes() == before


def test_sql_views_work_inside_the_sandbox(sql_store):
    result = _cli(
        "sql",
        "SELECT method, count(*) AS n FROM per_user GROUP BY 1",
        "--out",
        str(sql_store),
        "--format",
        "csv",
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == ["method,n", result.output.splitlines()[1]]
    assert result.output.splitlines()[1].startswith("pop,")
    setting = _cli(
        "sql",
        "SELECT current_setting('enable_external_access') AS a, "
        "current_setting('lock_configuration') AS b",
        "--out",
        str(sql_store),
        "--format",
        "csv",
    )
    assert setting.output.splitlines()[1].lower() == "false,true"


# -- structure --------------------------------------------------------------------------------


def test_nothing_in_harness_imports_reports():
    """Only the CLI (the top layer) may use reports/; the runner, store and the rest may not."""
    offenders = []
    for path in (REPO / "harness").rglob("*.py"):
        if path == REPO / "harness" / "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "reports"]
    assert offenders == [], offenders


def test_run_writes_the_report_through_the_cli(tmp_path):
    out = tmp_path / "out"
    result = _cli("run", str(_spec(tmp_path)), "--out", str(out), "--only", "pop", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert (out / "report" / "index.html").exists()
    assert f"report {out / 'report' / 'index.html'}" in result.output
    skipped = tmp_path / "skipped"
    result = _cli(
        "run", str(_spec(tmp_path)), "--out", str(skipped), "--only", "pop", "--no-report"
    )
    assert result.exit_code == 0 and not (skipped / "report").exists()


def test_a_report_that_fails_makes_run_exit_non_zero(tmp_path, monkeypatch):
    import reports.leaderboard

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(reports.leaderboard, "write_report", broken)
    out = tmp_path / "out"
    result = _cli("run", str(_spec(tmp_path)), "--out", str(out), "--only", "pop", "--threads", "1")
    assert result.exit_code == 1, result.output
    assert "report failed" in result.output and "disk full" in result.output
    assert _rows(out / "results.duckdb", "SELECT count(*) FROM cells") == [(1,)]


# -- first impressions --------------------------------------------------------------------------

LADDER = """
[methods.pge]
kind = "pge"
[methods.pge.params]
embedding_size = 8
batch_size = 256
patience = 2
pge_max_epochs = 3

[methods.uclr]
kind = "uclr"
[methods.uclr.params]
embedding_size = 8
batch_size = 256
patience = 2
pge_max_epochs = 3
ae_hidden = 8
ae_latent = 4
ae_max_epochs = 2
ae_max_steps = 1
ae_eval_every_epochs = 1
ae_eval_every_steps = 1
lora_rank = 2
lora_max_epochs = 2
"""


def test_methods_prints_no_pydantic_undefined():
    result = _cli("methods")
    assert result.exit_code == 0, result.output
    assert "PydanticUndefined" not in result.output
    line = next(x for x in result.output.splitlines() if "pge_backbone_params" in x)
    assert "= {}" in line


def test_plan_says_no_estimate_yet_instead_of_zero_hours(tmp_path):
    result = _cli("plan", str(_spec(tmp_path)), "--out", str(tmp_path / "nowhere"))
    assert result.exit_code == 0, result.output
    assert "no estimate yet" in result.output and "0.00 h" not in result.output


def test_reused_stages_count_in_the_full_cost_and_epochs_are_shown_per_domain(tmp_path):
    """UCLR reuses PGE's stage A from the in-process cache: its own seconds exclude it, the
    full cost (timings.train_s_full, Table 7) adds it back; the plan view spells out epochs and
    best epochs per stage and domain, summing to the cell's epochs."""
    spec = tmp_path / "ladder.toml"
    spec.write_text(SPEC.format(seeds=[0], epochs=3) + LADDER)
    out = tmp_path / "out"
    result = _cli("run", str(spec), "--out", str(out), "--threads", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    db = out / "results.duckdb"
    cost = dict(
        (m, (own, full, reused))
        for m, own, full, reused in _rows(
            db, "SELECT method, train_s, train_s_full, reused_s FROM timings"
        )
    )
    notes = json.loads(_rows(db, "SELECT notes FROM cells WHERE kind = 'uclr'")[0][0])
    assert notes["pge"]["from_cache"] is True
    own, full, reused = cost["uclr"]
    assert reused == pytest.approx(notes["pge"]["seconds"]) and reused > 0
    assert full == pytest.approx(own + reused)
    assert cost["pge"][1] == pytest.approx(cost["pge"][0]) and cost["pge"][2] == 0
    html = (out / "report" / "dataset-syn.html").read_text()
    assert "Training s (full cost)" in html and "Training s (own)" in html

    rows = _rows(db, "SELECT method, epochs, epochs_by_stage FROM plan WHERE method = 'bprmf'")
    _method, epochs, detail = rows[0]
    parts = detail.split("; ")
    assert [p.split(" ")[0] for p in parts] == [
        "bprmf/books",
        "bprmf/movies",
        "bprmf/electronics",
    ]
    assert sum(int(p.split(" ")[1]) for p in parts) == epochs
    assert all("(best " in p for p in parts)
