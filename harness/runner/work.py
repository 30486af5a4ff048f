"""One cell's work: fit a method on training data, rank the fixed test candidates, return rows.

Pure with respect to the store: it returns a :class:`CellResult` and never writes, so any
executor (in-process now, Ray later) can run it and only the driver touches DuckDB.
"""

from __future__ import annotations

import json
import random
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from harness.errors import HarnessError
from harness.evaluation.evaluator import (
    CandidateValidator,
    DomainResult,
    TensorCandidates,
    rank_candidates,
    rank_full,
    result_table,
)
from harness.provenance import hardware_fingerprint
from harness.runner.cells import CellTask
from harness.search.pruning import PruneMonitor, TrialPruned
from methods.base import EpochLog, FitContext, TrainingData, UserValues
from methods.checkpoint import EpochCheckpoints, checkpoint_file
from methods.registry import get_method

__all__ = ["CellResult", "LeakageError", "matmul_precision", "resolve_device", "run_cell"]


class LeakageError(AssertionError):
    """A held-out interaction reached the training data handed to a method."""


@dataclass
class CellResult:
    task: CellTask
    status: str  # done | failed | pruned (a search trial its pruning rule stopped)
    error: str | None = None
    train_s: float = 0.0
    infer_s: float = 0.0
    epochs: int = 0
    best_epoch: int = 0
    best_valid: float | None = float("nan")  # None for a pruned trial: never selectable
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads the cell trained with (the thread policy)
    hardware: str | None = None  # JSON: harness.provenance.hardware_fingerprint where it ran
    metrics: pl.DataFrame | None = None
    curves: list[EpochLog] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    user_values: list[UserValues] = field(default_factory=list)
    started_at: datetime = field(default_factory=datetime.now)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HarnessError(
            "device 'cuda' requested but torch sees no CUDA device; use --device cpu"
        )
    return torch.device(name)


@contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """torch's float32 matmul precision for one cell, restored afterwards: it is process-wide
    and a worker runs many cells, each with its own setting."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def training_data(task: CellTask, device: torch.device) -> TrainingData:
    """Training interactions of every domain, after proving no held-out pair is among them."""
    data = task.prepared
    users, items = {}, {}
    for name in data.dataset.domain_names:
        part = data.split.domains[name]
        n_items = data.dataset.domains[name].n_items
        train_keys = part.train_users * n_items + part.train_items
        for label, hu, hi in (
            ("test", part.test_users, part.test_items),
            ("validation", part.valid_users, part.valid_items),
        ):
            if np.isin(hu * n_items + hi, train_keys).any():
                raise LeakageError(f"{label} interactions of domain {name!r} are in training data")
        users[name] = torch.as_tensor(part.train_users, device=device)
        items[name] = torch.as_tensor(part.train_items, device=device)
    return TrainingData(
        n_users=data.dataset.n_users,
        domains=data.dataset.domain_names,
        n_items={d: data.dataset.domains[d].n_items for d in data.dataset.domain_names},
        users=users,
        items=items,
    )


def run_cell(task: CellTask, on_epoch: Callable[[EpochLog], None] | None = None) -> CellResult:
    """Fit, evaluate and package one cell; failures are captured, never raised.

    A search trial with a pruning rule (``task.prune``) is watched through its epoch logs and
    stops as status ``pruned``, with its curve and the spot in ``notes["pruned"]``; it is not
    evaluated on test, since it can never be selected. ``notes["cpu_s"]`` is the process CPU
    time the cell took (what a search's cost is reported in)."""
    device = resolve_device(task.device)
    result = CellResult(
        task=task,
        status="failed",
        device=str(device),
        threads=torch.get_num_threads(),
        hardware=json.dumps(hardware_fingerprint(device), sort_keys=True),
    )
    monitor = PruneMonitor(task.prune) if task.prune is not None else None
    cpu_started = time.process_time()
    checkpoints = None
    started = time.perf_counter()
    try:
        seed_everything(task.seed)
        data = task.prepared
        train = training_data(task, device)
        validator = CandidateValidator(
            {d: TensorCandidates.from_numpy(c, device) for d, c in data.candidates.valid.items()},
            k=task.validation_k,
            policy=task.ties,
        )

        def log(entry: EpochLog) -> None:
            result.curves.append(entry)
            if on_epoch is not None:
                on_epoch(entry)
            if monitor is not None:
                monitor.observe(entry)  # may raise TrialPruned out of the method's fit

        cls = get_method(task.kind)
        method = cls(task.params, train.n_users, train.n_items)
        if task.checkpoint_dir is not None:
            path = checkpoint_file(Path(task.checkpoint_dir), task.cell_id)
            checkpoints = EpochCheckpoints(path, task.checkpoint_every_s)
        context = FitContext(
            seed=task.seed, device=device, validate=validator, log=log, checkpoints=checkpoints
        )
        with matmul_precision(task.matmul_precision):
            started = time.perf_counter()
            summary = method.fit(train, context)
            result.train_s = time.perf_counter() - started
            started = time.perf_counter()
            outcomes = evaluate(method, task, device)
            result.infer_s = time.perf_counter() - started
        result.metrics = _metrics_frame(outcomes, task)
        result.epochs, result.best_epoch = summary.epochs, summary.best_epoch
        result.best_valid, result.notes = summary.best_valid, dict(summary.notes)
        if task.matmul_precision != "highest":  # also in the cell id; kept in sight for SQL
            result.notes["matmul_precision"] = task.matmul_precision
        result.user_values = summary.user_values
        if checkpoints is not None:
            _account_for_resumption(checkpoints, result)
        result.status = "done"
    except KeyboardInterrupt:
        raise
    except TrialPruned as pruned:
        result.status, result.best_valid = "pruned", None
        result.train_s = time.perf_counter() - started
        result.epochs = len({(c.stage, c.domain, c.epoch) for c in result.curves})
        result.notes["pruned"] = pruned.record
        if checkpoints is not None:
            _account_for_resumption(checkpoints, result)
    except Exception as exc:  # a failing cell is recorded and the run goes on
        tb = traceback.format_exc(limit=6)
        result.error = f"{type(exc).__name__}: {exc}\n{tb}"
    result.notes["cpu_s"] = time.process_time() - cpu_started
    return result


def _account_for_resumption(checkpoints: EpochCheckpoints, result: CellResult) -> None:
    """A resumed cell's seconds include its earlier runs' (up to their checkpoint); its notes
    say where it continued. The checkpoint itself is no longer needed."""
    if checkpoints.resumed:
        result.train_s += checkpoints.carried_s
        result.notes["resumed_after_epoch"] = dict(checkpoints.resumed)
    if checkpoints.discarded:
        result.notes["checkpoint_discarded"] = checkpoints.discarded
    checkpoints.clear()


def evaluate(method, task: CellTask, device: torch.device) -> list[DomainResult]:
    data = task.prepared
    out = []
    for domain in task.domains:
        cands = TensorCandidates.from_numpy(data.candidates.test[domain], device)
        g, t = rank_candidates(method.score, domain, cands)
        out.append(
            DomainResult(
                domain, "sampled", data.candidates.test[domain].users, g.numpy(), t.numpy()
            )
        )
        if task.full_ranking:
            part = data.split.domains[domain]
            exclude_users = np.concatenate([part.train_users, part.valid_users])
            exclude_items = np.concatenate([part.train_items, part.valid_items])
            g, t = rank_full(
                method.score_all,
                domain,
                cands.users,
                cands.items[:, 0],
                torch.as_tensor(exclude_users, device=device),
                torch.as_tensor(exclude_items, device=device),
                data.dataset.domains[domain].n_items,
            )
            out.append(
                DomainResult(
                    domain, "full", data.candidates.test[domain].users, g.numpy(), t.numpy()
                )
            )
    return out


def _metrics_frame(outcomes: list[DomainResult], task: CellTask) -> pl.DataFrame:
    cols = result_table(outcomes, task.ks, task.ties)  # type: ignore[arg-type]
    frame = pl.DataFrame({k: v for k, v in cols.items()})
    counts = task.prepared.train_counts
    users = cols["user_idx"]
    per_domain = np.zeros(len(users), dtype=np.int64)
    for domain, c in counts.items():
        mask = cols["domain"] == domain
        per_domain[mask] = c[users[mask]]
    total = task.prepared.total_train_counts[users] if len(users) else np.zeros(0, np.int64)
    return frame.with_columns(
        pl.Series("n_train_domain", per_domain),
        pl.Series("n_train_total", total),
        pl.col("user_idx").cast(pl.Int32),
        pl.col("k").cast(pl.Int32),
        pl.col("ties").cast(pl.Int32),
    )
