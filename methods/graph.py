"""Sparse graph utilities shared by the graph baselines and UCLR's LightGCN backbone."""

from __future__ import annotations

import torch

__all__ = ["normalized_bipartite_adjacency", "propagate_layers"]


def normalized_bipartite_adjacency(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int
) -> torch.Tensor:
    """Symmetrically normalised adjacency D^-1/2 A D^-1/2 of the user-item graph.

    Nodes are users [0, n_users) followed by items; the result is a coalesced sparse COO
    tensor of shape [n_users + n_items, n_users + n_items]. Isolated nodes get zero rows (no
    self-loop), as in LightGCN.
    """
    device = users.device
    n = n_users + n_items
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    degree = torch.bincount(rows, minlength=n).to(torch.float32)
    inv_sqrt = torch.where(degree > 0, degree.clamp(min=1).rsqrt(), torch.zeros_like(degree))
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n, n), device=device, check_invariants=False
    ).coalesce()


def propagate_layers(
    adjacency: torch.Tensor, embeddings: torch.Tensor, layers: int
) -> torch.Tensor:
    """Mean of the embeddings after 0..layers propagation steps (LightGCN's layer combination)."""
    out = embeddings
    current = embeddings
    for _ in range(layers):
        current = torch.sparse.mm(adjacency, current)
        out = out + current
    return out / (layers + 1)
