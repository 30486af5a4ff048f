"""Runner, store and report end to end: per-user rows, resume after kill -9, reuse of cells."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.runner.runner import run_spec
from harness.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]

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
patience = 3

[methods.pop]
kind = "popularity"
"""


def _spec(tmp_path: Path, seeds=(0, 1), epochs: int = 15) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(seeds=list(seeds), epochs=epochs))
    return path


def _scalar(db: Path, sql: str):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()[0][0]
    finally:
        con.close()


def test_run_stores_per_user_rows_and_reuses_finished_cells(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", str(_spec(tmp_path)), "--out", str(out), "--device", "cpu", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "done 4 ran, 0 reused, 0 failed" in result.output
    db = out / "results.duckdb"
    cases = _scalar(db, "SELECT sum(n_test_cases) FROM candidate_sets")
    # every test case gets one row per K, method and seed; nothing else
    assert _scalar(db, "SELECT count(*) FROM per_user") == cases * 2 * 2 * 2
    assert _scalar(db, "SELECT count(*) FROM per_user_full") == cases * 2 * 2 * 2
    assert _scalar(db, "SELECT count(DISTINCT user_id) FROM per_user") == 300
    assert _scalar(db, "SELECT min(hr) >= 0 AND max(hr) <= 1 FROM per_user")
    # learned model beats chance (HR@10 = 0.1 for a random ranking of 100 candidates)
    hr = _scalar(
        db,
        "SELECT avg(hr_mean) FROM leaderboard WHERE method = 'bprmf' AND k = 10 "
        "AND ranking = 'sampled'",
    )
    assert hr > 0.2
    assert _scalar(db, "SELECT count(*) FROM training_curves WHERE name = 'valid_ndcg'") > 0
    # every epoch's wall time is kept: BPRMF trains one model per domain
    timed = "SELECT count(*) FROM epoch_timings WHERE method = 'bprmf' AND train_s_per_epoch > 0"
    assert _scalar(db, timed) == 3
    assert "bprmf" in (out / "report" / "index.html").read_text()

    second = run_spec(load_spec(_spec(tmp_path)), out, device="cpu")
    assert (second.done, second.skipped) == (0, 4)
    # a changed parameter is a new cell; the others are reused
    changed = _spec(tmp_path, epochs=16)
    third = run_spec(load_spec(changed), out, device="cpu")
    assert (third.done, third.skipped) == (2, 2)
    assert _scalar(db, "SELECT count(*) FROM plan") == 4


def test_failing_cell_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    from methods.popularity import Popularity

    def boom(self, data, ctx):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(Popularity, "fit", boom)
    out = tmp_path / "out"
    summary = run_spec(load_spec(_spec(tmp_path, seeds=(0,))), out, device="cpu")
    assert (summary.done, summary.failed) == (1, 1)
    error = _scalar(out / "results.duckdb", "SELECT error FROM plan WHERE method = 'pop'")
    assert error.startswith("RuntimeError: planted failure")


def test_resume_after_kill_9_leaves_no_duplicates(tmp_path):
    spec = _spec(tmp_path, seeds=(0, 1, 2, 3, 4, 5), epochs=8)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(spec),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-report",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO
    )
    committed = 0
    for line in proc.stdout:
        if line.startswith("cell done"):
            committed += 1
            if committed == 2:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    db = out / "results.duckdb"
    done_before = _scalar(db, "SELECT count(*) FROM cells WHERE status = 'done'")
    assert 2 <= done_before < 12

    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{12 - done_before} to run" in result.stderr
    assert _scalar(db, "SELECT count(*) FROM cells WHERE status = 'done'") == 12
    duplicates = _scalar(
        db,
        "SELECT count(*) FROM (SELECT cell_id, ranking, domain, user_idx, k "
        "FROM user_metrics GROUP BY ALL HAVING count(*) > 1)",
    )
    assert duplicates == 0
    assert _scalar(db, "SELECT count(*) FROM runs WHERE status = 'finished'") == 1


