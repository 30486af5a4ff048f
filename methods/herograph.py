"""HeroGraph (Cui et al., ORSUM@RecSys'20): per-domain tables plus one shared-graph embedding.

The shared graph holds every user and every item of every domain as a node and every training
pair as an edge, so cross-domain information reaches a user through the items it touched in
other domains (no common-user alignment is needed). methods.md §6.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Literal

import torch
from pydantic import Field

from methods._cdr_graph import (
    CSR,
    LazyTable,
    segment_softmax,
    uniform_init_,
    xavier_normal_,
)
from methods.base import FitContext, FitSummary, Method, MethodParams, TrainingData
from methods.registry import register
from methods.scoring import DotScorer
from methods.training import NegativeSampler, run_epochs, seeded_generator

__all__ = ["HeroGraph", "HeroGraphParams", "domain_batch_sizes"]


class HeroGraphParams(MethodParams):
    embedding_size: int = Field(128, ge=1, description="m for every table; paper fairness 128")
    batch_size: int = Field(
        2048, ge=1, description="batch of the largest domain; others scale by |R_d| (README rule)"
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam lr (paper fairness 1e-3)")
    reg: float = Field(1e-5, ge=0, description="λ of the squared-L2 term on the batch rows")
    max_epochs: int = Field(200, ge=1, description="methods.md §1.3, BPR-style models")
    patience: int = Field(10, ge=1, description="validation evaluations without improvement")
    eval_every: int = Field(1, ge=1, description="validate every k epochs")
    n_neighbours: int = Field(
        50, ge=1, description="[RECON] S: neighbours sampled per node per training step"
    )
    combine: Literal["concat", "sum"] = Field(
        "concat",
        description="[RECON] z = [local ; graph] (score = <U,V> + <g_u,g_v>) or z = local + graph",
    )
    init: Literal["xavier_normal", "normal"] = Field(
        "xavier_normal", description="embedding-table init (attention matrices: PyTorch default)"
    )
    init_std: float = Field(0.01, gt=0, description="std for init='normal'")


def domain_batch_sizes(sizes: dict[str, int], batch_size: int) -> dict[str, int]:
    """B_d = ⌈batch · |R_d| / max_d' |R_d'|⌉ (methods.md §6, HeroGraph README rule)."""
    largest = max(sizes.values(), default=0)
    if largest == 0:
        return dict.fromkeys(sizes, 0)
    return {d: math.ceil(batch_size * n / largest) for d, n in sizes.items()}


def epoch_chunks(n: int, n_steps: int) -> list[tuple[int, int]]:
    """Split n pairs into exactly n_steps contiguous chunks (sizes differ by at most one)."""
    base, extra = divmod(n, n_steps)
    bounds, start = [], 0
    for step in range(n_steps):
        end = start + base + (1 if step < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n_cols: int) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, size=(len(crow) - 1, n_cols))


def _sddmm(crow: torch.Tensor, col: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a[row_e], b[col_e]> of every entry e of a CSR pattern (rows of ``a``, columns ``b``)."""
    pattern = _csr(crow, col, a.new_zeros(len(col)), len(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0).values()


def _spmm(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, dense: torch.Tensor
) -> torch.Tensor:
    """Σ_e values_e · dense[col_e] per CSR row: [len(crow) − 1, m]."""
    return torch.sparse.mm(_csr(crow, col, values, len(dense)), dense)


def _accumulate(target: torch.Tensor, index: torch.Tensor, grad: torch.Tensor) -> None:
    """Gradient hook: add a gathered block's gradient into its rows of ``target``."""
    target.index_add_(0, index, grad)


def _row_pointers(seg: torch.Tensor, n: int) -> torch.Tensor:
    crow = torch.zeros(n + 1, dtype=torch.long, device=seg.device)
    crow[1:] = torch.cumsum(torch.bincount(seg, minlength=n), 0)
    return crow


class _EdgeAttention(torch.autograd.Function):
    """Context c = Σ_e a_e rows[nbr_e] per center, a = segment softmax of <query[seg_e],
    rows[nbr_e]>, evaluated as sparse products over the edge pattern (SDDMM for the logits,
    SpMM for the context) so that no [edges, m] block is materialised; the backward is the
    same three products on the softmax gradient and the transposed pattern.

    With ``grad_rows`` (a buffer shaped like ``rows``) the rows' gradient is accumulated into
    it in place instead of being returned (``rows`` then needs no autograd).
    """

    @staticmethod
    def forward(ctx, query, rows, seg, nbr, grad_rows=None):  # type: ignore[override]
        crow = _row_pointers(seg, len(query))
        logits = _sddmm(crow, nbr, query, rows)
        weights = segment_softmax(logits, seg, len(query))
        context = _spmm(crow, nbr, weights, rows)
        ctx.save_for_backward(query, rows, seg, nbr, crow, weights)
        ctx.grad_rows = grad_rows
        ctx.mark_non_differentiable(weights)
        return context, weights

    @staticmethod
    def backward(ctx, g_context, _g_weights):  # type: ignore[override]
        query, rows, seg, nbr, crow, weights = ctx.saved_tensors
        g_context = g_context.contiguous()
        g_weights = _sddmm(crow, nbr, g_context, rows)
        wg = weights * g_weights
        total = torch.zeros(len(query), dtype=wg.dtype, device=wg.device).index_add_(0, seg, wg)
        g_logits = wg - weights * total[seg]
        g_query = _spmm(crow, nbr, g_logits, rows) if ctx.needs_input_grad[0] else None
        target = ctx.grad_rows
        if target is None and ctx.needs_input_grad[1]:
            target = torch.zeros_like(rows)
        if target is not None:
            order = torch.argsort(nbr, stable=True)
            crow_t = _row_pointers(nbr, len(rows))
            seg_t = seg[order]
            n = len(query)
            torch.addmm(target, _csr(crow_t, seg_t, weights[order], n), g_context, out=target)
            torch.addmm(target, _csr(crow_t, seg_t, g_logits[order], n), query, out=target)
        return g_query, None if ctx.grad_rows is not None else target, None, None, None


class _Attention(torch.nn.Module):
    """Neighbour attention of one node type: W_q, W_k ∈ R^{m×m}, W_o ∈ R^{m×2m}."""

    def __init__(self, m: int, gen: torch.Generator):
        super().__init__()
        self.w_q = torch.nn.Parameter(uniform_init_(torch.empty(m, m), m, gen))
        self.w_k = torch.nn.Parameter(uniform_init_(torch.empty(m, m), m, gen))
        self.w_o = torch.nn.Parameter(uniform_init_(torch.empty(m, 2 * m), 2 * m, gen))

    def forward(
        self,
        center: torch.Tensor,
        neighbour: torch.Tensor,
        seg: torch.Tensor,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """g = tanh(W_o [G_c ; Σ_v a_cv G_v]), a_cv = softmax_v((W_q G_c)ᵀ(W_k G_v)/√m).

        (W_q G_c)ᵀ(W_k G_v) is evaluated as (W_kᵀ W_q G_c)ᵀ G_v: one m×m product per center
        instead of one per edge.
        """
        m = center.shape[1]
        query = center @ self.w_q.T @ self.w_k / math.sqrt(m)
        logits = torch.linalg.vecdot(query.index_select(0, seg), neighbour)
        weights = segment_softmax(logits, seg, len(center))
        context = center.new_zeros(center.shape).index_add(0, seg, weights.unsqueeze(1) * neighbour)
        out = torch.tanh(torch.cat([center, context], 1) @ self.w_o.T)
        return (out, weights) if return_weights else out

    def sparse(
        self,
        center: torch.Tensor,
        rows: torch.Tensor,
        nbr: torch.Tensor,
        seg: torch.Tensor,
        return_weights: bool = False,
        grad_rows: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with the neighbours given as indices ``nbr`` into ``rows`` (``seg``
        sorted): the same function, computed by sparse products (``_EdgeAttention``; the rows'
        gradient goes into ``grad_rows`` when given)."""
        m = center.shape[1]
        query = center @ self.w_q.T @ self.w_k / math.sqrt(m)
        context, weights = _EdgeAttention.apply(query, rows, seg, nbr, grad_rows)
        out = torch.tanh(torch.cat([center, context], 1) @ self.w_o.T)
        return (out, weights) if return_weights else out


@register
class HeroGraph(Method):
    """Multi-target cross-domain model: per-domain user and item embeddings plus one graph
    embedding per user and item shared by all domains, aggregated from neighbours by attention
    over the cross-domain user-item graph; trained with BPR on every domain at once. There is
    no public code, so this is a reconstruction with each unclear choice a parameter.

    HeroGraph, reconstructed per methods.md §6 (no public code: the official repository
    ``cuiqiang1990/HeroGRAPH`` holds only a README saying the code awaits company approval).

    Known [REF: README]: per-domain user/item tables plus one shared graph user/item table;
    each step draws one batch from every domain and sums the domain losses, with per-domain
    batch sizes that give every domain the same number of steps per epoch.

    [RECON] decisions (each a parameter):
    * neighbour attention a_uv = softmax_{v∈N_S(u)} (W_q G_u)ᵀ(W_k G_v)/√m, c_u = Σ a_uv G_v,
      g_u = tanh(W_o [G_u ; c_u]); one (W_q, W_k, W_o) for user nodes, one for item nodes
      (item neighbours are users of any domain);
    * ``n_neighbours`` S = 50 per node per step: nodes of degree ≤ S keep all neighbours,
      larger ones get S uniform draws with replacement (CSR pointer + random offset); all
      neighbours at evaluation, precomputed once per validation;
    * ``combine`` concat (default) or sum of local and graph embeddings;
    * loss Σ_d BPR_d + λ/(2B_d)·Σ‖rows‖² over the batch's local and graph ego rows (not the
      neighbour rows), λ = 1e-5;
    * B_d = ⌈2048·|R_d|/max|R_d'|⌉; an epoch is ⌈max|R_d|/2048⌉ steps and each domain's
      shuffled pairs are split into exactly that many chunks (each ≤ B_d), so domains stay in
      step even where rounding would give one domain an extra batch;
    * users with no interaction in domain d keep a random local row, but their graph
      embedding carries their other domains; users with no interaction at all get
      g = tanh(W_o [G_u ; 0]), always finite.
    Tables are Xavier-normal and trained by lazy (row-wise) Adam; attention matrices use
    PyTorch's Linear init and dense Adam. Selection: mean validation NDCG@10 over domains.
    G^U and G^V live in one table (users, then items in global order) so that a step looks
    up every graph row it needs (batch nodes and their sampled neighbours, all domains) once.

    Measured: on the planted test data (m = 32, lr 0.01) concat peaks at mean validation
    NDCG@10 ≈ 0.19-0.20 and sum at ≈ 0.21-0.22 (popularity 0.157, BPRMF 0.24); the graph
    half fits the training pairs quickly (BPR loss → 0.02) and overfits. At the Amazon shape
    an epoch (129 steps, ~190k sampled edges per step) takes ~80 s on one CPU thread; with
    two threads on the shared 2-core machine it took 3-11 min (OpenMP contention). Version 2
    computes the attention by sparse products over the edge pattern (``_EdgeAttention``) instead
    of [edges, m] blocks: 0.32 against 0.72 CPU seconds per step at the Amazon shape (2.3x;
    ``benchmarks/xdomain_speed.py``), and evaluation's all-neighbour pass likewise.
    """

    kind = "herograph"
    Params = HeroGraphParams
    family = "cross-domain"
    display_name = "HeroGraph"
    paper = (
        'Cui et al., "HeroGRAPH: A Heterogeneous Graph Framework for Multi-Target '
        'Cross-Domain Recommendation", ORSUM@RecSys 2020'
    )
    # 2: neighbour attention by sparse products over all domains' centres at once (same
    # function and random draws, other rounding).
    version = "2"

    @classmethod
    def quick_params(cls) -> HeroGraphParams:
        return HeroGraphParams(
            embedding_size=8, batch_size=256, max_epochs=3, patience=2, n_neighbours=5
        )

    # ----------------------------------------------------------------------------- setup --
    def _init_table(self, rows: int, gen: torch.Generator) -> torch.Tensor:
        p: HeroGraphParams = self.params  # type: ignore[assignment]
        table = torch.empty(rows, p.embedding_size)
        if p.init == "xavier_normal":
            return xavier_normal_(table, gen)
        return table.normal_(0.0, p.init_std, generator=gen)

    def _build(self, data: TrainingData, ctx: FitContext) -> None:
        p: HeroGraphParams = self.params  # type: ignore[assignment]
        device = ctx.device
        gen = seeded_generator(ctx.seed, 0)
        self.domains = list(data.domains)
        self.offsets = data.item_offsets()
        n_total = sum(self.n_items[d] for d in self.domains)
        self.local_users = {
            d: LazyTable(self._init_table(self.n_users, gen), p.learning_rate).to(device)
            for d in self.domains
        }
        self.local_items = {
            d: LazyTable(self._init_table(self.n_items[d], gen), p.learning_rate).to(device)
            for d in self.domains
        }
        # Shared graph table: G^U (users) then G^V (all items, global ids) in one table.
        self.graph_table = LazyTable(
            torch.cat([self._init_table(self.n_users, gen), self._init_table(n_total, gen)]),
            p.learning_rate,
        ).to(device)
        self.att_user = _Attention(p.embedding_size, gen).to(device)
        self.att_item = _Attention(p.embedding_size, gen).to(device)
        self.dense_opt = torch.optim.Adam(
            [*self.att_user.parameters(), *self.att_item.parameters()], lr=p.learning_rate
        )
        users = torch.cat([data.users[d] for d in self.domains]).to(device)
        items = torch.cat(
            [data.items[d] + self.offsets[d] + self.n_users for d in self.domains]
        ).to(device)
        self.graph = CSR.symmetric(users, items, self.n_users + n_total)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # --------------------------------------------------------------------------- forward --
    def graph_embed(
        self,
        nodes: torch.Tensor,
        users: bool,
        sample: bool,
        gen: torch.Generator | None = None,
    ) -> torch.Tensor:
        """g of shared-graph nodes of one type (all users, or all items as global node ids
        ≥ n_users), over S sampled neighbours or all of them (evaluation), without gradient."""
        p: HeroGraphParams = self.params  # type: ignore[assignment]
        att = self.att_user if users else self.att_item
        seg, nbr = self.graph.neighbours(nodes, p.n_neighbours if sample else None, gen)
        table = self.graph_table.weights
        with torch.no_grad():
            return att.sparse(table[nodes], table, nbr, seg)

    def _step_losses(
        self,
        batches: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        gen: torch.Generator,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(BPR loss, L2 term) of each domain's (users, positives, negatives) batch.

        Every shared-graph row the step needs (batch nodes and their sampled neighbours, all
        domains) is looked up at once, so the graph table is deduplicated and stepped once.
        """
        p: HeroGraphParams = self.params  # type: ignore[assignment]
        plans, user_parts, item_parts = [], [[], [], []], [[], [], []]
        for d, (users, pos, neg) in batches.items():
            items = torch.cat([pos, neg])
            item_nodes = items + self.offsets[d] + self.n_users
            # Sampling order as before: a domain's users, then its items.
            for centers, parts in ((users, user_parts), (item_nodes, item_parts)):
                seg, nbr = self.graph.neighbours(centers, p.n_neighbours, gen)
                parts[0].append(centers)
                parts[1].append(seg + sum(len(c) for c in parts[0][:-1]))
                parts[2].append(nbr)
            plans.append((d, users, items))
        # One lookup of every graph row of the step; one attention pass per node type over
        # all domains' centres (same attention matrices), neighbours as row indices.
        centers_u, centers_i = torch.cat(user_parts[0]), torch.cat(item_parts[0])
        nbr_u, nbr_i = torch.cat(user_parts[2]), torch.cat(item_parts[2])
        sizes = [len(centers_u), len(nbr_u), len(centers_i), len(nbr_i)]
        rows, inverse, grad = self.graph_table.lookup_buffered(
            torch.cat([centers_u, nbr_u, centers_i, nbr_i])
        )
        inv_cu, inv_nu, inv_ci, inv_ni = inverse.split(sizes)
        # Centre rows are small leaves whose gradients join the neighbour rows' in ``grad``.
        ego_u = rows[inv_cu].requires_grad_()
        ego_i = rows[inv_ci].requires_grad_()
        ego_u.register_hook(functools.partial(_accumulate, grad, inv_cu))
        ego_i.register_hook(functools.partial(_accumulate, grad, inv_ci))
        g_u = self.att_user.sparse(ego_u, rows, inv_nu, torch.cat(user_parts[1]), grad_rows=grad)
        g_i = self.att_item.sparse(ego_i, rows, inv_ni, torch.cat(item_parts[1]), grad_rows=grad)
        split_u = [len(c) for c in user_parts[0]]
        split_i = [len(c) for c in item_parts[0]]
        parts_u = zip(ego_u.split(split_u), g_u.split(split_u), strict=True)
        parts_i = zip(ego_i.split(split_i), g_i.split(split_i), strict=True)
        out = {}
        for (d, users, items), (e_u, g_ud), (e_i, g_id) in zip(
            plans, parts_u, parts_i, strict=True
        ):
            u_loc = self.local_users[d].lookup(users)
            i_loc = self.local_items[d].lookup(items)
            if p.combine == "concat":
                z_u, z_i = torch.cat([u_loc, g_ud], 1), torch.cat([i_loc, g_id], 1)
            else:
                z_u, z_i = u_loc + g_ud, i_loc + g_id
            batch = len(users)
            s_pos = torch.linalg.vecdot(z_u, z_i[:batch])
            s_neg = torch.linalg.vecdot(z_u, z_i[batch:])
            bpr = torch.nn.functional.softplus(s_neg - s_pos).mean()
            squares = sum(x.pow(2).sum() for x in (u_loc, i_loc, e_u, e_i))
            out[d] = (bpr, p.reg * squares / (2 * batch))
        return out

    def _tables(self) -> list[LazyTable]:
        return [*self.local_users.values(), *self.local_items.values(), self.graph_table]

    # ----------------------------------------------------------------------------- train --
    def fit(self, data: TrainingData, ctx: FitContext) -> FitSummary:
        p: HeroGraphParams = self.params  # type: ignore[assignment]
        self._scorer = DotScorer()
        self._build(data, ctx)
        device = ctx.device
        gen = seeded_generator(ctx.seed, 1)
        train = {d: (data.users[d].cpu(), data.items[d].cpu()) for d in self.domains}
        active = [d for d in self.domains if len(train[d][0])]
        samplers = {d: NegativeSampler(*train[d], self.n_items[d]) for d in active}
        sizes = {d: len(train[d][0]) for d in active}
        n_steps = max(1, math.ceil(max(sizes.values(), default=0) / p.batch_size))
        self.batch_sizes = domain_batch_sizes(sizes, p.batch_size)

        def train_epoch(_epoch: int) -> dict[str, float]:
            epoch_data = {}
            for d in active:
                users, items = train[d]
                order = torch.randperm(len(users), generator=gen)
                negatives = samplers[d].sample(users[order], gen)
                epoch_data[d] = (
                    users[order].to(device),
                    items[order].to(device),
                    negatives.to(device),
                    epoch_chunks(len(users), n_steps),
                )
            totals = {d: torch.zeros((), device=device) for d in active}
            for step in range(n_steps):
                batches = {}
                for d in active:
                    users, pos, neg, chunks = epoch_data[d]
                    start, end = chunks[step]
                    if end > start:
                        batches[d] = (users[start:end], pos[start:end], neg[start:end])
                if not batches:
                    continue
                losses = self._step_losses(batches, gen)
                loss = sum(bpr + l2 for bpr, l2 in losses.values())
                self.dense_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.dense_opt.step()
                for table in self._tables():
                    table.step()
                for d, (bpr, _) in losses.items():
                    totals[d] += bpr.detach() * len(batches[d][0])
            return {f"bpr_{d}": float(totals[d]) / sizes[d] for d in active}

        def validate() -> float:
            self.refresh()
            values = ctx.validate(self.score)
            return sum(values.values()) / max(len(values), 1)

        summary = run_epochs(
            train_epoch,
            validate,
            self.state,
            self.load,
            max_epochs=p.max_epochs,
            patience=p.patience,
            eval_every=p.eval_every,
            log=ctx.log,
            stage="herograph",
        )
        self.refresh()
        summary.notes["batch_sizes"] = self.batch_sizes
        summary.notes["steps_per_epoch"] = n_steps
        return summary

    def state(self) -> dict[str, torch.Tensor]:
        state = {f"user.{d}": t.weights for d, t in self.local_users.items()}
        state |= {f"item.{d}": t.weights for d, t in self.local_items.items()}
        state["graph"] = self.graph_table.weights
        state |= {f"att_user.{k}": v for k, v in self.att_user.state_dict().items()}
        state |= {f"att_item.{k}": v for k, v in self.att_item.state_dict().items()}
        return state

    def load(self, state: dict[str, torch.Tensor]) -> None:
        for d, t in self.local_users.items():
            t.weights.copy_(state[f"user.{d}"])
        for d, t in self.local_items.items():
            t.weights.copy_(state[f"item.{d}"])
        self.graph_table.weights.copy_(state["graph"])
        with torch.no_grad():
            for name, att in (("att_user", self.att_user), ("att_item", self.att_item)):
                for k, v in att.state_dict().items():
                    v.copy_(state[f"{name}.{k}"])

    # --------------------------------------------------------------------------- scoring --
    @torch.no_grad()
    def refresh(self, max_edges: int = 1 << 21) -> None:
        """Precompute every node's graph embedding over all its neighbours, then the
        per-domain user and item vectors that ``score`` dots (exact, no sampling)."""
        p: HeroGraphParams = self.params  # type: ignore[assignment]
        n = self.graph.n
        device = self.graph.col.device
        g = torch.empty(n, p.embedding_size, device=device)
        ends = torch.cumsum(self.graph.degree, 0)
        start = 0
        while start < n:
            # As many nodes as fit in max_edges neighbours (at least one).
            limit = (ends[start - 1] if start else 0) + max_edges
            stop = max(start + 1, int(torch.searchsorted(ends, limit, right=True)))
            stop = min(stop, n)
            nodes = torch.arange(start, stop, device=device)
            is_user = nodes < self.n_users
            for mask, users in ((is_user, True), (~is_user, False)):
                if bool(mask.any()):
                    g[nodes[mask]] = self.graph_embed(nodes[mask], users=users, sample=False)
            start = stop
        g_users = g[: self.n_users]
        self._cache = {}
        for d in self.domains:
            lo = self.n_users + self.offsets[d]
            g_items = g[lo : lo + self.n_items[d]]
            u_loc, i_loc = self.local_users[d].weights, self.local_items[d].weights
            if p.combine == "concat":
                self._cache[d] = (torch.cat([u_loc, g_users], 1), torch.cat([i_loc, g_items], 1))
            else:
                self._cache[d] = (u_loc + g_users, i_loc + g_items)

    @torch.no_grad()
    def attention_weights(
        self,
        nodes: torch.Tensor,
        users: bool,
        sample: bool,
        gen: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(segment, neighbour, weight) per kept edge of ``nodes``' neighbour attention."""
        p: HeroGraphParams = self.params  # type: ignore[assignment]
        att = self.att_user if users else self.att_item
        seg, nbr = self.graph.neighbours(nodes, p.n_neighbours if sample else None, gen)
        table = self.graph_table.weights
        _, weights = att.sparse(table[nodes], table, nbr, seg, return_weights=True)
        return seg, nbr, weights

    def score(self, users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
        user_vec, item_vec = self._cache[domain]
        return self._scorer(user_vec[users], item_vec, items)

    def score_all(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        user_vec, item_vec = self._cache[domain]
        return user_vec[users] @ item_vec.T
