"""ItemKNN: item-based collaborative filtering with a top-k cosine neighbourhood, per domain.

Sarwar, Karypis, Konstan, Riedl, "Item-based collaborative filtering recommendation
algorithms", WWW 2001; in the variant of Dacrema, Cremonesi, Jannach, "Are we really making
much progress? A worrying analysis of recent neural recommendation approaches", RecSys 2019
(their ``ItemKNNCFRecommender``: cosine with shrinkage, top-k neighbours per item). That study
found such well-tuned neighbourhood models beating most neural recommenders it could
reproduce, which is why a leaderboard of neural cross-domain methods needs one.

For a binary user-item matrix X of one domain (training interactions only):

* ``sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrinkage)`` (columns x_i of X; ``normalize=False``
  keeps the raw co-occurrence count), ``sim(j, j) = 0``;
* each target item j keeps its ``k`` most similar items N(j) (ties: lower item index first, so
  the result is the same on every device);
* ``score(u, j) = sum over i in N(j) of X[u, i] sim(i, j)``, i.e. X @ W with
  ``W[i, j] = sim(i, j)`` for i in N(j).

Seed-free: fitting draws no random number, so every seed gives the same cell (the harness still
trains one cell per seed of the spec). Users with no training interaction in a domain score 0
for every item (a tie the evaluator's tie rule resolves).

Cost: everything stays sparse. The similarity is built one block of target items at a time, a
sparse product of their columns with X (work and memory proportional to co-occurring pairs, not
to items squared), and each block keeps only its top-k entries; blocks hold about
``block_entries`` entries however many items a domain has. Scoring multiplies a block of users'
rows of X with the sparse W.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from methods.base import FitContext, FitSummary, Method, MethodParams, TrainingData

__all__ = ["ItemKNN", "ItemKNNParams", "interaction_matrix", "item_neighbourhood"]


class ItemKNNParams(MethodParams):
    k: int = Field(100, ge=1, description="neighbours kept per item (most similar first)")
    shrinkage: float = Field(
        10.0,
        ge=0,
        description="added to the cosine denominator: damps similarities resting on few "
        "co-occurrences",
    )
    normalize: bool = Field(
        True,
        description="cosine similarity; false: raw co-occurrence counts (shrinkage unused)",
    )


def interaction_matrix(
    rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int
) -> torch.Tensor:
    """Binary sparse CSR matrix [n_rows, n_cols] with a 1 at each (row, col) pair; duplicate
    pairs count once."""
    keys = torch.unique(rows.long() * n_cols + cols.long())  # sorted: row-major order
    row_of = keys // n_cols
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=keys.device)
    crow[1:] = torch.cumsum(torch.bincount(row_of, minlength=n_rows), 0)
    values = torch.ones(len(keys), dtype=torch.float32, device=keys.device)
    return torch.sparse_csr_tensor(
        crow, keys % n_cols, values, size=(n_rows, n_cols), check_invariants=False
    )


def _row_block(matrix: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a CSR matrix, as a CSR matrix (no copy of other rows)."""
    crow = matrix.crow_indices()
    lo, hi = int(crow[start]), int(crow[stop])
    return torch.sparse_csr_tensor(
        crow[start : stop + 1] - lo,
        matrix.col_indices()[lo:hi],
        matrix.values()[lo:hi],
        size=(stop - start, matrix.shape[1]),
        check_invariants=False,
    )


