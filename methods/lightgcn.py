"""LightGCN: one graph model per domain (methods.md §5), and the trainer UCLR reuses.

Every step propagates the current ego embeddings, since all of them change every step; nothing
is cached across steps, so the loss is exactly LightGCN's. Two exact savings make a step cost
about four sparse products instead of six (K = 3), with analytic gradients instead of autograd:

* the loss only reads the final embeddings of the batch's nodes S, so layers 1..K-1 are
  propagated over the whole graph and the K-th only at S (through S's rows of Â);
* M = (1/(K+1)) Σ_k Â^k is symmetric, so the ego gradient is M·G with G supported on S, and
  the first product Â·G only touches S's rows of Â.

The [n_nodes, m] layers and the ego gradient of a step are written into buffers reused every
step (``addmm(beta=0, out=...)``, the same sums bit for bit): a fresh 66 MB tensor per product
cost more in page faults than the product (books graph: 2.0x fewer CPU seconds per step).

After training the final embeddings are computed once and cached for scoring.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from methods.base import EpochLog, FitContext, FitSummary, Method, MethodParams, TrainingData
from methods.graph import normalized_bipartite_adjacency, propagate_layers
from methods.registry import register
from methods.scoring import DotScorer
from methods.training import NegativeSampler, Workspace, run_epochs, seeded_generator

__all__ = [
    "LightGCN",
    "LightGCNParams",
    "batch_blocks",
    "build_adjacency",
    "final_rows",
    "init_ego_embeddings",
    "lightgcn_gradient",
    "propagate_gradient",
    "row_of_nonzero",
    "spmm",
    "train_lightgcn_embeddings",
]


class LightGCNParams(MethodParams):
    embedding_size: int = Field(128, ge=1, description="m; the paper fixes 128 for every method")
    n_layers: int = Field(3, ge=0, description="K propagation layers; 3 as in the LightGCN paper")
    batch_size: int = Field(2048, ge=1, description="BPR triples per step")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    reg: float = Field(
        1e-4,
        ge=0,
        description="[RECON] λ of λ·(‖e_u⁰‖²+‖e_i⁰‖²+‖e_j⁰‖²)/(2B) on the ego rows of the batch; "
        "1e-4 as in the LightGCN code (decay); the UCLR paper's 1e-5 was stated for BPR only",
    )
    max_epochs: int = Field(200, ge=1, description="[RECON] methods.md §1.3, BPR-style models")
    patience: int = Field(10, ge=1, description="validation evaluations without improvement")
    eval_every: int = Field(1, ge=1, description="validate every k epochs")
    init: Literal["xavier_uniform", "xavier_normal", "normal"] = Field(
        "xavier_uniform",
        description="[RECON] Xavier per the paper; uniform as in the official TF code and "
        "RecBole; 'normal' = N(0, init_std²) as in the PyTorch port",
    )
    init_std: float = Field(0.1, gt=0, description="std for init='normal' (PyTorch port: 0.1)")


def build_adjacency(
    users: torch.Tensor,
    items: torch.Tensor,
    n_users: int,
    n_items: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Â = D^-1/2 A D^-1/2 of the user-item graph, in CSR (faster products than COO on CPU)."""
    coo = normalized_bipartite_adjacency(users, items, n_users, n_items).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return coo.to_sparse_csr()


