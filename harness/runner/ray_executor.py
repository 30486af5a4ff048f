"""Run cells on a Ray cluster (``harness run --executor ray --address local|auto|HOST:PORT``).

The unit of work is the pool's *chain* (:func:`harness.runner.pool.chains`): UCLR's ladder on one
dataset and seed runs in plan order inside one Ray task, so it still shares stages through the
worker's in-process cache; every other cell is a chain of one. A chain is a Ray *generator*
task: each cell's result is yielded as soon as it is evaluated and comes back to the driver,
which commits it in one transaction (only the driver writes the store; the workers never see
it). The prepared data of a dataset (interactions, split, candidate lists) is put into the
object store once and every task of that dataset gets the reference.

Each task asks for ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs (fractions allowed: 0.5
puts two cells on one GPU), sets torch's threads from the CPUs it got, and picks its device on
the worker: ``auto`` means the GPU Ray assigned to the task, else the CPU. Each stored cell
records where it ran in ``cells.notes`` (``executor``, ``node`` = Ray node id, ``node_ip``,
``attempt``) beside ``cells.device``.

Progress: workers push ``start`` / ``epoch`` events to a small actor that the driver polls, so
the same ``on_start`` / ``on_epoch`` hooks (rich display, heartbeat lines) run on the driver.

Faults: a chain whose worker or node dies is handed out again with its unfinished cells, at
most ``max_retries`` times, then those cells are returned as failed with the reason (the rest
of the run goes on). Ctrl-C cancels the running tasks; what was committed stays. ``DRAIN``
hands out no new chain, and running chains stop before their next cell.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from harness.errors import HarnessError
from harness.runner.cells import CellTask
from harness.runner.executor import DRAIN, EpochHook, StartHook, stop_if_interrupted
from harness.runner.pool import chains
from harness.runner.work import CellResult, run_cell

__all__ = ["INSTALL_HINT", "RayExecutor", "RayMissing", "RayUnavailable", "import_ray"]

INSTALL_HINT = (
    '--executor ray needs Ray, an optional extra: pip install -e ".[ray]" '
    "(or pip install 'ray>=2.9') in the environment that runs harness, on every node"
)
POLL_S = 0.2
CAPACITY_EVERY_S = 5.0


class RayMissing(HarnessError):
    """Ray is not importable."""


class RayUnavailable(HarnessError):
    """Ray could not be started or the cluster could not be joined."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL_HINT) from None
    return ray


class _Events:
    """A tiny actor: workers push progress events, the driver takes them in batches. It also
    carries the drain request to the running chains."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.drain = False

    def push(self, item: tuple) -> None:
        self.items.append(item)

    def take(self) -> list[tuple]:
        items, self.items = self.items, []
        return items

    def set_drain(self) -> None:
        self.drain = True

    def draining(self) -> bool:
        return self.drain


def _worker_device(requested: str) -> str:
    """``auto``: the GPU Ray assigned to this task (it is ``cuda:0`` behind Ray's
    CUDA_VISIBLE_DEVICES), else the CPU. ``cuda`` without an assigned GPU uses whatever torch
    sees, and fails the cell clearly when it sees none."""
    import ray
    import torch

    from harness.runner.work import resolve_device

    if requested == "auto":
        return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return str(resolve_device(requested))


def _chain(prepared, cells: list[tuple[int, CellTask]], events, settings: dict[str, Any]):
    """Ray generator task: run a chain's cells in order, yield each result when it is ready."""
    import ray
    import torch

    entered = time.time()  # for the overhead figures (submission -> start, yield -> driver)
    threads = settings["threads"]
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    # Arrays read from the object store are read-only views; methods get private copies.
    prepared = copy.deepcopy(prepared)
    context = ray.get_runtime_context()
    where = {
        "executor": "ray",
        "node": context.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "attempt": settings["attempt"],
    }
    try:
        device = _worker_device(settings["device"])
    except Exception as exc:  # every cell of the chain fails with the reason
        device, device_error = "cpu", f"{type(exc).__name__}: {exc}"
    else:
        device_error = None
    for index, slim in cells:
        if ray.get(events.draining.remote()):
            yield ("skipped", index, None, {})
            continue
        events.push.remote(("start", index, {**where, "pid": os.getpid(), "device": device}))
        task = dataclasses.replace(slim, prepared=prepared, device=device)
        if device_error:
            result = CellResult(task=task, status="failed", error=device_error, device=device)
        else:
            result = run_cell(
                task, on_epoch=lambda entry, i=index: events.push.remote(("epoch", i, entry))
            )
        result.notes = {**(result.notes or {}), **where}
        clock = {"entered": entered, "done": time.time()}
        yield ("result", index, dataclasses.replace(result, task=None), clock)


