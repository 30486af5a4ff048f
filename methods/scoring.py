"""Dot-product scoring of candidate lists, shared by every embedding-based method.

Gathering a [B, C, m] block of item rows and multiplying moves B·C·m floats through memory,
which on CPU costs more than the arithmetic. On CPU the scores are computed instead as a
sampled dense-dense product (SDDMM): ``U @ Q.T`` evaluated only at the candidate positions of a
CSR pattern, without materialising the gathered rows. benchmarks/speed.py measures both.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["DotScorer", "gathered_dot", "sampled_dot"]


def gathered_dot(
    user_vectors: torch.Tensor, item_table: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """Reference path: gather [B, C, m] and batch-multiply (the fast path on GPUs)."""
    return torch.bmm(item_table[items], user_vectors.unsqueeze(2)).squeeze(2)


def sampled_dot(
    user_vectors: torch.Tensor, item_table: torch.Tensor, items: torch.Tensor
) -> torch.Tensor | None:
    """SDDMM path; None when a row repeats an item (CSR patterns need distinct columns)."""
    n_rows, n_cols = items.shape
    if n_rows == 0:
        return user_vectors.new_zeros(0, n_cols)
    sorted_items, order = torch.sort(items, dim=1)
    if n_cols > 1 and bool((sorted_items[:, 1:] == sorted_items[:, :-1]).any()):
        return None
    crow = torch.arange(0, n_rows * n_cols + 1, n_cols, device=items.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(
            crow,
            sorted_items.reshape(-1),
            user_vectors.new_zeros(n_rows * n_cols),
            size=(n_rows, item_table.shape[0]),
        )
        product = torch.sparse.sampled_addmm(pattern, user_vectors, item_table.t(), beta=0.0)
    values = product.values().view(n_rows, n_cols)
    return torch.empty_like(values).scatter_(1, order, values)


class DotScorer:
    """``scores[b, c] = <user_vectors[b], item_table[items[b, c]]>`` by the fastest exact path."""

    def __call__(
        self, user_vectors: torch.Tensor, item_table: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        if item_table.device.type == "cpu" and user_vectors.dtype == item_table.dtype:
            scores = sampled_dot(user_vectors.contiguous(), item_table, items)
            if scores is not None:
                return scores
        return gathered_dot(user_vectors, item_table, items)