def _rows(matrix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The given rows (any order, repeats allowed) of a CSR matrix, as a CSR matrix."""
    crow, cols = matrix.crow_indices(), matrix.col_indices()
    starts = crow[rows]
    lengths = crow[rows + 1] - starts
    new_crow = torch.zeros(len(rows) + 1, dtype=torch.long, device=rows.device)
    new_crow[1:] = torch.cumsum(lengths, 0)
    total = int(new_crow[-1])
    offsets = torch.arange(total, device=rows.device) - torch.repeat_interleave(
        new_crow[:-1], lengths
    )
    positions = torch.repeat_interleave(starts, lengths) + offsets
    return torch.sparse_csr_tensor(
        new_crow,
        cols[positions],
        matrix.values()[positions],
        size=(len(rows), matrix.shape[1]),
        check_invariants=False,
    )


def _blocks(
    cost: torch.Tensor, budget: int, max_length: int | None = None
) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges whose summed ``cost`` stays within ``budget`` and whose
    length within ``max_length`` (a range holds at least one element). One vectorised search
    per block, not a loop over elements."""
    total = torch.cumsum(cost.to(torch.float64), 0)
    ranges, start, spent = [], 0, 0.0
    while start < len(cost):
        stop = int(torch.searchsorted(total, spent + budget, right=True))
        stop = max(stop, start + 1)
        if max_length is not None:
            stop = min(stop, start + max_length)
        ranges.append((start, stop))
        spent, start = float(total[stop - 1]), stop
    return ranges


def _entries(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, columns, values) of a CSR matrix, grouped by row (columns in storage order)."""
    rows = torch.repeat_interleave(
        torch.arange(matrix.shape[0], device=matrix.values().device),
        torch.diff(matrix.crow_indices()),
    )
    return rows, matrix.col_indices(), matrix.values()


def _row_major(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, columns, values) of a CSR matrix sorted by row, then column (a sparse product's
    CSR output leaves columns unsorted, and its COO form claims to be sorted regardless)."""
    rows, cols, values = _entries(matrix)
    order = torch.argsort(rows * matrix.shape[1] + cols)
    return rows[order], cols[order], values[order]


_VALUE_BITS = 31  # a positive float32's bit pattern, read as an integer, orders like the value


def _column_bits(n_cols: int) -> int:
    return max(1, (n_cols - 1).bit_length())


def _most_similar(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n_cols: int, k: int
) -> torch.Tensor:
    """Mask of each row's ``k`` largest (positive) values; among equal values the lower column
    wins (topk would leave that to the kernel, so devices could disagree).

    One sort of a packed int64 key (row, descending value, column): rows must stay below
    ``2 ** (63 - 31 - column bits)``, which :func:`item_neighbourhood`'s blocks guarantee."""
    col_bits = _column_bits(n_cols)
    descending = (1 << _VALUE_BITS) - 1 - values.view(torch.int32).long()
    key = (rows << (_VALUE_BITS + col_bits)) | (descending << col_bits) | cols
    order = torch.argsort(key)
    sorted_rows = rows[order]
    counts = torch.bincount(sorted_rows)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=rows.device) - first[sorted_rows]
    return rank < k


def item_neighbourhood(
    history: torch.Tensor,
    k: int,
    shrinkage: float,
    normalize: bool = True,
    block_entries: int = 1 << 23,
) -> torch.Tensor:
    """Sparse CSR W [n_items, n_items]: ``W[i, j] = sim(i, j)`` for the ``k`` items i most
    similar to j (co-occurring items only), from the binary user-item CSR ``history``.

    Target items are taken in blocks whose co-occurrence entries (bounded by the summed
    activity of each item's users) stay near ``block_entries``, so memory is bounded by the
    data's co-occurrences, never by items squared."""
    n_users, n_items = history.shape
    device = history.values().device
    col_bits = _column_bits(n_items)
    if col_bits > 63 - _VALUE_BITS - 1:
        raise ValueError(f"{n_items} items: too many for ItemKNN's packed sort keys")
    users, items, _ = _entries(history)
    by_item = interaction_matrix(items, users, n_items, n_users)  # X^T, CSR
    norms = torch.sqrt(torch.bincount(items, minlength=n_items).to(torch.float32))
    activity = torch.bincount(users, minlength=n_users)
    reach = torch.bincount(items, weights=activity[users].to(torch.float64), minlength=n_items)
    sources, targets, values = [], [], []
    max_rows = 1 << (63 - _VALUE_BITS - col_bits)
    for start, stop in _blocks(reach, block_entries, max_rows):  # blocks of items
        target, source, value = _entries(_row_block(by_item, start, stop) @ history)
        other = source != target + start  # an item is not its own neighbour
        target, source, value = target[other], source[other], value[other]
        if normalize:  # co-occurring items have popularity >= 1: no zero denominator
            value = value / (norms[target + start] * norms[source] + shrinkage)
        chosen = _most_similar(target, source, value, n_items, k) & (value > 0)
        sources.append(source[chosen])
        targets.append(target[chosen] + start)
        values.append(value[chosen])
    empty = torch.zeros(0, dtype=torch.long, device=device)
    source = torch.cat([empty, *sources])
    target = torch.cat([empty, *targets])
    value = torch.cat([empty.to(torch.float32), *values])
    order = torch.argsort(source * n_items + target)
    crow = torch.zeros(n_items + 1, dtype=torch.long, device=device)
    crow[1:] = torch.cumsum(torch.bincount(source, minlength=n_items), 0)
    return torch.sparse_csr_tensor(
        crow, target[order], value[order], size=(n_items, n_items), check_invariants=False
    )


