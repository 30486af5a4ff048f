"""Mid-training checkpoints of one cell, so that a killed run resumes at the last saved epoch.

A cell is the unit of resumption of a run: finished cells are kept, the one in progress starts
again. For a cell that trains for hours (GA-MTCDR on Douban: about 30 epochs of 4 minutes)
that loses hours, and a cell longer than the time a machine is held can never finish. Methods
that opt in (``run_epochs(..., resume=...)``) hand the shared training loop everything that
changes during training: parameters, optimiser moments, generator states; the loop adds its
own (epoch, early-stopping record, the epoch logs so far) and writes them here at most every
``every_s`` seconds. A rerun of the same cell (same id, hence the same code version, data and
parameters) loads them and continues with the next epoch; the result is the one an
uninterrupted run gives (tested), and the seconds spent before the checkpoint are counted in
the cell's ``train_s``.

The file is ``<results folder>/checkpoints/<cell id>.pt``, written atomically (a kill while
writing leaves the previous one), read with ``weights_only=True``, and removed when the cell
is done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["EpochCheckpoints", "Resumable", "checkpoint_file", "saved_progress"]


def checkpoint_file(results: Path, cell_id: str) -> Path:
    """Where the cell's checkpoint lives in a results folder (the one place that says so)."""
    return Path(results) / "checkpoints" / f"{cell_id}.pt"


@dataclass(frozen=True)
class Resumable:
    """A method's whole training state between two epochs: ``state()`` returns it (tensors,
    numbers, strings, in dicts and lists), ``load`` puts it back into a freshly built model."""

    state: Callable[[], dict[str, Any]]
    load: Callable[[dict[str, Any]], None]


class EpochCheckpoints:
    def __init__(self, path: Path, every_s: float = 600.0):
        self.path = Path(path)
        self.every_s = every_s
        self.started = time.monotonic()  # this run's fit
        self._last_save = self.started
        self.carried_s = 0.0  # training seconds of earlier runs, up to their checkpoint
        self.resumed: dict[str, int] = {}  # stage key -> epoch this run continued after
        self.discarded: str | None = None  # why an unreadable checkpoint was ignored
        self._stages: dict[str, Any] = {}
        self._loaded = False

    def _read(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if not self.path.exists():
            return
        try:
            content = torch.load(self.path, map_location="cpu", weights_only=True)
            self._stages = dict(content["stages"])
            self.carried_s = float(content["elapsed_s"])
        except Exception as exc:  # a damaged checkpoint costs the time it saved, nothing else
            self.discarded = f"{type(exc).__name__}: {exc}"
            self._stages, self.carried_s = {}, 0.0

    def load(self, key: str) -> dict[str, Any] | None:
        """The saved state of stage ``key`` (None: start it from the beginning)."""
        self._read()
        saved = self._stages.get(key)
        if saved is not None:
            self.resumed[key] = int(saved["epoch"])
        return saved

    def due(self) -> bool:
        return time.monotonic() - self._last_save >= self.every_s

    def elapsed_s(self) -> float:
        """Training seconds of this cell so far, earlier runs included."""
        return self.carried_s + time.monotonic() - self.started

    def save(self, key: str, state: dict[str, Any]) -> None:
        self._read()
        self._stages[key] = state
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        torch.save({"stages": self._stages, "elapsed_s": self.elapsed_s()}, partial)
        os.replace(partial, self.path)
        self._last_save = time.monotonic()

    def clear(self) -> None:
        """The cell is done: its checkpoint is of no further use."""
        self.path.unlink(missing_ok=True)


def saved_progress(path: Path) -> str | None:
    """What a checkpoint file holds, for ``harness plan`` (``"gamtcdr epoch 12"``); None when
    there is no readable one."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        stages = content["stages"]
    except Exception:
        return None
    return ", ".join(f"{key} epoch {int(state['epoch'])}" for key, state in stages.items())
