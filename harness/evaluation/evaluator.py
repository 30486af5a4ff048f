"""Scoring fixed candidate lists (and optionally the full item set) in batched tensor passes.

The evaluator owns the candidates; a method only ever sees user ids and candidate item ids
through ``score``. Validation goes through :class:`CandidateValidator`, which returns means only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.evaluation.metrics import (
    TiePolicy,
    compare_to_positive,
    expected_rank,
    metrics_from_ranks,
)
from harness.protocol.candidates import DomainCandidates
from methods.base import ScoreFn, ValidationOracle

__all__ = [
    "CandidateValidator",
    "DomainResult",
    "TensorCandidates",
    "rank_candidates",
    "rank_full",
    "result_table",
]


@dataclass(frozen=True)
class TensorCandidates:
    """Candidates as tensors: column 0 of ``items`` is the positive."""

    users: torch.Tensor  # [n]
    items: torch.Tensor  # [n, 1 + n_negatives]

    @classmethod
    def from_numpy(cls, c: DomainCandidates, device: torch.device) -> TensorCandidates:
        items = np.concatenate([c.positives[:, None], c.negatives], axis=1)
        return cls(torch.as_tensor(c.users, device=device), torch.as_tensor(items, device=device))


@torch.no_grad()
def rank_candidates(
    score: ScoreFn, domain: str, cands: TensorCandidates, batch_size: int = 32768
) -> tuple[torch.Tensor, torch.Tensor]:
    """(greater, ties) per case, scoring ``batch_size`` cases per call."""
    greater, ties = [], []
    for start in range(0, len(cands.users), batch_size):
        users = cands.users[start : start + batch_size]
        items = cands.items[start : start + batch_size]
        scores = score(users, domain, items)
        if scores.shape != items.shape:
            raise ValueError(
                f"score returned shape {tuple(scores.shape)}, expected {tuple(items.shape)}"
            )
        g, t = compare_to_positive(scores[:, 1:], scores[:, 0])
        greater.append(g.cpu())
        ties.append(t.cpu())
    if not greater:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(greater), torch.cat(ties)


@torch.no_grad()
def rank_full(
    score_all,
    domain: str,
    users: torch.Tensor,
    positives: torch.Tensor,
    exclude_users: torch.Tensor,
    exclude_items: torch.Tensor,
    n_items: int,
    max_elements: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(greater, ties) of each positive against every item the user has not trained on.

    ``exclude_users/items`` list (user, item) pairs removed from the ranking (training and
    validation interactions). Users are processed in chunks of ``max_elements`` scores.
    """
    device = users.device
    order = torch.argsort(exclude_users)
    ex_users, ex_items = exclude_users[order].to(device), exclude_items[order].to(device)
    chunk = max(1, max_elements // max(n_items, 1))
    greater, ties = [], []
    for start in range(0, len(users), chunk):
        batch_users = users[start : start + chunk]
        scores = score_all(batch_users, domain).clone()
        row_of_user = torch.full((int(batch_users.max()) + 1,), -1, dtype=torch.long, device=device)
        row_of_user[batch_users] = torch.arange(len(batch_users), device=device)
        lo = torch.searchsorted(ex_users, batch_users.min())
        hi = torch.searchsorted(ex_users, batch_users.max(), right=True)
        cand_users, cand_items = ex_users[lo:hi], ex_items[lo:hi]
        rows = row_of_user[cand_users]
        keep = rows >= 0
        valid = torch.ones_like(scores, dtype=torch.bool)
        valid[rows[keep], cand_items[keep]] = False
        rows_idx = torch.arange(len(batch_users), device=device)
        pos_items = positives[start : start + chunk]
        pos_scores = scores[rows_idx, pos_items]
        valid[rows_idx, pos_items] = False  # the positive is not its own competitor
        g, t = compare_to_positive(scores, pos_scores, valid)
        greater.append(g.cpu())
        ties.append(t.cpu())
    if not greater:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(greater), torch.cat(ties)


@dataclass(frozen=True)
class DomainResult:
    """Per-case ranking outcome of one domain (numpy, aligned with ``users``)."""

    domain: str
    ranking: str  # "sampled" or "full"
    users: np.ndarray
    greater: np.ndarray
    ties: np.ndarray


def result_table(
    results: list[DomainResult], ks: list[int], policy: TiePolicy
) -> dict[str, np.ndarray]:
    """Long per-user rows (one per case and K) as column arrays, ready for the store."""
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("ranking", "domain", "user_idx", "k", "hr", "ndcg", "mrr", "rank", "ties")
    }
    for res in results:
        g, t = torch.as_tensor(res.greater), torch.as_tensor(res.ties)
        rank = expected_rank(g, t).numpy()
        for m in metrics_from_ranks(g, t, ks, policy):
            n = len(res.users)
            cols["ranking"].append(np.full(n, res.ranking, dtype=object))
            cols["domain"].append(np.full(n, res.domain, dtype=object))
            cols["user_idx"].append(res.users.astype(np.int64))
            cols["k"].append(np.full(n, m.k, dtype=np.int64))
            cols["hr"].append(m.hr.numpy())
            cols["ndcg"].append(m.ndcg.numpy())
            cols["mrr"].append(m.mrr.numpy())
            cols["rank"].append(rank)
            cols["ties"].append(res.ties.astype(np.int64))
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}


class CandidateValidator(ValidationOracle):
    """Validation oracle over fixed validation candidates (NDCG@K, expected tie rule)."""

    def __init__(
        self, candidates: dict[str, TensorCandidates], k: int = 10, policy: TiePolicy = "expected"
    ):
        self.candidates = candidates
        self.k = k
        self.policy = policy
        self.metric = f"ndcg@{k}"
        self.calls = 0

    def __call__(self, score: ScoreFn, domains: list[str] | None = None) -> dict[str, float]:
        self.calls += 1
        out = {}
        for domain in domains or list(self.candidates):
            cands = self.candidates.get(domain)
            if cands is None or len(cands.users) == 0:
                continue
            g, t = rank_candidates(score, domain, cands)
            (m,) = metrics_from_ranks(g, t, [self.k], self.policy)
            out[domain] = float(m.ndcg.mean())
        return out
