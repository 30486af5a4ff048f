"""Small helpers shared by the CAT-ART and Recsys-DAN baselines (and only them).

Both train embedding tables through autograd next to ordinary ``nn.Module`` layers, need every
random stream (initialisation, dropout) drawn from a seeded generator so that CPU runs are
reproducible, and (DAN) represent users by the mean embedding of their training items.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from methods.training import RowwiseAdam, Workspace

__all__ = ["EmbeddingTable", "UserHistory", "init_module_", "seeded_dropout"]


def init_module_(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """PyTorch's default ``nn.Linear`` initialisation, drawn from ``gen`` instead of the global RNG.

    Module constructors use the global generator; re-drawing here makes a cell depend on its own
    seed only (other layers, e.g. PReLU, have deterministic defaults).
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=gen)
            if sub.bias is not None:
                bound = 1.0 / math.sqrt(sub.in_features) if sub.in_features > 0 else 0.0
                nn.init.uniform_(sub.bias, -bound, bound, generator=gen)
    return module


def seeded_dropout(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Inverted dropout whose mask comes from ``gen`` (``nn.Dropout`` uses the global RNG)."""
    if p <= 0.0:
        return x
    keep = torch.rand(x.shape, generator=gen) >= p
    return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - p)


class EmbeddingTable:
    """A trainable embedding table optimised by Adam, either lazily or densely.

    ``lazy=True`` (default of both methods): a step gathers the unique rows it needs as a small
    autograd leaf and :class:`RowwiseAdam` updates only those rows (``SparseAdam`` semantics, as
    BPRMF in this harness). ``lazy=False``: the table is an ``nn.Parameter`` under dense
    ``torch.optim.Adam``, the reference codes' behaviour, where rows outside the batch keep moving
    on their momentum; several times slower on large item tables.
    """

    def __init__(
        self, weight: torch.Tensor, lr: float, betas: tuple[float, float], lazy: bool = True
    ):
        self.lazy = lazy
        if lazy:
            self.weight = weight.detach().clone()
            self.opt: RowwiseAdam | torch.optim.Adam = RowwiseAdam(self.weight, lr, betas)
            self.workspace = Workspace()
        else:
            self.weight = nn.Parameter(weight.detach().clone())
            self.opt = torch.optim.Adam([self.weight], lr=lr, betas=betas)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_full: list[tuple[torch.Tensor, torch.Tensor]] = []

    def gather_unique(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows [U, m] carrying gradients, inverse) with ``rows[inverse] == weight[index]``."""
        unique, inverse = torch.unique(index, return_inverse=True)
        if not self.lazy:
            return self.weight[unique], inverse
        leaf = self.weight[unique].requires_grad_()
        self._pending.append((unique, leaf))
        return leaf, inverse

    def gather_all(self, touched: torch.Tensor) -> torch.Tensor:
        """The whole table as a gradient-carrying leaf sharing its storage (no copy), for
        products that read most rows anyway; ``touched`` names the rows they read, which are
        the rows the lazy step updates (a row read with a zero gradient still counts)."""
        if not self.lazy:
            return self.weight
        leaf = self.weight.detach().requires_grad_()
        self._pending_full.append((touched, leaf))
        return leaf

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        leaf, inverse = self.gather_unique(index.reshape(-1))
        return leaf[inverse].view(*index.shape, self.weight.shape[1])

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        """Rows without gradient (inference)."""
        return self.weight.detach()[index]

    def step(self) -> None:
        """Apply the gradients gathered since the last step."""
        if not self.lazy:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            return
        parts = [(rows, leaf.grad) for rows, leaf in self._pending if leaf.grad is not None]
        full = [(rows, leaf.grad) for rows, leaf in self._pending_full if leaf.grad is not None]
        self._pending.clear()
        self._pending_full.clear()
        if full:
            self._step_with_full_gradient(full, parts)
            return
        if not parts:
            return
        rows = torch.cat([r for r, _ in parts])
        grads = torch.cat([g for _, g in parts])
        unique, inverse = torch.unique(rows, return_inverse=True)
        summed = grads.new_zeros(len(unique), grads.shape[1]).index_add_(0, inverse, grads)
        self.opt.step(unique, summed)

    def _step_with_full_gradient(
        self,
        full: list[tuple[torch.Tensor, torch.Tensor]],
        parts: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        """Fold every gradient into the first whole-table one (in place) and update the rows
        read in this step: a mask instead of sorting the indices, one gather into scratch."""
        (_, total), *rest = full
        touched = torch.zeros(len(self.weight), dtype=torch.bool, device=self.weight.device)
        for rows, _grad in full:
            touched[rows] = True
        for _, grad in rest:
            total.add_(grad)
        for rows, grad in parts:
            touched[rows] = True
            total.index_add_(0, rows, grad)
        rows = torch.nonzero(touched).squeeze(1)
        grad = self.workspace.take("grad", len(rows), total.shape[1], total)
        torch.index_select(total, 0, rows, out=grad)
        self.opt.step(rows, grad)

    def discard(self) -> None:
        """Forget gathered rows without updating (a forward pass that is not followed by a step)."""
        self._pending.clear()
        self._pending_full.clear()
        if not self.lazy:
            self.opt.zero_grad(set_to_none=True)

    def state(self) -> torch.Tensor:
        return self.weight.detach()

    def load(self, value: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(value)


class UserHistory:
    """Each user's training items as CSR rows (``crow``, ``cols``).

    A batch's mean item embedding is one weighted ``embedding_bag`` over these rows (no Python
    loop visits a user); the lazy table step then updates only the rows the histories read.
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_users: int):
        order = torch.argsort(users, stable=True)
        self.cols = items[order]
        counts = torch.bincount(users, minlength=n_users)
        self.counts = counts
        self.crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])

    def to(self, device: torch.device) -> UserHistory:
        self.cols, self.counts, self.crow = (
            self.cols.to(device),
            self.counts.to(device),
            self.crow.to(device),
        )
        return self

    def segments(
        self, users: torch.Tensor, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row in batch, item, weight 1/len) of every history entry of ``users``.

        ``exclude`` [B] removes that item from its row (e.g. the positive being predicted) and
        renormalises; a row left empty yields a zero mean.
        """
        starts, lengths = self.crow[users], self.counts[users]
        total = int(lengths.sum())
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(total, device=users.device) - first[rows] + starts[rows]
        cols = self.cols[positions]
        if exclude is not None:
            keep = cols != exclude[rows]
            rows, cols = rows[keep], cols[keep]
            lengths = torch.bincount(rows, minlength=len(users))
        weights = 1.0 / lengths.clamp(min=1).to(torch.float32)[rows]
        return rows, cols, weights

    def mean(
        self,
        users: torch.Tensor,
        table: EmbeddingTable | torch.Tensor,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean embedding [B, m] of each user's history (zeros for an empty history).

        Without ``exclude`` a user's mean does not depend on the row, so it is computed once per
        distinct user of the batch: batches drawn from interactions repeat the most active
        users, whose histories are the longest (Douban books: 2,048 rows hold about 1M history
        entries, their ~700 distinct users 0.16M). The weighted sum is one ``embedding_bag``
        over the whole table, whose backward accumulates per item without per-entry
        temporaries; long histories touch most items, so gathering the unique rows first (and
        sorting a million indices to find them) cost more than the product itself.
        """
        if exclude is None:
            distinct, inverse = torch.unique(users, return_inverse=True)
            if len(distinct) < len(users):
                return self._mean(distinct, table, None)[inverse]
        return self._mean(users, table, exclude)

    def _mean(
        self,
        users: torch.Tensor,
        table: EmbeddingTable | torch.Tensor,
        exclude: torch.Tensor | None,
    ) -> torch.Tensor:
        rows, cols, weights = self.segments(users, exclude)
        weight = table.weight if isinstance(table, EmbeddingTable) else table
        if len(cols) == 0:
            return torch.zeros(len(users), weight.shape[1], device=users.device)
        if isinstance(table, EmbeddingTable):
            weight = table.gather_all(cols)
        lengths = torch.bincount(rows, minlength=len(users))
        offsets = torch.cumsum(lengths, 0) - lengths
        return F.embedding_bag(
            cols, weight, offsets, mode="sum", per_sample_weights=weights.to(weight.dtype)
        )
