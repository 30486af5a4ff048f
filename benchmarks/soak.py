"""Soak test (not in CI): kill -9 a run at random moments, rerun, compare with an uninterrupted run.

    python benchmarks/soak.py [--spec specs/quickstart.toml] [--kills 20] [--seed 0]
                              [--workers 1] [--threads 1] [--work DIR] [--reference DIR]
                              [--max-delay S]

1. An uninterrupted ``harness run`` of the spec into ``WORK/reference`` (or ``--reference DIR``,
   an existing store of the same spec) gives the expected per-user rows and a wall time T.
2. ``--kills`` random moments in [0, T] (``--max-delay``): start ``harness run`` into
   ``WORK/soak``, ``kill -9`` it at the first moment, restart it, kill it at the next moment
   (measured from the previous kill), and so on; each start resumes the stored cells (a run
   that finishes first is not killed).
3. A last run completes the matrix. The per-user rows of both stores (every method, seed,
   ranking, domain, user and K: HR, NDCG, MRR, rank, ties) must be identical, no cell may be
   stored twice, and no run may be left ``running``.

Prints one line per kill and a last line with a JSON summary; exits 1 on any difference.
Both runs use the same thread count (``--threads``), since float sums depend on it.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
ROWS = (
    "SELECT method, seed, ranking, domain, user_id, k, hr, ndcg, mrr, rank, ties "
    "FROM per_user_all ORDER BY ALL"
)


def harness(spec: Path, out: Path, workers: int, threads: int) -> list[str]:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out)]
    cmd += ["--no-report", "--device", "cpu", "--threads", str(threads)]
    return cmd + (["--workers", str(workers)] if workers > 1 else [])


def query(store: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "specs" / "quickstart.toml")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="folder for both stores")
    parser.add_argument("--reference", type=Path, default=None, help="existing reference out dir")
    parser.add_argument(
        "--max-delay", type=float, default=None, help="kill delays in [0, this] s (default: T)"
    )
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": REPO}

    reference = args.reference or work / "reference"
    started = time.monotonic()
    if args.reference is None:
        done = subprocess.run(harness(args.spec, reference, args.workers, args.threads), **quiet)
        if done.returncode != 0:
            print(f"reference run failed with exit {done.returncode}", file=sys.stderr)
            return 2
    wall = time.monotonic() - started
    print(f"reference: {reference} ({wall:.1f} s)", flush=True)
    budget = args.max_delay or (wall if args.reference is None else 60.0)

    soak = work / "soak"
    killed = finished_early = 0
    # N random moments of one run's lifetime [0, T]; each restart resumes the stored cells,
    # so the run is killed at moment 1, restarted, killed at moment 2 (measured from the
    # previous kill), ... which spreads the kills over the whole matrix, startup included.
    moments = sorted(rng.uniform(0.0, budget) for _ in range(args.kills))
    delays = [b - a for a, b in zip([0.0, *moments[:-1]], moments, strict=True)]
    for index, delay in enumerate(delays):
        proc = subprocess.Popen(harness(args.spec, soak, args.workers, args.threads), **quiet)
        try:
            proc.wait(timeout=delay)
            finished_early += 1
            outcome = f"finished before the kill (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed += 1
            outcome = "killed"
        stored = 0
        if (soak / "results.duckdb").exists():
            time.sleep(1.5)  # let orphaned pool workers notice (they poll their parent every 1 s)
            stored = query(soak / "results.duckdb", "SELECT count(*) FROM cells")[0][0]
        print(
            f"kill {index + 1}/{args.kills} after {delay:.1f} s (moment {moments[index]:.1f} s): "
            f"{outcome}; {stored} cells stored",
            flush=True,
        )
    final = subprocess.run(harness(args.spec, soak, args.workers, args.threads), **quiet)

    expected = query(reference / "results.duckdb", ROWS)
    got = query(soak / "results.duckdb", ROWS)
    duplicates = query(
        soak / "results.duckdb",
        "SELECT count(*) FROM (SELECT cell_id, ranking, domain, user_idx, k FROM user_metrics "
        "GROUP BY ALL HAVING count(*) > 1)",
    )[0][0]
    statuses = dict(query(soak / "results.duckdb", "SELECT status, count(*) FROM runs GROUP BY 1"))
    missing = len(set(expected) - set(got))
    extra = len(set(got) - set(expected))
    ok = (
        final.returncode == 0
        and expected == got
        and duplicates == 0
        and statuses.get("running", 0) == 0
    )
    summary = {
        "ok": ok,
        "kills_requested": args.kills,
        "killed": killed,
        "finished_before_kill": finished_early,
        "final_exit": final.returncode,
        "per_user_rows": len(got),
        "reference_rows": len(expected),
        "rows_missing": missing,
        "rows_extra_or_different": extra,
        "duplicate_rows": duplicates,
        "runs_by_status": statuses,
        "reference_wall_s": round(wall, 1),
        "work": str(work),
    }
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
