"""Training utilities shared by every method: negative sampling, lazy Adam, early stopping.

They live here once so that BPRMF, UCLR's global pretraining and the graph baselines train
under identical conventions (methods.md §1.3).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from methods.base import EpochLog, FitSummary
from methods.checkpoint import EpochCheckpoints, Resumable

__all__ = [
    "EarlyStopping",
    "NegativeSampler",
    "RowwiseAdam",
    "Workspace",
    "run_epochs",
    "seeded_generator",
]


def seeded_generator(seed: int, *salt: int) -> torch.Generator:
    """A CPU generator derived from the cell seed, so every random stream is reproducible."""
    gen = torch.Generator()
    value = seed
    for s in salt:
        value = (value * 1_000_003 + s) % (2**63 - 1)
    gen.manual_seed(value)
    return gen


class NegativeSampler:
    """Uniform negatives from ``n_items`` excluding each user's training positives.

    Rejection is vectorised: all draws of a batch are checked at once against sorted
    ``user * n_items + item`` keys, and only the rejected entries are redrawn.
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int):
        self.n_items = n_items
        self.keys = torch.unique(users.cpu() * n_items + items.cpu())  # sorted
        counts = torch.bincount(
            users.cpu(), minlength=int(users.max().item()) + 1 if len(users) else 0
        )
        if len(counts) and int(counts.max()) >= n_items:
            raise ValueError("a user interacted with every item; no negative exists")

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        pos = torch.searchsorted(self.keys, keys).clamp_(max=len(self.keys) - 1)
        return self.keys[pos] == keys

    def sample(
        self,
        users: torch.Tensor,
        generator: torch.Generator,
        items: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One negative per entry of ``users``. ``items`` (the positives) is accepted so that
        samplers whose negatives depend on the positive (UCLR's same-domain A1 switch) share
        this signature; uniform sampling ignores it."""
        users = users.cpu()
        items = torch.randint(self.n_items, (len(users),), generator=generator)
        pending = torch.nonzero(self.is_positive(users, items)).squeeze(1)
        while len(pending):
            redraw = torch.randint(self.n_items, (len(pending),), generator=generator)
            items[pending] = redraw
            pending = pending[self.is_positive(users[pending], redraw)]
        return items


class Workspace:
    """Reusable scratch buffers for hot loops.

    Fresh multi-megabyte tensors every step cost page faults that, on CPU, take longer than the
    arithmetic; handing out views of buffers that only ever grow removes them.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """A [rows, cols] view (uninitialised) with ``like``'s dtype and device."""
        buf = self._buffers.get(name)
        if (
            buf is None
            or buf.numel() < rows * cols
            or buf.device != like.device
            or (buf.dtype != like.dtype)
        ):
            buf = torch.empty(max(rows * cols, 1), dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf[: rows * cols].view(rows, cols)


class RowwiseAdam:
    """Adam updating only the rows touched in a step (the semantics of ``torch.optim.SparseAdam``).

    Moments of untouched rows are not decayed and the bias correction uses the global step,
    exactly as SparseAdam does; this is what makes an epoch over a 100k-row table cost time
    proportional to the batch, not the table.
    """

    def __init__(self, table: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.table = table
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        # First and second moments side by side: one gather and one scatter per step.
        self.moments = torch.zeros(
            table.shape[0], 2 * table.shape[1], dtype=table.dtype, device=table.device
        )
        self.steps = 0
        self.workspace = Workspace()

    def to(self, table: torch.Tensor) -> None:
        self.table = table
        self.moments = self.moments.to(table.device)

    def step(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """Apply one update to ``rows`` (unique indices) with gradient ``grad`` [len(rows), m]."""
        self.steps += 1
        n, dim = grad.shape
        moments = self.workspace.take("moments", n, 2 * dim, self.moments)
        torch.index_select(self.moments, 0, rows, out=moments)
        m, v = moments[:, :dim], moments[:, dim:]
        m.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
        v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        self.moments.index_copy_(0, rows, moments)
        correction2 = math.sqrt(1 - self.beta2**self.steps)
        step_size = self.lr * correction2 / (1 - self.beta1**self.steps)
        update = self.workspace.take("update", n, dim, grad)
        torch.sqrt(v, out=update).add_(self.eps)  # SparseAdam's eps placement, not dense Adam's
        torch.div(m, update, out=update)
        self.table.index_add_(0, rows, update, alpha=-step_size)


@dataclass
class EarlyStopping:
    """Keeps the best checkpoint by a validation metric; stops after ``patience`` evaluations
    without improvement (methods.md §1.3: patience 10, up to 200 epochs)."""

    patience: int = 10
    min_delta: float = 0.0
    best: float = -math.inf
    best_epoch: int = -1
    best_state: dict = field(default_factory=dict)
    _bad: int = 0

    def record(self) -> dict[str, Any]:
        """Everything needed to continue (a checkpoint's part)."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad": self._bad,
        }

    def restore(self, record: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(record["best"]), int(record["best_epoch"])
        self.best_state, self._bad = dict(record["best_state"]), int(record["bad"])

    def update(self, epoch: int, value: float, state: dict[str, torch.Tensor]) -> bool:
        """Record ``value``; return True when training should stop."""
        if math.isnan(value):
            raise FloatingPointError(f"validation metric is NaN at epoch {epoch}")
        if value > self.best + self.min_delta:
            self.best, self.best_epoch, self._bad = value, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().clone() for k, v in state.items()})
            return False
        self._bad += 1
        return self._bad >= self.patience


def run_epochs(
    train_epoch: Callable[[int], dict[str, float]],
    validate: Callable[[], float],
    get_state: Callable[[], dict[str, torch.Tensor]],
    set_state: Callable[[dict[str, torch.Tensor]], None],
    *,
    max_epochs: int,
    patience: int,
    eval_every: int = 1,
    log: Callable[[EpochLog], None] = lambda _entry: None,
    stage: str,
    domain: str | None = None,
    checkpoints: EpochCheckpoints | None = None,
    resume: Resumable | None = None,
) -> FitSummary:
    """The one training loop with validation-based early stopping every method shares.

    ``train_epoch(epoch)`` trains one epoch and returns its losses; ``validate()`` returns the
    selection metric (validation NDCG@K). Each epoch's log carries its wall seconds of training
    (``train_s``) and validation (``valid_s``), so every method's time per epoch and stage is
    in the store (view ``epoch_timings``). The best state is restored before returning, and a
    non-finite loss or metric stops the cell with a clear error instead of a silent collapse.

    With ``checkpoints`` (the cell's, from its :class:`FitContext`) and ``resume`` (the
    method's whole training state), the loop saves itself between epochs and a rerun of the
    cell continues after the last saved epoch (:mod:`methods.checkpoint`).
    """
    stopper = EarlyStopping(patience=patience)
    key = stage + (f"/{domain}" if domain else "")
    store = checkpoints if resume is not None else None  # only a resumable method saves
    history: list[dict[str, Any]] = []  # this stage's epoch logs, as a checkpoint keeps them
    first = 1
    saved = store.load(key) if store is not None else None
    if saved is not None and resume is not None:
        resume.load(saved["method"])
        stopper.restore(saved["stopper"])
        history = list(saved["logs"])
        for entry in history:
            log(EpochLog(stage=stage, epoch=entry["epoch"], values=entry["values"], domain=domain))
        first = int(saved["epoch"]) + 1
    epoch = first - 1
    for epoch in range(first, max_epochs + 1):
        started = time.perf_counter()
        values = dict(train_epoch(epoch))
        values["train_s"] = time.perf_counter() - started
        stop = False
        if epoch % eval_every == 0 or epoch == max_epochs:
            started = time.perf_counter()
            values["valid_ndcg"] = validate()
            values["valid_s"] = time.perf_counter() - started
            stop = stopper.update(epoch, values["valid_ndcg"], get_state())
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            where = f"{stage}" + (f" ({domain})" if domain else "")
            raise FloatingPointError(f"{where}: non-finite {bad} at epoch {epoch}")
        history.append({"epoch": epoch, "values": values})
        going_on = not stop and epoch < max_epochs
        if store is not None and resume is not None and going_on and store.due():
            state = {"method": resume.state(), "stopper": stopper.record(), "logs": history}
            store.save(key, {"epoch": epoch, **state})
        log(EpochLog(stage=stage, epoch=epoch, values=values, domain=domain))
        if stop:
            break
    if stopper.best_state:
        set_state(stopper.best_state)
    return FitSummary(epochs=epoch, best_epoch=stopper.best_epoch, best_valid=stopper.best)