def test_sql_command_is_read_only_and_formats(tmp_path):
    out = tmp_path / "out"
    run_spec(load_spec(_spec(tmp_path, seeds=(0,))), out, device="cpu")
    db = str(out / "results.duckdb")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "sql",
            "SELECT method, count(*) AS n FROM per_user GROUP BY 1 ORDER BY 1",
            "--store",
            db,
            "--format",
            "csv",
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "method,n"
    res = runner.invoke(app, ["sql", "DELETE FROM cells", "--store", db])
    assert res.exit_code == 2 and "read-only" in res.output.lower()


@pytest.mark.slow
def test_quickstart_spec_end_to_end(tmp_path):
    out = tmp_path / "qs"
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(REPO / "specs" / "quickstart.toml"),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    db = out / "results.duckdb"
    assert _scalar(db, "SELECT count(*) FROM plan WHERE status = 'done'") == 15
    # Every personalised method beats popularity on every domain (NDCG@10, mean over seeds).
    losers = _scalar(
        db,
        "SELECT count(*) FROM leaderboard l JOIN leaderboard p USING (domain, k, ranking) "
        "WHERE p.method = 'mostpop' AND l.method <> 'mostpop' AND k = 10 "
        "AND ranking = 'sampled' AND l.ndcg_mean <= p.ndcg_mean",
    )
    assert losers == 0
    html = (out / "report" / "index.html").read_text()
    assert "Metric@10" in html and "Metric@20" in html and "MostPop" in html and "UCLR" in html
    assert "<script src" not in html and "http" not in html.split("<body>")[1].split("<pre>")[0]


def test_worker_pool_matches_in_process_results(tmp_path):
    """Cells run in 2 spawned workers give the same per-user rows and curves as in-process."""
    from harness.runner.pool import PoolExecutor

    serial, pooled = tmp_path / "serial", tmp_path / "pooled"
    spec = _spec(tmp_path, seeds=(0, 1), epochs=4)
    run_spec(load_spec(spec), serial, device="cpu")
    started, epochs = [], []

    class Watched(PoolExecutor):
        def run(self, tasks, on_start, on_epoch):
            yield from super().run(
                tasks,
                lambda t: (started.append(t.cell_id), on_start(t)),
                lambda t, e: (epochs.append(t.cell_id), on_epoch(t, e)),
            )

    summary = run_spec(load_spec(spec), pooled, device="cpu", executor=Watched(2, 1))
    assert (summary.done, summary.failed) == (4, 0)
    assert len(set(started)) == 4 and epochs  # events crossed the process boundary
    query = (
        "SELECT method, seed, domain, user_idx, k, hr, ndcg, mrr, rank FROM per_user ORDER BY ALL"
    )
    rows = {}
    for name, out in (("serial", serial), ("pooled", pooled)):
        con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
        rows[name] = con.execute(query).fetchall()
        rows[name + "_curves"] = con.execute("SELECT count(*) FROM training_curves").fetchall()
        con.close()
    assert rows["serial"] and rows["serial"] == rows["pooled"]
    assert rows["serial_curves"] == rows["pooled_curves"]


def test_ladder_cells_of_one_seed_share_a_worker_chain():
    from types import SimpleNamespace

    from harness.runner.pool import chains

    cells = [
        SimpleNamespace(kind=kind, dataset="d", seed=seed)
        for kind in ("bprmf", "pge", "pge_ae", "uclr")
        for seed in (0, 1)
    ]
    assert chains(cells) == [[0], [1], [2, 4, 6], [3, 5, 7]]