class RayExecutor:
    """Cells as Ray tasks. ``address``: ``local`` starts a private Ray instance on this
    machine; ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` joins a running cluster (an already
    initialised Ray in this process is used as is)."""

    def __init__(
        self,
        address: str = "local",
        cpus_per_cell: float = 1.0,
        gpus_per_cell: float = 0.0,
        max_retries: int = 2,
        device: str | None = None,
    ):
        if cpus_per_cell <= 0:
            raise ValueError("cpus_per_cell must be > 0")
        if gpus_per_cell < 0 or max_retries < 0:
            raise ValueError("gpus_per_cell and max_retries must be >= 0")
        self.address = address
        self.cpus_per_cell = cpus_per_cell
        self.gpus_per_cell = gpus_per_cell
        self.max_retries = max_retries
        self.device = device
        self.threads = max(1, math.floor(cpus_per_cell))
        # cell_id -> where its latest attempt started (node, node_ip, pid, device, attempt)
        self.placements: dict[str, dict[str, Any]] = {}
        # overhead figures: seconds of each ray.put of a dataset, and per returned cell the
        # seconds from its chain's submission to the task starting on a worker (first cell
        # of a chain only: scheduling, worker start, fetching the data) and from its yield on
        # the worker to its arrival at the driver (benchmarks/executors.py reports them)
        self.put_s: dict[str, float] = {}
        self.timings: list[dict[str, Any]] = []
        self._submitted: dict[int, float] = {}
        self._shown: set[int] = set()  # cells returned to the driver

    # -- cluster -------------------------------------------------------------------------
    def _connect(self, ray) -> bool:
        """Initialise Ray unless it already is; True when this call did (and must shut down)."""
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if self.address == "local":  # a new private instance, never a running cluster
            options["include_dashboard"] = False
        main = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
        saved = {s: signal.getsignal(s) for s in signals} if main else {}
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailable(
                f"cannot start or join Ray at --address {self.address!r}: {exc}. Start a "
                f"cluster with `ray start --head` (and `ray start --address HEAD:PORT` on "
                f"other nodes), or use --address local"
            ) from None
        # Ray's driver installs its own SIGTERM handling (an abort with a stack dump); keep the
        # CLI's, which stops the run like Ctrl-C: the run is recorded as interrupted, exit 130
        # (and its SIGUSR1 drain).
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)
        return True

    def _capacity(self, ray) -> int:
        """Chains that can run at once on the cluster's resources (at least one)."""
        total = ray.cluster_resources()
        slots = total.get("CPU", 0.0) / self.cpus_per_cell
        if self.gpus_per_cell > 0:
            slots = min(slots, total.get("GPU", 0.0) / self.gpus_per_cell)
        return max(1, math.floor(slots + 1e-9))

    # -- the Executor protocol -------------------------------------------------------------
    def run(
        self, tasks: Iterable[CellTask], on_start: StartHook, on_epoch: EpochHook
    ) -> Iterator[CellResult]:
        tasks = list(tasks)
        if not tasks:
            return
        ray = import_ray()
        started_ray = self._connect(ray)
        running: dict[Any, tuple[list[int], int]] = {}  # generator -> (chain, attempt)
        finished = False
        try:
            here = ray.get_runtime_context().get_node_id()
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            events = (
                ray.remote(_Events)
                .options(
                    num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True),
                )
                .remote()
            )
            remote_chain = ray.remote(_chain).options(
                num_cpus=self.cpus_per_cell,
                num_gpus=self.gpus_per_cell,
                max_retries=0,  # retried here, with only the cells that did not come back
                retry_exceptions=False,
            )
            refs: dict[str, Any] = {}  # dataset -> its PreparedData in the object store
            for task in tasks:
                if task.dataset not in refs:
                    put_started = time.perf_counter()
                    refs[task.dataset] = ray.put(task.prepared)
                    self.put_s[task.dataset] = time.perf_counter() - put_started
            slim = [dataclasses.replace(t, prepared=None) for t in tasks]
            waiting: list[tuple[list[int], int]] = [(chain, 0) for chain in chains(tasks)]
            returned: set[int] = set()
            drain_sent = False
            capacity, capacity_at = self._capacity(ray), time.monotonic()
            while True:
                stop_if_interrupted()
                if DRAIN.is_set() and not drain_sent:
                    ray.get(events.set_drain.remote())
                    drain_sent = True
                if time.monotonic() - capacity_at > CAPACITY_EVERY_S:
                    capacity, capacity_at = self._capacity(ray), time.monotonic()
                while waiting and not DRAIN.is_set() and len(running) < capacity:
                    chain, attempt = waiting.pop(0)
                    settings = {
                        "threads": self.threads,
                        "device": self.device or tasks[chain[0]].device,
                        "attempt": attempt,
                    }
                    generator = remote_chain.remote(
                        refs[tasks[chain[0]].dataset],
                        [(i, slim[i]) for i in chain],
                        events,
                        settings,
                    )
                    running[generator] = (chain, attempt)
                    self._submitted[chain[0]] = time.time()
                if not running and (not waiting or DRAIN.is_set()):
                    break
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                self._forward(ray.get(events.take.remote()), tasks, on_start, on_epoch)
                for generator in ready:
                    yield from self._advance(
                        ray, generator, running, waiting, returned, tasks, on_start
                    )
            finished = True
        finally:
            if not finished:  # interrupted (Ctrl-C, SIGTERM) or failed: stop the training
                for generator in running:
                    with contextlib.suppress(Exception):  # already finished or gone
                        ray.cancel(generator, force=True)
            if started_ray:
                ray.shutdown()

    def _forward(
        self, items: list[tuple], tasks: list[CellTask], on_start: StartHook, on_epoch: EpochHook
    ) -> None:
        for kind, index, payload in items:
            if index in self._shown:  # late news of a cell already returned: nothing to show
                continue
            if kind == "start":
                self.placements[tasks[index].cell_id] = payload
                on_start(tasks[index])
            else:
                on_epoch(tasks[index], payload)

    def _advance(
        self,
        ray,
        generator,
        running: dict[Any, tuple[list[int], int]],
        waiting: list[tuple[list[int], int]],
        returned: set[int],
        tasks: list[CellTask],
        on_start: StartHook,
    ) -> Iterator[CellResult]:
        """Take the generator's next item: a result, a skipped cell, its end or its failure."""
        chain, attempt = running[generator]
        try:
            ref = next(generator)
        except StopIteration:
            del running[generator]
            return
        try:
            kind, index, payload, clock = ray.get(ref)
        except (ray.exceptions.RayTaskError, ray.exceptions.TaskCancelledError) as exc:
            # our own code raised outside run_cell (which captures a cell's errors): no retry
            del running[generator]
            yield from self._fail(chain, returned, tasks, f"ray task failed: {exc}")
            return
        except ray.exceptions.RayError as exc:  # the worker or its node died
            del running[generator]
            rest = [i for i in chain if i not in returned]
            if not rest:  # it died after its last cell came back: nothing is lost
                return
            if attempt < self.max_retries:
                waiting.insert(0, (rest, attempt + 1))
                return
            reason = (
                f"Ray worker died while running this cell ({type(exc).__name__}), "
                f"{attempt + 1} attempt(s), retries exhausted (--max-retries "
                f"{self.max_retries}): {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            yield from self._fail(rest, returned, tasks, reason)
            return
        returned.add(index)
        self._shown.add(index)
        if kind == "result":
            if tasks[index].cell_id not in self.placements:  # its start event is on its way
                on_start(tasks[index])
            submitted = self._submitted.get(index)
            self.timings.append(
                {
                    "cell_id": tasks[index].cell_id,
                    "start_s": clock["entered"] - submitted if submitted else None,
                    "return_s": time.time() - clock["done"],
                }
            )
            yield dataclasses.replace(payload, task=tasks[index])
        # "skipped": drained before it started; it stays pending in the store

    @staticmethod
    def _fail(
        chain: list[int], returned: set[int], tasks: list[CellTask], reason: str
    ) -> Iterator[CellResult]:
        for index in chain:
            if index not in returned:
                returned.add(index)
                yield CellResult(task=tasks[index], status="failed", error=reason)
