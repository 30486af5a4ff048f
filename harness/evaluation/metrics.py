"""Ranking metrics for one held-out positive, with a declared tie policy (methods.md §10.4).

Every case is summarised by two integers: ``greater`` (g, candidates scoring strictly above the
positive) and ``ties`` (t, candidates scoring exactly equal). Under the *expected* policy the
positive's position is uniform on {g+1, ..., g+t+1}, so HR/MRR/NDCG are averages over that range,
computed in closed form from prefix sums — deterministic and unbiased, with no random tie-breaking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "METRICS_VERSION",
    "CaseMetrics",
    "TiePolicy",
    "compare_to_positive",
    "metrics_from_ranks",
]

METRICS_VERSION = "1"  # bump whenever a definition changes: it is part of every cell id
TiePolicy = Literal["expected", "optimistic", "pessimistic"]


@dataclass(frozen=True)
class CaseMetrics:
    """Per-case metrics at one cut-off K (float64 tensors of shape [n_cases])."""

    k: int
    hr: torch.Tensor
    ndcg: torch.Tensor
    mrr: torch.Tensor


def compare_to_positive(
    scores: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Count candidates strictly above and equal to the positive's score.

    ``scores`` [B, C] holds the other candidates' scores, ``positive`` [B] the positive's.
    ``valid`` [B, C] masks out padding (used by full ranking to skip training items).
    NaN scores are rejected: they would silently rank anywhere.
    """
    if torch.isnan(scores).any() or torch.isnan(positive).any():
        raise FloatingPointError("a method returned NaN scores; refusing to rank them")
    pos = positive.unsqueeze(1)
    above = scores > pos
    equal = scores == pos
    if valid is not None:
        above &= valid
        equal &= valid
    return above.sum(1), equal.sum(1)


def _prefix(values: torch.Tensor) -> torch.Tensor:
    """Prefix sums with a leading zero: out[p] = sum of values[:p]."""
    return torch.cat([values.new_zeros(1), torch.cumsum(values, 0)])


def metrics_from_ranks(
    greater: torch.Tensor, ties: torch.Tensor, ks: list[int], policy: TiePolicy = "expected"
) -> list[CaseMetrics]:
    """HR@K, NDCG@K and truncated MRR@K for each K from (g, t) counts.

    Positions p = g+1 .. g+t+1 are averaged (expected), or only p = g+1 (optimistic) or
    p = g+t+1 (pessimistic) is used.
    """
    greater = greater.to(torch.int64)
    ties = ties.to(torch.int64)
    if policy == "optimistic":
        first, last = greater + 1, greater + 1
    elif policy == "pessimistic":
        first, last = greater + ties + 1, greater + ties + 1
    elif policy == "expected":
        first, last = greater + 1, greater + ties + 1
    else:  # pragma: no cover - guarded by the spec schema
        raise ValueError(f"unknown tie policy {policy!r}")
    width = (last - first + 1).to(torch.float64)
    max_k = max(ks)
    positions = torch.arange(1, max_k + 1, dtype=torch.float64)
    reciprocal = _prefix(1.0 / positions)  # reciprocal[p] = sum_{q<=p} 1/q
    discount = _prefix(1.0 / torch.log2(positions + 1.0))
    out = []
    for k in ks:
        upto = torch.clamp(torch.minimum(last, torch.full_like(last, k)), min=0)
        start = torch.clamp(first - 1, max=k)
        counted = torch.clamp(upto - start, min=0).to(torch.float64)
        hr = counted / width
        mrr = (reciprocal[torch.maximum(upto, start)] - reciprocal[start]) / width
        ndcg = (discount[torch.maximum(upto, start)] - discount[start]) / width
        out.append(CaseMetrics(k=k, hr=hr, ndcg=ndcg, mrr=mrr))
    return out


def expected_rank(greater: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """Mean position of the positive under uniform tie-breaking (1 = best)."""
    return greater.to(torch.float64) + 1.0 + ties.to(torch.float64) / 2.0
