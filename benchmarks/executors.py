"""Wall time of one matrix under each executor, and the overhead Ray adds per cell.

Each executor runs the same cells into its own fresh store; ``ray`` runs on a two-node Ray
cluster on this machine (two ``ray start --block`` processes, ``--ray-cpus`` CPUs each, started
and stopped by this script) unless ``--ray-address`` names a running one.

    python benchmarks/executors.py                                  # quickstart, 3 executors
    python benchmarks/executors.py --spec specs/douban.toml --seeds 0 1 2 \\
        --only pge --only pge_ae --only pge_cl_ae --only pge_ucl_ae --only uclr   # UCLR ladder

Per executor: ``wall_s`` (run_spec, data preparation included), ``executor_s`` (from the
executor's start to its last result: Ray's connect and teardown included), ``cell_s`` (sum
of the cells' train + inference seconds) and ``overhead_per_cell_s`` = (executor_s x slots -
cell_s) / cells, the time a cell slot spends on anything but training and evaluating (1 slot
in process, 2 for the pool and the two-node cluster; idle slots at the end count too). For
Ray also ``ray_put_s`` (putting each dataset into the object store), ``ray_start_s_mean``
(a chain's submission to its task running on a worker: scheduling, worker start, fetching the
data) and ``ray_return_s_mean`` (a cell's yield on the worker to its arrival at the driver).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402

from harness.runner.executor import InProcessExecutor  # noqa: E402
from harness.runner.pool import PoolExecutor  # noqa: E402
from harness.runner.runner import run_spec  # noqa: E402
from harness.spec.load import load_spec  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    ray_bin = Path(sys.executable).parent / "ray"
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--block", "--disable-usage-stats", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        time.sleep(0.5)
    return proc


@contextlib.contextmanager
def two_nodes(cpus: int):
    """A head and a second node (separate raylets) on this machine; stops only those."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port = _free_port()
    temp = f"/tmp/ray_b{port}"
    logs = Path(tempfile.mkdtemp())
    nodes = []
    try:
        head = ["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", temp]
        for role, log in ((head, "head.log"), (["--address", f"127.0.0.1:{port}"], "w.log")):
            agent = ["--dashboard-agent-listen-port", str(_free_port())]
            nodes.append(_start([*role, "--num-cpus", str(cpus), *agent], logs / log))
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(nodes):
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(nodes):
            proc.wait(timeout=120)
        subprocess.run(["rm", "-rf", temp], check=False)


class Timed:
    """Wraps an executor: seconds from its start to its last result."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def run(self, tasks, on_start, on_epoch):
        started = time.perf_counter()
        yield from self.inner.run(tasks, on_start, on_epoch)
        self.seconds = time.perf_counter() - started


def measure(name: str, executor, slots: int, args, out: Path) -> dict:
    timed = Timed(executor)
    started = time.perf_counter()
    summary = run_spec(
        load_spec(args.spec),
        out,
        device="cpu",
        executor=timed,
        make_report=False,
        only_methods=args.only,
        only_seeds=args.seeds,
    )
    wall = time.perf_counter() - started
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    cell_s, cells = con.execute(
        "SELECT sum(train_s + infer_s), count(*) FROM cells WHERE status = 'done'"
    ).fetchone()
    con.close()
    row = {
        "executor": name,
        "cells": cells,
        "failed": summary.failed,
        "wall_s": round(wall, 2),
        "executor_s": round(timed.seconds, 2),
        "cell_s": round(cell_s or 0.0, 2),
        "slots": slots,
        "overhead_per_cell_s": round((timed.seconds * slots - (cell_s or 0.0)) / max(cells, 1), 3),
    }
    if hasattr(executor, "timings"):  # Ray: where the overhead goes
        starts = [t["start_s"] for t in executor.timings if t["start_s"] is not None]
        returns = [t["return_s"] for t in executor.timings]
        row["ray_put_s"] = {k: round(v, 4) for k, v in executor.put_s.items()}
        row["ray_start_s_mean"] = round(sum(starts) / max(len(starts), 1), 3)
        row["ray_return_s_mean"] = round(sum(returns) / max(len(returns), 1), 4)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=REPO / "specs" / "quickstart.toml")
    parser.add_argument("--only", action="append", default=None)
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--executors", nargs="*", default=["inprocess", "pool", "ray"])
    parser.add_argument(
        "--ray-address", default=None, help="a running cluster (default: two nodes)"
    )
    parser.add_argument("--ray-cpus", type=int, default=1, help="CPUs of each local node")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.executors:
            out = Path(tmp) / name
            if name == "inprocess":
                rows.append(measure(name, InProcessExecutor(), 1, args, out))
            elif name == "pool":
                rows.append(measure(name, PoolExecutor(2, 1), 2, args, out))
            elif name == "ray":
                from harness.runner.ray_executor import RayExecutor

                with (
                    contextlib.nullcontext(args.ray_address)
                    if args.ray_address
                    else two_nodes(args.ray_cpus)
                ) as address:
                    rows.append(
                        measure(name, RayExecutor(address=address), 2 * args.ray_cpus, args, out)
                    )
    print(json.dumps({"spec": str(args.spec), "results": rows}))


if __name__ == "__main__":
    main()
