"""Most-popular baseline: an item's training interaction count in its domain.

A sanity floor every learned method must beat; with uniform negatives it is also a reminder
that sampled metrics flatter popularity (methods.md §10.5).
"""

from __future__ import annotations

import torch

from methods.base import FitContext, FitSummary, Method, MethodParams, TrainingData
from methods.registry import register

__all__ = ["Popularity", "PopularityParams"]


class PopularityParams(MethodParams):
    pass


@register
class Popularity(Method):
    """MostPop: scores an item by its number of training interactions in its domain, the same
    for every user. No training and no parameters; a sanity floor every learned method must
    beat, and under sampled candidates a strong one."""

    kind = "popularity"
    Params = PopularityParams
    family = "single-domain"
    display_name = "MostPop"

    def fit(self, data: TrainingData, ctx: FitContext) -> FitSummary:
        self.counts = {
            d: torch.bincount(data.items[d], minlength=self.n_items[d]).to(torch.float32)
            for d in data.domains
        }
        valid = ctx.validate(self.score)
        mean = sum(valid.values()) / max(len(valid), 1)
        return FitSummary(epochs=0, best_epoch=0, best_valid=mean)

    def score(self, users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
        return self.counts[domain].to(items.device)[items]

    def score_all(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        return self.counts[domain].to(users.device).expand(len(users), -1)
