"""Helpers shared by HeroGraph and GA-MTCDR: CSR neighbourhoods, segment ops, lazy tables.

Both methods look up a few thousand rows of 100k-row tables per step and aggregate variable-
size neighbourhoods. Neighbourhoods are kept as CSR (row pointers + columns) so that sampling,
gathering and aggregation are flat tensor operations over the edges of a batch; tables are
updated lazily (only looked-up rows, ``RowwiseAdam``) so a step costs what the batch touches.
"""

from __future__ import annotations

import math

import torch

from methods.training import RowwiseAdam, Workspace

__all__ = [
    "CSR",
    "LazyTable",
    "gather_segments",
    "segment_mean",
    "segment_softmax",
    "uniform_init_",
    "xavier_normal_",
]


class CSR:
    """Adjacency of ``n`` nodes as row pointers and column indices (duplicate edges removed)."""

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, n: int):
        keys = torch.unique(src.long() * n + dst.long())  # sorted by (src, dst)
        self.n = n
        self.col = keys % n
        counts = torch.bincount(keys // n, minlength=n)
        self.rowptr = torch.zeros(n + 1, dtype=torch.long, device=keys.device)
        self.rowptr[1:] = torch.cumsum(counts, 0)
        self.degree = counts

    @classmethod
    def symmetric(cls, a: torch.Tensor, b: torch.Tensor, n: int) -> CSR:
        """Undirected graph with edges a—b (both directions stored)."""
        return cls(torch.cat([a, b]), torch.cat([b, a]), n)

    def to(self, device: torch.device) -> CSR:
        self.col, self.rowptr, self.degree = (
            self.col.to(device),
            self.rowptr.to(device),
            self.degree.to(device),
        )
        return self

    def neighbours(
        self,
        centers: torch.Tensor,
        max_neighbours: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(segment, neighbour) pairs, one per kept edge, segments indexing ``centers``.

        With ``max_neighbours=None`` every neighbour is returned (exact aggregation). Otherwise a
        node with degree ≤ S keeps all its neighbours and a node with degree > S gets S draws
        uniform over its neighbours (with replacement: CSR pointer + a random offset each,
        one vectorised draw for the whole batch).
        """
        deg = self.degree[centers]
        counts = deg if max_neighbours is None else deg.clamp(max=max_neighbours)
        seg, pos = gather_segments(counts)
        if max_neighbours is not None and len(seg):
            seg_deg = deg[seg]
            over = seg_deg > max_neighbours
            if bool(over.any()):
                draw = torch.rand(len(seg), generator=generator, dtype=torch.float64)
                offset = (draw.to(seg.device) * seg_deg).long().clamp_(max=seg_deg - 1)
                pos = torch.where(over, offset, pos)
        return seg, self.col[self.rowptr[centers][seg] + pos]


def gather_segments(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For segment lengths ``counts``: (segment id, position within segment) of every slot."""
    seg = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    return seg, torch.arange(len(seg), device=counts.device) - starts[seg]


def segment_softmax(logits: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of ``logits`` within each segment (numerically stabilised by the segment max)."""
    peak = torch.full((n,), -math.inf, dtype=logits.dtype, device=logits.device)
    peak = peak.scatter_reduce(0, seg, logits.detach(), reduce="amax", include_self=True)
    weights = torch.exp(logits - peak[seg])
    total = torch.zeros(n, dtype=logits.dtype, device=logits.device).index_add(0, seg, weights)
    return weights / total[seg]


def segment_mean(values: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """Row means per segment; empty segments give zero rows."""
    out = values.new_zeros(n, values.shape[1]).index_add(0, seg, values)
    count = torch.bincount(seg, minlength=n).clamp(min=1).to(values.dtype)
    return out / count.unsqueeze(1)


def xavier_normal_(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    std = (2.0 / (rows.shape[0] + rows.shape[1])) ** 0.5
    return rows.normal_(0.0, std, generator=generator)


def uniform_init_(weight: torch.Tensor, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """PyTorch's default ``nn.Linear`` init, U(±1/√fan_in), drawn from a seeded generator."""
    bound = 1.0 / math.sqrt(fan_in)
    return weight.uniform_(-bound, bound, generator=generator)


class _GradientBuffer:
    """Stands in for a leaf in ``LazyTable``'s pending list: its ``grad`` is filled by hand."""

    def __init__(self, grad: torch.Tensor):
        self.grad = grad


class LazyTable:
    """An embedding table trained by row-wise Adam through autograd.

    ``lookup`` returns differentiable rows (a leaf of the unique rows, expanded); after
    ``backward`` one ``step`` merges the gradients of every lookup since the last step and
    updates only those rows, so a table is stepped once per optimiser step however often it
    was read.
    """

    def __init__(self, weights: torch.Tensor, lr: float):
        self.weights = weights
        self.opt = RowwiseAdam(weights, lr)
        self._pending: list[tuple[torch.Tensor, torch.Tensor | _GradientBuffer]] = []
        self.workspace = Workspace()

    def to(self, device: torch.device) -> LazyTable:
        self.weights = self.weights.to(device)
        self.opt.to(self.weights)
        return self

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        rows, inverse = torch.unique(index.reshape(-1), return_inverse=True)
        leaf = self.weights[rows].requires_grad_()
        self._pending.append((rows, leaf))
        # F.embedding's backward (sort-based) is several times faster on CPU than the
        # index_add of index_select's backward for large random index sets.
        rows_out = torch.nn.functional.embedding(inverse, leaf)
        return rows_out.view(*index.shape, self.weights.shape[1])

    def lookup_buffered(
        self, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(unique rows [R, m], inverse, gradient buffer [R, m]) for callers that compute the
        rows' gradient themselves: they accumulate it into the (zeroed) buffer during
        ``backward`` and ``step`` applies it like a leaf's gradient. Rows and buffer are views of
        scratch memory reused by the next call (no page faults for [R, m] blocks per step)."""
        unique, inverse = torch.unique(index.reshape(-1), return_inverse=True)
        dim = self.weights.shape[1]
        rows = self.workspace.take("rows", len(unique), dim, self.weights)
        torch.index_select(self.weights, 0, unique, out=rows)
        grad = self.workspace.take("grad", len(unique), dim, self.weights).zero_()
        self._pending.append((unique, _GradientBuffer(grad)))
        return rows, inverse.view(index.shape), grad

    def step(self) -> None:
        pending = [(rows, leaf.grad) for rows, leaf in self._pending if leaf.grad is not None]
        self._pending.clear()
        if not pending:
            return
        if len(pending) == 1:
            rows, grads = pending[0]
        else:
            rows = torch.cat([r for r, _ in pending])
            grads = torch.cat([g for _, g in pending])
            rows, inverse = torch.unique(rows, return_inverse=True)
            grads = grads.new_zeros(len(rows), grads.shape[1]).index_add_(0, inverse, grads)
        self.opt.step(rows, grads)

    def discard(self) -> None:
        self._pending.clear()
