"""BPRMF: one independent matrix-factorisation model per domain (methods.md §3).

Training uses hand-derived BPR gradients and row-wise (lazy) Adam on the rows a batch touches,
the semantics of ``torch.optim.SparseAdam``. Autograd over two embedding tables costs several
times more on CPU and dense Adam would touch all 100k+ item rows every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from methods.base import EpochLog, FitContext, FitSummary, Method, MethodParams, TrainingData
from methods.registry import register
from methods.scoring import DotScorer
from methods.training import (
    NegativeSampler,
    RowwiseAdam,
    Workspace,
    run_epochs,
    seeded_generator,
)

__all__ = ["BPRMF", "BPRMFParams", "MFTables", "train_bpr_tables"]


class BPRMFParams(MethodParams):
    embedding_size: int = Field(128, ge=1, description="m; the paper fixes 128 for every method")
    batch_size: int = Field(2048, ge=1, description="training triples per step (the paper: 2048)")
    learning_rate: float = Field(1e-3, gt=0, description="Adam step size (the paper: 1e-3)")
    reg: float = Field(1e-5, ge=0, description="λ of the squared-L2 term on the batch rows")
    max_epochs: int = Field(200, ge=1, description="epoch cap; early stopping usually ends sooner")
    patience: int = Field(10, ge=1, description="validation evaluations without improvement")
    eval_every: int = Field(1, ge=1, description="validate every k epochs")
    init: Literal["xavier_normal", "normal"] = Field(
        "xavier_normal", description="embedding init: Xavier-normal, or N(0, init_std²)"
    )
    init_std: float = Field(0.01, gt=0, description="std for init='normal'")


class MFTables:
    """User and item embeddings of one MF model in a single table (users first, then items),
    so that a training step gathers, deduplicates and updates all its rows in one pass."""

    def __init__(self, n_users: int, n_items: int, params: BPRMFParams, gen: torch.Generator):
        m = params.embedding_size
        self.n_users = n_users
        self.weights = torch.empty(n_users + n_items, m)
        for rows in (self.weights[:n_users], self.weights[n_users:]):
            if params.init == "xavier_normal":
                std = (2.0 / (rows.shape[0] + rows.shape[1])) ** 0.5
                rows.normal_(0.0, std, generator=gen)
            else:
                rows.normal_(0.0, params.init_std, generator=gen)
        self.opt = RowwiseAdam(self.weights, params.learning_rate)
        self.workspace = Workspace()

    @property
    def users(self) -> torch.Tensor:
        return self.weights[: self.n_users]

    @property
    def items(self) -> torch.Tensor:
        return self.weights[self.n_users :]

    def to(self, device: torch.device) -> MFTables:
        self.weights = self.weights.to(device)
        self.opt.to(self.weights)
        return self

    def state(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.weights.copy_(state["weights"])


def bpr_step(
    tables: MFTables, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, reg: float
) -> torch.Tensor:
    """One BPR step with analytic gradients; returns the batch loss (without the L2 term).

    The loss stays a tensor so that GPU steps do not synchronise with the host.
    """
    ws = tables.workspace
    offset = tables.n_users
    batch = len(users)
    rows = torch.cat([users, pos + offset, neg + offset])
    gathered = ws.take("gathered", 3 * batch, tables.weights.shape[1], tables.weights)
    torch.index_select(tables.weights, 0, rows, out=gathered)
    u, i, j = gathered.chunk(3)
    diff = ws.take("diff", batch, gathered.shape[1], gathered)
    torch.sub(i, j, out=diff)
    x = torch.linalg.vecdot(u, diff)
    coef = torch.sigmoid(-x).div_(-batch).unsqueeze(1)  # d softplus(-x) / dx, batch-averaged
    grad = ws.take("grad", 3 * batch, gathered.shape[1], gathered)
    torch.mul(gathered, reg / batch, out=grad)
    g_u, g_i, g_j = grad.chunk(3)
    g_u.addcmul_(diff, coef)
    g_i.addcmul_(u, coef)
    g_j.addcmul_(u, coef, value=-1.0)
    unique, inverse = torch.unique(rows, return_inverse=True)
    summed = ws.take("summed", len(unique), grad.shape[1], grad).zero_()
    summed.index_add_(0, inverse, grad)
    tables.opt.step(unique, summed)
    return torch.nn.functional.softplus(-x).mean()


def train_bpr_tables(
    tables: MFTables,
    users: torch.Tensor,
    items: torch.Tensor,
    sampler: NegativeSampler,  # or any object with the same ``sample`` signature
    params: BPRMFParams,
    gen: torch.Generator,
    validate: Callable[[], float],
    log: Callable[[EpochLog], None],
    stage: str,
    domain: str | None = None,
) -> FitSummary:
    """BPR training with per-epoch shuffling, fresh negatives and early stopping.

    ``validate()`` returns the selection metric for the current tables; the best tables are
    restored before returning. Also used for UCLR's global pretraining (over the union of
    domains, with a sampler over the global item space).
    """
    device = tables.weights.device
    n = len(users)

    def train_epoch(_epoch: int) -> dict[str, float]:
        order = torch.randperm(n, generator=gen)
        negatives = sampler.sample(users[order], gen, items=items[order])
        ep_users, ep_pos = users[order].to(device), items[order].to(device)
        ep_neg = negatives.to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n, params.batch_size):
            end = start + params.batch_size
            loss = bpr_step(
                tables, ep_users[start:end], ep_pos[start:end], ep_neg[start:end], params.reg
            )
            total += loss * (min(end, n) - start)
        return {"bpr_loss": float(total) / max(n, 1)}

    return run_epochs(
        train_epoch,
        validate,
        tables.state,
        tables.load,
        max_epochs=params.max_epochs,
        patience=params.patience,
        eval_every=params.eval_every,
        log=log,
        stage=stage,
        domain=domain,
    )


@register
class BPRMF(Method):
    """Matrix factorisation trained with the BPR pairwise ranking loss, one independent model
    per domain: the single-domain baseline that every cross-domain method should beat. A
    score is the dot product of user and item embeddings; each domain's model stops early on
    its own validation NDCG@10."""

    kind = "bprmf"
    Params = BPRMFParams
    family = "single-domain"
    display_name = "BPRMF"
    paper = 'Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009'
    version = "1"

    @classmethod
    def quick_params(cls) -> BPRMFParams:
        return BPRMFParams(embedding_size=8, batch_size=256, max_epochs=3, patience=2)

    def fit(self, data: TrainingData, ctx: FitContext) -> FitSummary:
        p: BPRMFParams = self.params  # type: ignore[assignment]
        self._scorer = DotScorer()
        self.tables: dict[str, MFTables] = {}
        summaries = {}
        for index, domain in enumerate(data.domains):
            gen = seeded_generator(ctx.seed, index)
            tables = MFTables(self.n_users, self.n_items[domain], p, gen).to(ctx.device)
            self.tables[domain] = tables
            users, items = data.users[domain].cpu(), data.items[domain].cpu()
            if len(users) == 0:
                continue
            sampler = NegativeSampler(users, items, self.n_items[domain])
            summaries[domain] = train_bpr_tables(
                tables,
                users,
                items,
                sampler,
                p,
                gen,
                validate=lambda d=domain: ctx.validate(self.score, [d]).get(d, 0.0),
                log=ctx.log,
                stage="bprmf",
                domain=domain,
            )
        return FitSummary(
            epochs=sum(s.epochs for s in summaries.values()),
            best_epoch=max((s.best_epoch for s in summaries.values()), default=0),
            best_valid=sum(s.best_valid for s in summaries.values()) / max(len(summaries), 1),
            notes={
                d: {"epochs": s.epochs, "best_epoch": s.best_epoch} for d, s in summaries.items()
            },
        )

    def score(self, users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
        tables = self.tables[domain]
        return self._scorer(tables.users[users], tables.items, items)

    def score_all(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        tables = self.tables[domain]
        return tables.users[users] @ tables.items.T
