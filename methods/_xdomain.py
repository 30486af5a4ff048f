"""Small helpers shared by the CAT-ART and Recsys-DAN baselines (and only them).

Both train embedding tables through autograd next to ordinary ``nn.Module`` layers, need every
random stream (initialisation, dropout) drawn from a seeded generator so that CPU runs are
reproducible, and (DAN) represent users by the mean embedding of their training items.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from methods.training import RowwiseAdam

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
        else:
            self.weight = nn.Parameter(weight.detach().clone())
            self.opt = torch.optim.Adam([self.weight], lr=lr, betas=betas)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def gather_unique(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows [U, m] carrying gradients, inverse) with ``rows[inverse] == weight[index]``."""
        unique, inverse = torch.unique(index, return_inverse=True)
        if not self.lazy:
            return self.weight[unique], inverse
        leaf = self.weight[unique].requires_grad_()
        self._pending.append((unique, leaf))
        return leaf, inverse

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
        self._pending.clear()
        if not parts:
            return
        rows = torch.cat([r for r, _ in parts])
        grads = torch.cat([g for _, g in parts])
        unique, inverse = torch.unique(rows, return_inverse=True)
        summed = grads.new_zeros(len(unique), grads.shape[1]).index_add_(0, inverse, grads)
        self.opt.step(unique, summed)

    def discard(self) -> None:
        """Forget gathered rows without updating (a forward pass that is not followed by a step)."""
        self._pending.clear()
        if not self.lazy:
            self.opt.zero_grad(set_to_none=True)

    def state(self) -> torch.Tensor:
        return self.weight.detach()

    def load(self, value: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(value)


class UserHistory:
    """Each user's training items as CSR rows (``crow``, ``cols``).

    A batch's mean item embedding is one sparse [B, U] x [U, m] product over the unique rows the
    batch touches, so the gradient reaches only those rows and no Python loop visits a user.
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
        """Mean embedding [B, m] of each user's history (zeros for an empty history)."""
        rows, cols, weights = self.segments(users, exclude)
        dim = table.weight.shape[1] if isinstance(table, EmbeddingTable) else table.shape[1]
        if len(cols) == 0:
            return torch.zeros(len(users), dim, device=users.device)
        if isinstance(table, EmbeddingTable):
            unique_rows, inverse = table.gather_unique(cols)
        else:
            unique, inverse = torch.unique(cols, return_inverse=True)
            unique_rows = table[unique]
        pattern = torch.sparse_coo_tensor(
            torch.stack([rows, inverse]),
            weights.to(unique_rows.dtype),
            (len(users), unique_rows.shape[0]),
            device=users.device,
            check_invariants=False,
        )
        return torch.sparse.mm(pattern, unique_rows)