def test_only_and_seed_restrict_the_run_and_the_rest_stays_pending(tmp_path):
    from harness.spec.load import SpecError

    out = tmp_path / "out"
    spec = _spec(tmp_path, seeds=(0, 1), epochs=3)
    first = run_spec(load_spec(spec), out, device="cpu", only_methods=["pop"], only_seeds=[1])
    assert (first.done, first.planned) == (1, 4)
    done = _scalar(
        out / "results.duckdb",
        "SELECT string_agg(method || ':' || seed, ',') FROM plan WHERE status = 'done'",
    )
    assert done == "pop:1"
    with pytest.raises(SpecError, match=r"seed\(s\) \[7\]"):
        run_spec(load_spec(spec), out, device="cpu", only_seeds=[7])
    with pytest.raises(SpecError, match="undeclared method"):
        run_spec(load_spec(spec), out, device="cpu", only_methods=["nope"])
    rest = run_spec(load_spec(spec), out, device="cpu")
    assert (rest.done, rest.skipped) == (3, 1)


def test_read_only_connection_gets_current_views_of_an_older_store(tmp_path):
    from harness.store.store import Store, connect_read_only

    path = tmp_path / "old.duckdb"
    with Store(path) as store:  # a store whose writer predates the epoch_timings view
        store.con.execute("DROP VIEW epoch_timings")
    con = connect_read_only(path)
    try:
        assert con.execute("SELECT count(*) FROM epoch_timings").fetchone() == (0,)
    finally:
        con.close()
    raw = duckdb.connect(str(path), read_only=True)
    try:  # and the file itself was not changed
        with pytest.raises(duckdb.CatalogException):
            raw.execute("SELECT * FROM epoch_timings")
    finally:
        raw.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_drain_finishes_the_running_cell_and_leaves_the_rest_pending(tmp_path, workers):
    """SIGUSR1 (DRAIN): the cell that started is stored, no other starts, the run resumes."""
    from harness.runner.executor import DRAIN, InProcessExecutor
    from harness.runner.pool import PoolExecutor

    base = InProcessExecutor() if workers == 1 else PoolExecutor(1, 1)

    class DrainAfterFirstStart:
        def run(self, tasks, on_start, on_epoch):
            def start(task):
                DRAIN.set()
                on_start(task)

            yield from base.run(tasks, start, on_epoch)

    out = tmp_path / "out"
    spec = _spec(tmp_path, seeds=(0, 1), epochs=3)
    summary = run_spec(load_spec(spec), out, device="cpu", executor=DrainAfterFirstStart())
    assert (summary.done, summary.failed) == (1, 0)
    db = out / "results.duckdb"
    assert _scalar(db, "SELECT count(*) FROM plan WHERE status = 'pending'") == 3
    assert _scalar(db, "SELECT status FROM runs ORDER BY started_at DESC LIMIT 1") == "drained"
    rest = run_spec(load_spec(spec), out, device="cpu")
    assert (rest.done, rest.skipped) == (3, 1)