class ItemKNN(Method):
    """ItemKNN (Sarwar et al. 2001; Dacrema et al. 2019): per-domain item-based cosine top-k
    neighbourhood with shrinkage; seed-free."""

    kind = "itemknn"
    Params = ItemKNNParams
    family = "single-domain"
    version = "1"
    display_name = "ItemKNN"
    #: Most sparse entries a block of work may produce (similarity blocks in fit, candidate
    #: scoring in score): bounds memory whatever the catalogue size.
    block_entries: ClassVar[int] = 1 << 23

    params: ItemKNNParams

    def fit(self, data: TrainingData, ctx: FitContext) -> FitSummary:
        self.history = {
            d: interaction_matrix(data.users[d], data.items[d], data.n_users, data.n_items[d])
            for d in data.domains
        }
        self.weights = {
            d: item_neighbourhood(
                self.history[d],
                self.params.k,
                self.params.shrinkage,
                self.params.normalize,
                self.block_entries,
            )
            for d in data.domains
        }
        # Entries of each user's score row before merging: what a block of scoring costs.
        self.reach = {}
        for d in data.domains:
            users, items, _ = _entries(self.history[d])
            fan_out = torch.diff(self.weights[d].crow_indices())  # neighbour lists item i is in
            self.reach[d] = torch.zeros(data.n_users, dtype=torch.float64, device=users.device)
            self.reach[d].index_add_(0, users, fan_out[items].to(torch.float64))
        valid = ctx.validate(self.score)
        mean = sum(valid.values()) / max(len(valid), 1)
        per_item = {
            d: round(self.weights[d].values().numel() / max(self.n_items[d], 1), 2)
            for d in data.domains
        }
        return FitSummary(
            epochs=0, best_epoch=0, best_valid=mean, notes={"neighbours_per_item": per_item}
        )

    def _scores(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        """Sparse CSR [B, n_items]: the users' rows of X @ W."""
        history = self.history[domain]
        return _rows(history, users.to(history.values().device).long()) @ self.weights[domain]

    def score_all(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        return self._scores(users, domain).to_dense().to(users.device)

    def score(self, users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
        # Sparse score rows for a block of users at a time, looked up at the candidates: memory
        # stays near block_entries however many cases the evaluator passes at once.
        n_items = self.n_items[domain]
        device = self.history[domain].values().device
        users, items = users.to(device).long(), items.to(device).long()
        out = torch.zeros(items.shape, dtype=torch.float32, device=device)
        for start, stop in _blocks(self.reach[domain][users], self.block_entries):
            rows, cols, values = _row_major(self._scores(users[start:stop], domain))
            keys = rows * n_items + cols  # sorted
            wanted = torch.arange(stop - start, device=device)[:, None] * n_items
            wanted = wanted + items[start:stop]
            at = torch.searchsorted(keys, wanted).clamp_max(max(len(keys) - 1, 0))
            if len(keys):
                found = keys[at] == wanted
                out[start:stop] = torch.where(found, values[at], torch.zeros((), device=device))
        return out
