"""Thread policy: how many intra-op threads each training process gets.

``harness run`` decides once per process: the cores this process may use (its CPU affinity,
not the machine's core count) divided by the number of worker processes, at least one;
``--threads`` overrides it (for the in-process executor too), and an ``OMP_NUM_THREADS``
already set lower by the caller is kept (a shared machine's limit is never raised).

The number is applied to every thread pool a cell can use: torch's intra-op pool and the
OpenMP / MKL / OpenBLAS pools behind it and behind numpy. The environment variables are set
before torch is imported where this process still can, and always before pool workers are
spawned, so each worker's runtimes start with the right size instead of one thread per core
(spawned workers import torch while they unpickle their initializer, before any initializer
code runs).

Why it matters: OpenMP threads spin-wait for work. On a 2-core machine with a busy neighbour,
a BPRMF epoch took 17.8 s with torch's default 2 threads and 1.3 s with one; two workers with
two threads each would put four spinning threads on two cores. ``workers x threads`` never
exceeds the cores unless ``--threads`` says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["THREAD_VARS", "ThreadPolicy", "apply_threads", "available_cores", "thread_policy"]

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. under taskset or a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPolicy:
    threads: int  # intra-op threads of every process that trains (each worker, or this one)
    workers: int
    cores: int
    source: (
        str  # "--threads" | "cores/workers" | "OMP_NUM_THREADS" (a lower limit set by the caller)
    )


def thread_policy(workers: int = 1, threads: int | None = None) -> ThreadPolicy:
    cores = available_cores()
    if threads is not None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        return ThreadPolicy(threads, workers, cores, "--threads")
    share = max(1, cores // max(workers, 1))
    asked = _env_threads()
    if asked is not None and asked < share:  # the caller already limited the pools
        return ThreadPolicy(asked, workers, cores, "OMP_NUM_THREADS")
    return ThreadPolicy(share, workers, cores, "cores/workers")


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
