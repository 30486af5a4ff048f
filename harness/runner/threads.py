"""Thread policy: how many intra-op threads each training process gets.

``harness run`` decides once per process: the cores this process may use (its CPU affinity,
not the machine's core count) less the cores other processes are keeping busy at that moment,
divided by the number of worker processes, at least one; ``--threads`` overrides it (for the
in-process executor too), and an ``OMP_NUM_THREADS`` already set lower by the caller is kept
(a shared machine's limit is never raised). The number used is recorded per run and per cell,
so ``harness verify`` retrains with the same one.

The number is applied to every thread pool a cell can use: torch's intra-op pool and the
OpenMP / MKL / OpenBLAS pools behind it and behind numpy. The environment variables are set
before torch is imported where this process still can, and always before pool workers are
spawned, so each worker's runtimes start with the right size instead of one thread per core
(spawned workers import torch while they unpickle their initializer, before any initializer
code runs).

Why it matters: OpenMP threads spin-wait for work. On a 2-core machine with a busy neighbour,
a BPRMF epoch took 17.8 s with torch's default 2 threads and 1.3 s with one; two workers with
two threads each would put four spinning threads on two cores. ``workers x threads`` never
exceeds the cores unless ``--threads`` says so. Busy cores are subtracted for the same reason:
measured on the Amazon-shaped preset with one CPU-bound neighbour on two cores, two threads
made a NeuMF epoch 7.6x slower than on the quiet machine (83.7 s against 10.9 s), one thread
1.2x (13.2 s). Passive OpenMP waiting (``OMP_WAIT_POLICY=PASSIVE``) cured the loaded case
(21.2 s) but cost 1.6x on the quiet machine (17.6 s), a shorter spin (``GOMP_SPINCOUNT``) both;
so the policy sizes the pools instead of changing how they wait.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "THREAD_VARS",
    "ThreadPolicy",
    "apply_threads",
    "available_cores",
    "busy_cores",
    "thread_policy",
]

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def available_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. under taskset or a container)."""
    cpus = _affinity()
    return max(1, len(cpus) if cpus is not None else (os.cpu_count() or 1))


BUSY_WINDOW_S = 0.3


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``cpus`` (all when None) from /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + values[4]
        busy += sum(values) - idle
        total += sum(values)
    return (busy, total) if total else None


def busy_cores(window_s: float = BUSY_WINDOW_S) -> float:
    """Cores' worth of CPU time other processes use right now on this process's cores.

    Sampled from /proc/stat over ``window_s`` while this process sleeps, so all of it is
    someone else's. 0.0 where /proc/stat cannot be read (not Linux)."""
    cpus = _affinity()
    before = _cpu_times(cpus)
    if before is None:
        return 0.0
    time.sleep(window_s)
    after = _cpu_times(cpus)
    if after is None or after[1] <= before[1]:
        return 0.0
    share = (after[0] - before[0]) / (after[1] - before[1])
    return share * (len(cpus) if cpus is not None else (os.cpu_count() or 1))


@dataclass(frozen=True)
class ThreadPolicy:
    threads: int  # intra-op threads of every process that trains (each worker, or this one)
    workers: int
    cores: int
    # "--threads" | "cores/workers" | "free cores/workers" (some were busy) |
    # "OMP_NUM_THREADS" (a lower limit set by the caller)
    source: str
    busy: float = 0.0  # cores other processes kept busy when the policy was decided

    def describe(self) -> str:
        if self.source == "free cores/workers":
            return f"{self.source}: {self.cores} cores, {self.busy:.1f} busy"
        return self.source


def thread_policy(
    workers: int = 1, threads: int | None = None, busy: float | None = None
) -> ThreadPolicy:
    """``busy``: cores other processes are using (None: sample them now with
    :func:`busy_cores`, only when this process would otherwise take more than one thread)."""
    cores = available_cores()
    if threads is not None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        return ThreadPolicy(threads, workers, cores, "--threads")
    workers = max(workers, 1)
    share = max(1, cores // workers)
    asked = _env_threads()
    if asked is not None and asked < share:  # the caller already limited the pools
        return ThreadPolicy(asked, workers, cores, "OMP_NUM_THREADS")
    if share == 1:
        return ThreadPolicy(1, workers, cores, "cores/workers")
    if busy is None:
        busy = busy_cores()
    free = cores - int(busy + 0.5)  # a core counts as taken when more than half used
    fair = max(1, free // workers)
    if fair < share:
        return ThreadPolicy(fair, workers, cores, "free cores/workers", round(busy, 2))
    return ThreadPolicy(share, workers, cores, "cores/workers", round(busy, 2))


def _env_threads() -> int | None:
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value >= 1 else None


def set_thread_env(threads: int) -> None:
    """The variables OpenMP, MKL and OpenBLAS read when they start (this process and children)."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)


def apply_threads(threads: int) -> None:
    """Size this process's pools. Call once, before any training; safe to call before or after
    torch is imported (before is better: OpenMP reads its variable when it starts)."""
    set_thread_env(threads)
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
