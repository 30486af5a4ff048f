"""Stage A, the pretrained global embedding (PGE), behind a small backbone seam (methods.md §2.2).

A backbone trains one user table E and one item table I over the union of every domain's
training pairs, in the global item space ``offset_d + j``, selected on the mean validation
NDCG@10 over domains of ``<E_u, I_{offset_d + j}>``. BPRMF is the paper's choice; LightGCN is
its Table 6 alternative; any other single-model embedding is one more entry in
:data:`BACKBONES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from methods.base import EpochLog, FitContext, FitSummary, TrainingData
from methods.bprmf import BPRMFParams, MFTables, train_bpr_tables
from methods.scoring import DotScorer
from methods.training import NegativeSampler, seeded_generator
from uclr.params import UCLRParams

__all__ = [
    "BACKBONES",
    "PGEResult",
    "SameDomainSampler",
    "global_pairs",
    "pretrain",
    "register_backbone",
]

#: Salt of stage A's random stream (seeded_generator(seed, STAGE_A_SALT)).
STAGE_A_SALT = 1001

Log = Callable[[EpochLog], None]
Validate = Callable[[torch.Tensor, torch.Tensor], float]
Backbone = Callable[
    [TrainingData, UCLRParams, FitContext, Validate, Log],
    tuple[torch.Tensor, torch.Tensor, FitSummary],
]
BACKBONES: dict[str, Backbone] = {}


def register_backbone(name: str) -> Callable[[Backbone], Backbone]:
    def add(fn: Backbone) -> Backbone:
        BACKBONES[name] = fn
        return fn

    return add


@dataclass(frozen=True)
class PGEResult:
    """Stage A's output: E (later W0) and I, both read-only from here on."""

    users: torch.Tensor  # [n_users, m]
    items: torch.Tensor  # [sum_d n_items_d, m]
    offsets: dict[str, int]
    n_items: dict[str, int]
    summary: FitSummary

    def domain_items(self, domain: str) -> torch.Tensor:
        start = self.offsets[domain]
        return self.items[start : start + self.n_items[domain]]


def global_pairs(data: TrainingData) -> tuple[torch.Tensor, torch.Tensor]:
    """Every domain's training pairs with item ids shifted into the global item space (CPU)."""
    offsets = data.item_offsets()
    users = torch.cat([data.users[d].cpu() for d in data.domains])
    items = torch.cat([data.items[d].cpu() + offsets[d] for d in data.domains])
    return users, items


def domain_validator(
    data: TrainingData, ctx: FitContext
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """``validate(E, I)``: mean validation NDCG@10 over domains of <E_u, I_{offset_d + j}>."""
    offsets, scorer = data.item_offsets(), DotScorer()

    def validate(user_emb: torch.Tensor, item_emb: torch.Tensor) -> float:
        def score(users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
            start = offsets[domain]
            table = item_emb[start : start + data.n_items[domain]]
            return scorer(user_emb[users], table, items)

        values = ctx.validate(score)
        return sum(values.values()) / max(len(values), 1)

    return validate


class SameDomainSampler:
    """A1's alternative: each negative comes from its positive's domain (global ids)."""

    def __init__(self, data: TrainingData):
        self.offsets = data.item_offsets()
        self.domains = list(data.domains)
        self.starts = torch.tensor([self.offsets[d] for d in self.domains])
        self.samplers = {
            d: NegativeSampler(data.users[d].cpu(), data.items[d].cpu(), data.n_items[d])
            for d in self.domains
            if len(data.users[d])
        }

    def sample(
        self, users: torch.Tensor, gen: torch.Generator, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        if items is None:
            raise ValueError("same-domain negatives need the positives' global item ids")
        which = torch.bucketize(items, self.starts, right=True) - 1
        out = torch.empty_like(items)
        for index, domain in enumerate(self.domains):
            rows = torch.nonzero(which == index).squeeze(1)
            if len(rows):
                local = self.samplers[domain].sample(users[rows], gen)
                out[rows] = local + self.offsets[domain]
        return out


def _bpr_params(p: UCLRParams) -> BPRMFParams:
    return BPRMFParams(
        embedding_size=p.embedding_size,
        batch_size=p.batch_size,
        learning_rate=p.learning_rate,
        reg=p.pge_reg,
        max_epochs=p.pge_max_epochs,
        patience=p.patience,
        eval_every=p.pge_eval_every,
        init=p.pge_init,
        init_std=p.pge_init_std,
    )


@register_backbone("bprmf")
def pretrain_bprmf(
    data: TrainingData, p: UCLRParams, ctx: FitContext, validate: Validate, log: Log
) -> tuple[torch.Tensor, torch.Tensor, FitSummary]:
    """Eq. 2: BPR over the union of domains, squared-L2 λ = 1e-5 on the batch rows."""
    params = _bpr_params(p)
    n_total = sum(data.n_items.values())
    gen = seeded_generator(ctx.seed, STAGE_A_SALT)
    tables = MFTables(data.n_users, n_total, params, gen).to(ctx.device)
    users, items = global_pairs(data)
    check = lambda: validate(tables.users, tables.items)  # noqa: E731
    sampler = (
        NegativeSampler(users, items, n_total) if p.pge_neg == "all" else SameDomainSampler(data)
    )
    summary = train_bpr_tables(tables, users, items, sampler, params, gen, check, log, stage="pge")
    return tables.users, tables.items, summary


@register_backbone("lightgcn")
def pretrain_lightgcn(
    data: TrainingData, p: UCLRParams, ctx: FitContext, validate: Validate, log: Log
) -> tuple[torch.Tensor, torch.Tensor, FitSummary]:
    """Table 6's alternative: LightGCN over the union graph; returns the layer-averaged tables."""
    from methods.lightgcn import LightGCNParams, train_lightgcn_embeddings

    common = {
        "embedding_size": p.embedding_size,
        "batch_size": p.batch_size,
        "learning_rate": p.learning_rate,
        "reg": p.pge_reg,
        "max_epochs": p.pge_max_epochs,
        "patience": p.patience,
        "eval_every": p.pge_eval_every,
    }
    fields = LightGCNParams.model_fields
    kwargs = {k: v for k, v in common.items() if k in fields} | dict(p.pge_backbone_params)
    params = LightGCNParams(**kwargs)
    users, items = global_pairs(data)
    return train_lightgcn_embeddings(
        users,
        items,
        data.n_users,
        sum(data.n_items.values()),
        params,
        seeded_generator(ctx.seed, STAGE_A_SALT),
        ctx.device,
        validate,
        log,
        "pge",
    )


def pretrain(data: TrainingData, p: UCLRParams, ctx: FitContext, log: Log) -> PGEResult:
    """Run stage A with the configured backbone."""
    if p.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {p.backbone!r}; known: {sorted(BACKBONES)}")
    validate = domain_validator(data, ctx)
    users, items, summary = BACKBONES[p.backbone](data, p, ctx, validate, log)
    return PGEResult(
        users=users.detach(),
        items=items.detach(),
        offsets=data.item_offsets(),
        n_items=dict(data.n_items),
        summary=summary,
    )
