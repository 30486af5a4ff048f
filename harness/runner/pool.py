"""Run cells side by side in worker processes (``harness run --workers N``).

Cells are independent and each is seeded from its own seed, so running them in parallel
changes nothing but wall time (tested: identical per-user metrics). On a CPU box, N workers
with cores/N threads each beat one process with all cores, because most of a cell's time is
spent in small kernels that do not scale across threads.

Workers are *spawned* (not forked: forking a process that already ran OpenMP kernels is not
safe). The unit of work is a *chain*: the cells of methods sharing a ``stage_group`` on the
same dataset and seed (UCLR's ablation ladder) run in order on one worker, so they still reuse
each other's stages from that worker's in-process cache; every other cell is a chain of one.
Each finished cell comes back at once through a queue, without its task (the parent has it),
together with the epoch events for the progress display; only the parent writes the store. A
worker that dies (killed, out of memory) fails the cells it had not returned with a clear
message; rerunning the spec resumes them.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from harness.runner.cells import CellTask
from harness.runner.executor import DRAIN, EpochHook, StartHook, stop_if_interrupted
from harness.runner.threads import THREAD_VARS, apply_threads, set_thread_env, thread_policy
from harness.runner.work import CellResult, run_cell
from methods.registry import get_method

__all__ = ["PoolExecutor", "chains", "default_threads"]

_EVENTS: queue.Queue | None = None  # set in each worker by _init_worker
_DRAIN = None  # the parent's drain request, an mp.Event shared with the workers
POLL_S = 0.2
DIED = (
    "worker process died while running this cell (killed or out of memory?); rerun the "
    "spec to retry it, with fewer --workers if memory is short"
)


def default_threads(workers: int) -> int:
    """Cores per worker when not given: this process's cores split evenly, at least one."""
    return thread_policy(workers).threads


def chains(tasks: list[CellTask]) -> list[list[int]]:
    """Task indices grouped into chains, in plan order (see the module docstring)."""
    groups: dict[tuple, list[int]] = {}
    for index, task in enumerate(tasks):
        group = get_method(task.kind).stage_group
        key = (task.dataset, task.seed, group) if group else ("cell", index)
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _exit_with_parent(parent: int) -> None:
    """Workers must not train on for nobody when the driver is killed (even by kill -9)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(threads: int, events: queue.Queue, drain, parent: int) -> None:
    global _EVENTS, _DRAIN
    # The pool variables came with the environment at spawn (set by the parent before the
    # pool started, see PoolExecutor.run): torch is already imported by now.
    apply_threads(threads)
    _EVENTS, _DRAIN = events, drain
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _work(chain: list[tuple[int, CellTask]]) -> None:
    events = _EVENTS
    assert events is not None, "worker not initialised"
    for index, task in chain:
        if _DRAIN is not None and _DRAIN.is_set():  # drained: the rest of the chain waits
            events.put(("skipped", index, None))
            continue
        events.put(("start", index, None))
        result = run_cell(task, on_epoch=lambda entry, i=index: events.put(("epoch", i, entry)))
        events.put(("result", index, dataclasses.replace(result, task=None)))


class PoolExecutor:
    """``workers`` processes with ``threads`` intra-op threads each (default: cores/workers)."""

    def __init__(self, workers: int, threads: int | None = None):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.threads = threads or default_threads(workers)

    def run(
        self, tasks: Iterable[CellTask], on_start: StartHook, on_epoch: EpochHook
    ) -> Iterator[CellResult]:
        tasks = list(tasks)
        if not tasks:
            return
        ctx = mp.get_context("spawn")
        # Workers inherit the environment when they are spawned, and import torch (whose
        # OpenMP runtime reads OMP_NUM_THREADS once) before any initializer runs.
        saved = {var: os.environ.get(var) for var in THREAD_VARS}
        set_thread_env(self.threads)
        events, drain = ctx.Queue(), ctx.Event()
        groups = chains(tasks)
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(groups)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(self.threads, events, drain, os.getpid()),
        )
        returned: set[int] = set()
        futures: dict[Future, list[int]] = {}
        waiting = list(groups)  # chains not yet handed to a worker (at most `workers` are)
        finished = False
        try:
            while True:
                stop_if_interrupted()
                if DRAIN.is_set():
                    drain.set()
                while (
                    waiting and not DRAIN.is_set() and self._busy(futures, returned) < self.workers
                ):
                    chain = waiting.pop(0)
                    try:
                        futures[pool.submit(_work, [(i, tasks[i]) for i in chain])] = chain
                    except BrokenProcessPool:
                        for i in chain + [i for rest in waiting for i in rest]:
                            returned.add(i)
                            yield CellResult(task=tasks[i], status="failed", error=DIED)
                        waiting.clear()
                if self._busy(futures, returned) == 0 and (not waiting or DRAIN.is_set()):
                    break
                try:
                    kind, index, payload = events.get(timeout=POLL_S)
                except queue.Empty:
                    yield from self._failed_chains(futures, tasks, returned)
                    continue
                if kind == "start":
                    on_start(tasks[index])
                elif kind == "epoch":
                    on_epoch(tasks[index], payload)
                elif kind == "skipped":
                    returned.add(index)  # not run: stays pending in the store
                else:
                    returned.add(index)
                    yield dataclasses.replace(payload, task=tasks[index])
            finished = True
        finally:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=finished, cancel_futures=True)
            if not finished:  # interrupted: do not leave orphans training
                for process in processes:
                    if process.is_alive():
                        process.terminate()
            for var, value in saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value

    @staticmethod
    def _busy(futures: dict[Future, list[int]], returned: set[int]) -> int:
        """Chains handed out whose cells have not all come back."""
        return sum(1 for chain in futures.values() if any(i not in returned for i in chain))

    @staticmethod
    def _failed_chains(
        futures: dict[Future, list[int]], tasks: list[CellTask], returned: set[int]
    ) -> Iterator[CellResult]:
        """Cells of chains whose worker raised or died, once the queue holds nothing of them."""
        for future, chain in futures.items():
            if not future.done() or future.exception() is None:
                continue
            exc = future.exception()
            error = DIED if isinstance(exc, BrokenProcessPool) else repr(exc)
            for index in chain:
                if index not in returned:
                    returned.add(index)
                    yield CellResult(task=tasks[index], status="failed", error=error)