def test_store_is_readable_between_commits_of_a_running_run(tmp_path):
    """The driver releases DuckDB between commits, so another process (`harness sql`) can read
    while cells train; a reader holding the file only delays the next commit."""
    from harness.runner.executor import InProcessExecutor

    out = tmp_path / "out"
    db = out / "results.duckdb"
    reader = (
        "import sys, time, duckdb\n"
        "con = duckdb.connect(sys.argv[1], read_only=True)\n"
        "print(con.execute('SELECT count(*) FROM cells').fetchone()[0], flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
    )
    seen = []

    class ReadWhileRunning:
        def run(self, tasks, on_start, on_epoch):
            for i, result in enumerate(InProcessExecutor().run(tasks, on_start, on_epoch)):
                hold = "1.0" if i == 0 else "0"  # the first reader outlives the next commit
                proc = subprocess.Popen(
                    [sys.executable, "-c", reader, str(db), hold],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                line = proc.stdout.readline()
                assert line, proc.stderr.read()  # it could open the store mid-run
                seen.append(int(line))
                yield result
                proc.wait(timeout=30)

    summary = run_spec(
        load_spec(_spec(tmp_path, seeds=(0,), epochs=2)),
        out,
        device="cpu",
        executor=ReadWhileRunning(),
    )
    assert (summary.done, summary.failed) == (2, 0)
    assert seen == [0, 1]  # each reader saw the commits made before it
    assert _scalar(db, "SELECT count(*) FROM plan WHERE status = 'done'") == 2


def test_a_drained_worker_skips_the_rest_of_its_chain(monkeypatch):
    import queue
    import threading

    from harness.runner import pool

    events, drain = queue.Queue(), threading.Event()
    drain.set()
    monkeypatch.setattr(pool, "_EVENTS", events)
    monkeypatch.setattr(pool, "_DRAIN", drain)
    pool._work([(3, object()), (4, object())])  # never run: the tasks are not even looked at
    assert [events.get_nowait() for _ in range(2)] == [("skipped", 3, None), ("skipped", 4, None)]


def test_plan_estimates_pending_cells_from_finished_cells_of_the_same_method(tmp_path):
    from harness.runner.runner import plan_status

    out = tmp_path / "out"
    spec = _spec(tmp_path, seeds=(0, 1, 2), epochs=3)
    run_spec(
        load_spec(spec),
        out,
        device="cpu",
        only_methods=["bprmf"],
        only_seeds=[0, 1],
    )
    frame = plan_status(load_spec(spec), out / "results.duckdb", device="cpu")
    rows = {(r["method"], r["seed"]): r for r in frame.iter_rows(named=True)}
    spent = sorted(rows[("bprmf", s)]["seconds"] for s in (0, 1))
    assert all(s > 0 for s in spent)
    pending = rows[("bprmf", 2)]
    assert pending["status"] == "pending"
    assert pending["estimate_s"] == pytest.approx(sum(spent) / 2)  # median of two
    assert pending["estimate_from"] == "same params"
    assert rows[("bprmf", 0)]["estimate_s"] is None
    # No finished popularity cell: no estimate rather than a guess.
    assert rows[("pop", 0)]["estimate_s"] is None and rows[("pop", 0)]["seconds"] is None
    result = CliRunner().invoke(app, ["plan", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "estimated compute for 1 of 4 unfinished cells" in result.output


def test_logs_without_a_terminal_get_an_epoch_line_at_least_every_minute(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    import harness.runner.runner as runner_module

    spec = _spec(tmp_path, seeds=(0,), epochs=3)
    sink = io.StringIO()
    monkeypatch.setattr(runner_module, "LOG_EVERY_SECONDS", 0.0)  # every epoch "ends a minute"
    run_spec(
        load_spec(spec),
        tmp_path / "out",
        device="cpu",
        only_methods=["bprmf"],
        console=Console(file=sink, force_terminal=False, width=200),
    )
    printed = sink.getvalue().splitlines()
    lines = [line for line in printed if line.startswith("bprmf/seed 0 bprmf") and "━" not in line]
    # 3 domains x 3 epochs (patience 3 never fires within 3 epochs), none held back.
    assert len(lines) == 9, sink.getvalue()


def test_a_run_waits_for_a_reader_holding_the_store_instead_of_failing(tmp_path):
    """`harness run` opening a store that `harness sql` (or another run's commit) holds for a
    moment waits for it; with no wait the same open fails with StoreLocked."""
    from harness.store.store import Store, StoreLocked

    out = tmp_path / "out"
    spec = _spec(tmp_path, seeds=(0,), epochs=2)
    run_spec(load_spec(spec), out, device="cpu", only_methods=["pop"])
    db = out / "results.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, duckdb\n"
            "con = duckdb.connect(sys.argv[1], read_only=True)\n"
            "print('open', flush=True)\n"
            "time.sleep(2.0)\n",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "open"
    with pytest.raises(StoreLocked, match="in use by another process"):
        Store(db)
    summary = run_spec(load_spec(spec), out, device="cpu")
    holder.wait(timeout=30)
    assert (summary.done, summary.failed) == (1, 0)
