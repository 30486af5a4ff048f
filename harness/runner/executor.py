"""The executor seam: how cells are run. The driver only consumes finished results.

``InProcessExecutor`` runs cells one after another in this process. A Ray (or process-pool)
executor implements the same ``run`` generator: it ships each self-contained ``CellTask``,
forwards epoch events, and yields ``CellResult`` objects; it never touches the store.

``DRAIN`` asks every executor to start no new cell and to finish the running ones (``harness
run`` sets it on SIGUSR1): on a shared machine a long matrix can be paused without losing the
training in progress, and resumed later.

``INTERRUPT`` records a Ctrl-C / SIGTERM besides the ``KeyboardInterrupt`` it raises: a
library that catches the exception on its way up (a database or cluster client interrupted
in the middle of a call) cannot make the run carry on, because the driver and the executors
check the flag between cells and while they wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from harness.runner.cells import CellTask
from harness.runner.work import CellResult, run_cell
from methods.base import EpochLog

__all__ = ["DRAIN", "INTERRUPT", "Executor", "InProcessExecutor", "stop_if_interrupted"]

DRAIN = threading.Event()
INTERRUPT = threading.Event()


def stop_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested, even if its first one was lost."""
    if INTERRUPT.is_set():
        raise KeyboardInterrupt


StartHook = Callable[[CellTask], None]
EpochHook = Callable[[CellTask, EpochLog], None]


class Executor(Protocol):
    def run(
        self, tasks: Iterable[CellTask], on_start: StartHook, on_epoch: EpochHook
    ) -> Iterator[CellResult]: ...


class InProcessExecutor:
    def run(
        self, tasks: Iterable[CellTask], on_start: StartHook, on_epoch: EpochHook
    ) -> Iterator[CellResult]:
        for task in tasks:
            stop_if_interrupted()
            if DRAIN.is_set():
                return
            on_start(task)
            yield run_cell(task, on_epoch=lambda entry, t=task: on_epoch(t, entry))