def spmm(
    adjacency: torch.Tensor, dense: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Â·X. On CPU the ``reduce="sum"`` kernel for CSR is used: it is row-parallel, where the
    plain product gathers, multiplies and scatters every nonzero through temporaries (about
    1.5x slower on the Amazon-shaped books graph).

    ``out``: a preallocated [rows, m] buffer (its contents are ignored, NaN included) that
    receives the product through ``addmm(beta=0)``, the same row sums bit for bit. A fresh
    [n_nodes, m] result costs more in page faults than the product itself (the books graph:
    ~40 ms product, ~90 ms for a new 66 MB tensor), so the training step reuses buffers.
    """
    if out is not None and adjacency.layout == torch.sparse_csr:
        return torch.addmm(out, adjacency, dense, beta=0, out=out)
    if adjacency.device.type == "cpu" and adjacency.layout == torch.sparse_csr:
        return torch.sparse.mm(adjacency, dense, "sum")
    return torch.sparse.mm(adjacency, dense)


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, size) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, val, size=size)


@dataclasses.dataclass(frozen=True)
class BatchBlocks:
    """Â's rows at a node set S, [|S|, n], and its columns at S, [n, |S|], both CSR: what a
    step needs to evaluate S's last layer and to push S's gradient back one layer."""

    rows: torch.Tensor
    cols: torch.Tensor


def batch_blocks(adjacency: torch.Tensor, row_of_nonzero: torch.Tensor, nodes: torch.Tensor):
    """Cut S = ``nodes`` (sorted, distinct) out of the CSR ``adjacency`` without Python loops.

    ``row_of_nonzero`` is the row index of each stored entry (computed once per graph).
    """
    n = adjacency.shape[0]
    crow, col, val = adjacency.crow_indices(), adjacency.col_indices(), adjacency.values()
    device = nodes.device
    # Rows at S: the stored runs crow[s]..crow[s+1] of every s, concatenated.
    starts = crow[nodes]
    counts = crow[nodes + 1] - starts
    run = torch.repeat_interleave(torch.arange(len(nodes), device=device), counts)
    row_crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    positions = starts[run] + torch.arange(len(run), device=device) - row_crow[run]
    rows = _csr(row_crow, col[positions], val[positions], (len(nodes), n))
    # Columns at S: the stored entries whose column is in S, renumbered to positions in S.
    local = torch.full((n,), -1, dtype=torch.int64, device=device)
    local[nodes] = torch.arange(len(nodes), device=device)
    keep = local[col] >= 0
    col_counts = torch.bincount(row_of_nonzero[keep], minlength=n)
    col_crow = torch.cat([col_counts.new_zeros(1), torch.cumsum(col_counts, 0)])
    cols = _csr(col_crow, local[col[keep]], val[keep], (n, len(nodes)))
    return BatchBlocks(rows, cols)


def row_of_nonzero(adjacency: torch.Tensor) -> torch.Tensor:
    """Row index of each stored entry of a CSR matrix."""
    crow = adjacency.crow_indices()
    rows = torch.arange(adjacency.shape[0], device=crow.device)
    return torch.repeat_interleave(rows, crow[1:] - crow[:-1])


def _layer_buffer(
    workspace: Workspace | None, name: str, like: torch.Tensor
) -> torch.Tensor | None:
    return None if workspace is None else workspace.take(name, *like.shape, like)


def final_rows(
    adjacency: torch.Tensor,
    ego: torch.Tensor,
    layers: int,
    nodes: torch.Tensor,
    blocks: BatchBlocks,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """Final embeddings of ``nodes`` only, [len(nodes), m].

    Layers 1..K-1 are propagated over the whole graph (their values at the neighbours of S are
    needed); the K-th layer only at S, through S's rows of Â. With a ``workspace`` the full
    layers are written into two alternating buffers ("layer0"/"layer1") instead of new tensors.
    """
    total = ego[nodes].clone()
    current = ego
    for k in range(layers - 1):
        current = spmm(adjacency, current, _layer_buffer(workspace, f"layer{k % 2}", ego))
        total += current[nodes]
    if layers > 0:
        total += spmm(blocks.rows, current)
    return total / (layers + 1)


def propagate_gradient(
    adjacency: torch.Tensor,
    grad_rows: torch.Tensor,
    layers: int,
    nodes: torch.Tensor,
    blocks: BatchBlocks,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """M·G for G supported on ``nodes`` (values ``grad_rows``), M = (1/(K+1)) Σ_k Â^k.

    M is symmetric, so this is the gradient of the ego table given the gradient G of the final
    embeddings. The first product Â·G only needs Â's columns at S; the next ones are full.
    With a ``workspace`` the result is its "grad" buffer (valid until the next call) and the
    layers alternate between "layer0"/"layer1"; the arithmetic is the same.
    """
    if layers > 0:
        n, m = blocks.cols.shape[0], grad_rows.shape[1]
        grad_buffer = None if workspace is None else workspace.take("grad", n, m, grad_rows)
        total = spmm(blocks.cols, grad_rows, grad_buffer)
        current = total
        for k in range(layers - 1):
            # A buffer distinct from ``total`` and from ``current``: no aliasing below.
            buffer = None if workspace is None else workspace.take(f"layer{k % 2}", n, m, total)
            current = spmm(adjacency, current, buffer)
            total += current
    else:
        total = grad_rows.new_zeros(blocks.cols.shape[0], grad_rows.shape[1])
    total.index_add_(0, nodes, grad_rows)
    return total.div_(layers + 1)


def lightgcn_gradient(
    adjacency: torch.Tensor,
    ego: torch.Tensor,
    users: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    layers: int,
    reg: float,
    rows_of_nonzero: torch.Tensor,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gradient of the ego table, BPR loss, L2 term) for one batch of node ids.

    ``pos`` and ``neg`` are node ids (item + n_users); ``rows_of_nonzero`` comes from
    :func:`row_of_nonzero` of ``adjacency``. Loss: mean softplus(-(s_ui - s_uj)) on
    final embeddings + reg·Σ‖e⁰‖²/(2B) over the batch's ego rows (each occurrence counted, as
    in the references). Analytic gradients: autograd through the index ops and the full final
    table costs several [n_nodes, m] temporaries per step. With a ``workspace`` the full-graph
    layers and the returned gradient live in its buffers (the gradient until the next call).
    """
    batch = len(users)
    ids = torch.cat([users, pos, neg])
    nodes, inverse = torch.unique(ids, return_inverse=True)
    blocks = batch_blocks(adjacency, rows_of_nonzero, nodes)
    final = final_rows(adjacency, ego, layers, nodes, blocks, workspace)
    e_u, e_i, e_j = final[inverse].chunk(3)
    diff = e_i - e_j
    x = torch.linalg.vecdot(e_u, diff)
    coef = torch.sigmoid(-x).div_(-batch).unsqueeze(1)  # d softplus(-x)/dx, batch-averaged
    per_id = torch.cat([diff * coef, e_u * coef, e_u * -coef])
    grad_rows = final.new_zeros(final.shape).index_add_(0, inverse, per_id)
    grad = propagate_gradient(adjacency, grad_rows, layers, nodes, blocks, workspace)
    ego_rows = ego[ids]
    if reg > 0:
        grad.index_add_(0, ids, ego_rows, alpha=reg / batch)
    bpr = torch.nn.functional.softplus(-x).mean()
    return grad, bpr, ego_rows.square().sum() / (2 * batch)


def init_ego_embeddings(
    n_users: int, n_items: int, params: LightGCNParams, gen: torch.Generator
) -> torch.Tensor:
    """Ego table [n_users + n_items, m], users first; each block initialised as its own table
    (the official code and RecBole hold separate user and item embeddings)."""
    m = params.embedding_size
    weights = torch.empty(n_users + n_items, m)
    for rows in (weights[:n_users], weights[n_users:]):
        if rows.shape[0] == 0:
            continue
        if params.init == "xavier_uniform":
            torch.nn.init.xavier_uniform_(rows, generator=gen)
        elif params.init == "xavier_normal":
            torch.nn.init.xavier_normal_(rows, generator=gen)
        else:
            rows.normal_(0.0, params.init_std, generator=gen)
    return weights


def _adam(parameter: torch.Tensor, lr: float) -> torch.optim.Optimizer:
    """Dense Adam (the gradient M·G reaches most rows); fused where the device supports it."""
    fused = parameter.device.type in ("cpu", "cuda")
    return torch.optim.Adam([parameter], lr=lr, fused=fused or None)


def train_lightgcn_embeddings(
    users: torch.Tensor,
    items: torch.Tensor,
    n_users: int,
    n_items: int,
    params: LightGCNParams,
    gen: torch.Generator,
    device: torch.device,
    validate: Callable[[torch.Tensor, torch.Tensor], float],
    log: Callable[[EpochLog], None],
    stage: str,
) -> tuple[torch.Tensor, torch.Tensor, FitSummary]:
    """Train one LightGCN on the pairs (users, items) with early stopping.

    ``validate(user_emb, item_emb)`` returns the selection metric for the current final
    (layer-averaged) embeddings. Returns the best final user [n_users, m] and item [n_items, m]
    embeddings (on ``device``, detached) and the summary. Negatives are drawn uniformly from all
    ``n_items`` items the user has not trained on; UCLR passes the union graph of all domains
    in a global item space. With no pairs, nothing is trained: the embeddings are the
    initialisation scaled by 1/(K+1), what propagation gives isolated nodes.
    """
    users, items = users.to(torch.int64), items.to(torch.int64)
    ego = torch.nn.Parameter(init_ego_embeddings(n_users, n_items, params, gen).to(device))
    adjacency = build_adjacency(users.to(device), items.to(device), n_users, n_items)
    layers = params.n_layers

    def final() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = propagate_layers(adjacency, ego.detach(), layers)
        return out[:n_users], out[n_users:]

    def validate_current() -> float:
        return validate(*final())

    if len(users) == 0:
        summary = FitSummary(epochs=0, best_epoch=0, best_valid=validate_current())
        return (*final(), summary)

    cpu_users, cpu_items = users.cpu(), items.cpu()
    sampler = NegativeSampler(cpu_users, cpu_items, n_items)
    nonzero_rows = row_of_nonzero(adjacency)
    opt = _adam(ego, params.learning_rate)
    workspace = Workspace()  # the step's [n_nodes, m] layers and gradient, reused every step
    n = len(cpu_users)

    def train_epoch(_epoch: int) -> dict[str, float]:
        order = torch.randperm(n, generator=gen)
        ep_users = cpu_users[order]
        ep_neg = sampler.sample(ep_users, gen).to(device)
        ep_users, ep_pos = ep_users.to(device), cpu_items[order].to(device)
        bpr_total = torch.zeros((), device=device)
        reg_total = torch.zeros((), device=device)
        for start in range(0, n, params.batch_size):
            end = start + params.batch_size
            with torch.no_grad():
                grad, bpr, reg = lightgcn_gradient(
                    adjacency,
                    ego,
                    ep_users[start:end],
                    ep_pos[start:end] + n_users,
                    ep_neg[start:end] + n_users,
                    layers,
                    params.reg,
                    nonzero_rows,
                    workspace,
                )
            ego.grad = grad
            opt.step()
            size = min(end, n) - start
            bpr_total += bpr * size
            reg_total += reg * size
        return {"bpr_loss": float(bpr_total) / n, "reg_loss": float(reg_total) / n}

    def set_state(state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            ego.copy_(state["ego"])

    summary = run_epochs(
        train_epoch,
        validate_current,
        lambda: {"ego": ego.detach()},
        set_state,
        max_epochs=params.max_epochs,
        patience=params.patience,
        eval_every=params.eval_every,
        log=log,
        stage=stage,
    )
    return (*final(), summary)


@register
class LightGCN(Method):
    """Graph convolution over one domain's user-item graph without weights or nonlinearities,
    one model per domain, trained with BPR; a score is the dot product of the propagated user
    and item embeddings. Each domain's model stops early on its validation NDCG@10.

    Graph over all users and the domain's items from its training pairs, Â = D^-1/2 A D^-1/2
    (isolated nodes: zero rows), K = 3 layers without weights, nonlinearity or self-loop, mean of
    layers 0..K; BPR on the final embeddings, squared L2 on the ego rows; dense Adam; one
    uniform negative per positive outside the user's training items, redrawn every epoch.

    Reconstruction decisions ([RECON], each a parameter):
      * ``reg`` = 1e-4, λ·Σ‖e⁰‖²/(2B) on ego embeddings (official code's ``decay``), not the
        UCLR paper's BPR λ = 1e-5.
      * ``init`` = xavier_uniform (paper: Xavier; official TF code and RecBole: uniform; the
        PyTorch port: N(0, 0.1²) via ``init='normal'``).
      * ``max_epochs`` = 200, ``patience`` = 10 evaluations on validation NDCG@10 (§1.3).
      * Users with no pair in a domain are isolated nodes: e = e⁰/(K+1), near chance.

    References: gusye1234/LightGCN-PyTorch ``code/model.py`` (class LightGCN: ``computer``,
    ``bpr_loss``), kuandeng/LightGCN ``LightGCN.py`` (``_init_weights``,
    ``_create_lightgcn_embed``, ``create_bpr_loss``), RecBole
    ``recbole/model/general_recommender/lightgcn.py``.
    """

    kind = "lightgcn"
    Params = LightGCNParams
    family = "single-domain"
    display_name = "LightGCN"
    paper = (
        'He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for '
        'Recommendation", SIGIR 2020'
    )
    version = "1"

    @classmethod
    def quick_params(cls) -> LightGCNParams:
        return LightGCNParams(embedding_size=8, batch_size=256, max_epochs=3, patience=2)

    def fit(self, data: TrainingData, ctx: FitContext) -> FitSummary:
        p: LightGCNParams = self.params  # type: ignore[assignment]
        self._scorer = DotScorer()
        self.user_emb: dict[str, torch.Tensor] = {}
        self.item_emb: dict[str, torch.Tensor] = {}
        summaries = {}
        for index, domain in enumerate(data.domains):

            def validate(user_emb: torch.Tensor, item_emb: torch.Tensor, d: str = domain):
                self.user_emb[d], self.item_emb[d] = user_emb, item_emb
                return ctx.validate(self.score, [d]).get(d, 0.0)

            def log(entry: EpochLog, d: str = domain) -> None:
                ctx.log(dataclasses.replace(entry, domain=d))

            user_emb, item_emb, summary = train_lightgcn_embeddings(
                data.users[domain],
                data.items[domain],
                self.n_users,
                self.n_items[domain],
                p,
                seeded_generator(ctx.seed, index),
                ctx.device,
                validate,
                log,
                stage="lightgcn",
            )
            self.user_emb[domain], self.item_emb[domain] = user_emb, item_emb
            if summary.epochs:
                summaries[domain] = summary
        return FitSummary(
            epochs=sum(s.epochs for s in summaries.values()),
            best_epoch=max((s.best_epoch for s in summaries.values()), default=0),
            best_valid=sum(s.best_valid for s in summaries.values()) / max(len(summaries), 1),
            notes={
                d: {"epochs": s.epochs, "best_epoch": s.best_epoch} for d, s in summaries.items()
            },
        )

    def score(self, users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
        return self._scorer(self.user_emb[domain][users], self.item_emb[domain], items)

    def score_all(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        return self.user_emb[domain][users] @ self.item_emb[domain].T
