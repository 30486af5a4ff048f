"""NeuMF (He et al., WWW'17): one GMF + MLP model per domain (methods.md §4).

Embeddings live in one table per model (users first, then items; GMF columns, then MLP
columns). A step gathers only the rows its batch touches and updates them with row-wise Adam,
so its cost follows the batch, not the 100k-row item table; the tower and the prediction layer
use ordinary Adam.

Scoring exploits two exact rewritings so that candidate lists cost one small matrix product per
pair instead of a pass through the whole tower: the GMF term hᴳ·(p ⊙ q) = (hᴳ ⊙ p)·q is a dot
product, and the first tower layer W[p; q] + b = (W_u p + b) + W_i q is precomputed per user
and per item.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from methods.base import EpochLog, FitContext, FitSummary, Method, MethodParams, TrainingData
from methods.registry import register
from methods.scoring import DotScorer
from methods.training import NegativeSampler, RowwiseAdam, run_epochs, seeded_generator

__all__ = ["NeuMF", "NeuMFNet", "NeuMFParams", "autograd_step", "neumf_step", "train_neumf_net"]

Branch = Literal["neumf", "gmf", "mlp"]

# Pairs scored per chunk at inference: bounds the [pairs, hidden] activations (~100 MB).
_SCORE_CHUNK = 1 << 17


class NeuMFParams(MethodParams):
    gmf_size: int = Field(128, ge=1, description="GMF embedding size (m = 128)")
    mlp_embedding_size: int = Field(
        128, ge=1, description="[RECON] MLP embedding size per side; the tower input is twice it"
    )
    mlp_layers: tuple[int, ...] = Field(
        (128, 64),
        min_length=1,
        description="[RECON] tower widths after the 256-wide input: 256→128→64 (RecBole's "
        "[128, 64] on 2×64, scaled ×2)",
    )
    dropout: float = Field(
        0.0, ge=0, lt=1, description="[RECON] dropout before each tower layer (RecBole: 0.1)"
    )
    num_negatives: int = Field(4, ge=1, description="negatives per positive, redrawn per epoch")
    batch_size: int = Field(
        2048, ge=1, description="instances (positives and negatives) per step, as in NCF/RecBole"
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam step size (the paper: 1e-3)")
    reg: float = Field(
        0.0, ge=0, description="λ·(‖p_u‖²+‖q_j‖²)/(2B) on the batch's embedding rows (NCF: 0)"
    )
    max_epochs: int = Field(200, ge=1, description="[RECON] per training stage (§1.3)")
    patience: int = Field(10, ge=1, description="validation evaluations without improvement")
    eval_every: int = Field(1, ge=1, description="validate every k epochs")
    init_std: float = Field(0.01, gt=0, description="embeddings N(0, std²) [ORIG]")
    predict_init: Literal["lecun_uniform", "torch_default"] = Field(
        "lecun_uniform", description="prediction layer init; LeCun-uniform as in NCF's Keras code"
    )
    tower_init: Literal["torch_default", "glorot_uniform"] = Field(
        "torch_default",
        description="[RECON] tower Linear init: PyTorch default (§1.3); NCF's Keras used Glorot",
    )
    embedding_optimizer: Literal["rowwise", "dense"] = Field(
        "rowwise",
        description="[RECON] Adam on embedding tables: 'rowwise' updates only the batch's rows "
        "(SparseAdam semantics, as BPRMF here); 'dense' is plain Adam over the whole table, "
        "as in the Keras/RecBole code, several times slower on large item sets",
    )
    pretrain: bool = Field(
        False,
        description="[RECON: off] pretrain GMF and MLP separately (each with early stopping), "
        "then initialise NeuMF from them with h = [0.5·h_G; 0.5·h_M], b = 0.5·(b_G + b_M)",
    )
    finetune_optimizer: Literal["adam", "sgd"] = Field(
        "adam",
        description="[RECON] optimiser of NeuMF after pretraining: the NCF paper used plain "
        "SGD, its README Adam; Adam keeps the UCLR paper's fairness setting",
    )


class NeuMFNet(torch.nn.Module):
    """GMF, MLP or fused NeuMF over one domain; ``forward`` returns the pre-sigmoid logit.

    ``table`` [n_users + n_items, g + e] holds GMF columns [0, g) and MLP columns [g, g + e);
    it is a plain tensor (updated row-wise outside autograd), not a module parameter.
    """

    def __init__(
        self, n_users: int, n_items: int, params: NeuMFParams, branch: Branch, gen: torch.Generator
    ):
        super().__init__()
        self.n_users, self.branch, self.params = n_users, branch, params
        self.gmf_dim = params.gmf_size if branch != "mlp" else 0
        self.mlp_dim = params.mlp_embedding_size if branch != "gmf" else 0
        self.table = torch.empty(n_users + n_items, self.gmf_dim + self.mlp_dim)
        self.table.normal_(0.0, params.init_std, generator=gen)
        widths = [2 * self.mlp_dim, *params.mlp_layers] if self.mlp_dim else []
        self.tower = torch.nn.ModuleList(
            torch.nn.utils.skip_init(torch.nn.Linear, a, b) for a, b in itertools.pairwise(widths)
        )
        predict_in = self.gmf_dim + (widths[-1] if widths else 0)
        self.predict = torch.nn.utils.skip_init(torch.nn.Linear, predict_in, 1)
        for layer in self.tower:
            _init_linear(layer, params.tower_init, gen)
        _init_linear(self.predict, params.predict_init, gen)
        self._cache: dict[str, torch.Tensor] | None = None

    # --- training --------------------------------------------------------------------------

    def logits_from_rows(
        self, user_rows: torch.Tensor, item_rows: torch.Tensor, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        """Logits [B] from gathered embedding rows; ``gen`` draws dropout masks (training)."""
        parts = []
        g = self.gmf_dim
        if g:
            parts.append(user_rows[:, :g] * item_rows[:, :g])
        if self.mlp_dim:
            h = torch.cat([user_rows[:, g:], item_rows[:, g:]], dim=1)
            for layer in self.tower:
                if gen is not None and self.params.dropout > 0:
                    h = _dropout(h, self.params.dropout, gen)
                h = torch.relu(layer(h))
            parts.append(h)
        return self.predict(torch.cat(parts, dim=1)).squeeze(1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for (users[k], items[k]) pairs of any matching shape, straight through the
        network (eval mode: no dropout); the reference that ``score`` must reproduce."""
        if items.dim() == 2 and users.dim() == 1:
            users = users.unsqueeze(1)
        shape = items.shape
        users, items = users.expand(shape).reshape(-1), items.reshape(-1)
        return self.logits_from_rows(self.table[users], self.table[items + self.n_users]).view(
            shape
        )

    def invalidate(self) -> None:
        self._cache = None

    def state(self) -> dict[str, torch.Tensor]:
        return {"table": self.table, **{k: v.detach() for k, v in self.state_dict().items()}}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.table.copy_(state["table"])
            self.load_state_dict({k: v for k, v in state.items() if k != "table"})
        self.invalidate()

    def to_device(self, device: torch.device) -> NeuMFNet:
        self.table = self.table.to(device)
        self.to(device)
        return self

    # --- inference ---------------------------------------------------------------------------

    @torch.no_grad()
    def _tables(self) -> dict[str, torch.Tensor]:
        """Per-user and per-item precomputations; rebuilt after every training step."""
        if self._cache is None:
            g, n = self.gmf_dim, self.n_users
            weight = self.predict.weight[0]
            cache = {"bias": self.predict.bias[0]}
            if g:
                cache["gmf_users"] = self.table[:n, :g] * weight[:g]
                cache["gmf_items"] = self.table[n:, :g].contiguous()
            if self.mlp_dim:
                first = self.tower[0]
                w_user, w_item = first.weight[:, : self.mlp_dim], first.weight[:, self.mlp_dim :]
                cache["mlp_users"] = torch.addmm(first.bias, self.table[:n, g:], w_user.T)
                cache["mlp_items"] = self.table[n:, g:] @ w_item.T
                cache["mlp_out"] = weight[g:]
            self._cache = cache
        return self._cache

    @torch.no_grad()
    def score(self, users: torch.Tensor, items: torch.Tensor, scorer: DotScorer) -> torch.Tensor:
        """Logits [B, C] for users [B] against items [B, C], by the exact rewritings above."""
        t = self._tables()
        out = torch.empty(items.shape, dtype=self.table.dtype, device=items.device)
        rows_per_chunk = max(1, _SCORE_CHUNK // max(items.shape[1], 1))
        for start in range(0, len(users), rows_per_chunk):
            u = users[start : start + rows_per_chunk]
            j = items[start : start + rows_per_chunk]
            logits = t["bias"].expand(j.shape).clone()
            if self.gmf_dim:
                logits += scorer(t["gmf_users"][u], t["gmf_items"], j)
            if self.mlp_dim:
                h = torch.relu(t["mlp_users"][u].unsqueeze(1) + t["mlp_items"][j])
                for layer in self.tower[1:]:
                    h = torch.relu(layer(h))
                logits += h @ t["mlp_out"]
            out[start : start + rows_per_chunk] = logits
        return out


def _init_linear(layer: torch.nn.Linear, scheme: str, gen: torch.Generator) -> None:
    """Seeded initialisation (``torch.nn.Linear`` would draw from the global generator)."""
    fan_out, fan_in = layer.weight.shape
    with torch.no_grad():
        if scheme == "torch_default":  # kaiming_uniform(a=√5) and U(±1/√fan_in) bias
            bound = 1 / math.sqrt(fan_in)
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
            return
        if scheme == "lecun_uniform":  # Keras 1: U(±√(3/fan_in)), zero bias
            bound = math.sqrt(3 / fan_in)
        else:  # glorot_uniform
            bound = math.sqrt(6 / (fan_in + fan_out))
        layer.weight.uniform_(-bound, bound, generator=gen)
        layer.bias.zero_()


def _dropout(h: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Inverted dropout with a mask from the seeded generator (drawn on CPU)."""
    keep = torch.rand(h.shape, generator=gen) >= p
    return h * keep.to(h.device) / (1 - p)


class _Optimizer:
    """Updates a NeuMFNet: embedding rows by row-wise Adam, dense Adam or SGD; the tower and
    the prediction layer by Adam or SGD."""

    def __init__(self, net: NeuMFNet, params: NeuMFParams, kind: Literal["adam", "sgd"]):
        self.net, self.kind, self.lr = net, kind, params.learning_rate
        self.dense_table = kind == "adam" and params.embedding_optimizer == "dense"
        if kind == "sgd":
            self.layers: torch.optim.Optimizer = torch.optim.SGD(net.parameters(), lr=self.lr)
        else:
            self.layers = torch.optim.Adam(net.parameters(), lr=self.lr)
        if self.dense_table:
            self.table_param = torch.nn.Parameter(net.table, requires_grad=False)
            self.table_opt = torch.optim.Adam([self.table_param], lr=self.lr)
        elif kind == "adam":
            self.rowwise = RowwiseAdam(net.table, self.lr)

    def step(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """Apply the layer gradients (already in .grad) and ``grad`` for table ``rows``."""
        self.layers.step()
        self.layers.zero_grad(set_to_none=True)
        if self.kind == "sgd":
            self.net.table.index_add_(0, rows, grad, alpha=-self.lr)
        elif self.dense_table:
            full = torch.zeros_like(self.net.table)
            full.index_copy_(0, rows, grad)
            self.table_param.grad = full
            self.table_opt.step()
        else:
            self.rowwise.step(rows, grad)
        self.net.invalidate()


def neumf_step(
    net: NeuMFNet,
    opt: _Optimizer,
    users: torch.Tensor,
    items: torch.Tensor,
    labels: torch.Tensor,
    reg: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """One pointwise BCE step on (user, item, label) instances; returns the mean BCE.

    Without dropout and L2 (the defaults) the gradients are written out by hand
    (:func:`_analytic_step`): the same kernels autograd runs, in the same order, so the same
    bits, without its zero-filled slice and index gradients; otherwise autograd."""
    if reg == 0 and (net.params.dropout == 0 or not net.mlp_dim):
        return _analytic_step(net, opt, users, items, labels)
    return autograd_step(net, opt, users, items, labels, reg, gen)


def autograd_step(
    net: NeuMFNet,
    opt: _Optimizer,
    users: torch.Tensor,
    items: torch.Tensor,
    labels: torch.Tensor,
    reg: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """:func:`neumf_step` through autograd (the reference of the analytic step)."""
    batch = len(users)
    rows = torch.cat([users, items + net.n_users])
    unique, inverse = torch.unique(rows, return_inverse=True)
    leaf = net.table[unique].requires_grad_()
    gathered = leaf[inverse]
    user_rows, item_rows = gathered[:batch], gathered[batch:]
    logits = net.logits_from_rows(user_rows, item_rows, gen)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    loss = bce + reg / (2 * batch) * gathered.square().sum() if reg > 0 else bce
    loss.backward()
    opt.step(unique, leaf.grad)
    return bce.detach()


@torch.no_grad()
def _analytic_step(
    net: NeuMFNet,
    opt: _Optimizer,
    users: torch.Tensor,
    items: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """:func:`autograd_step` without dropout and L2, gradients by hand (tested bit-identical)."""
    batch, g, e = len(users), net.gmf_dim, net.mlp_dim
    rows = torch.cat([users, items + net.n_users])
    unique, inverse = torch.unique(rows, return_inverse=True)
    gathered = net.table[rows]  # the same rows as leaf[inverse], in one gather
    user_rows, item_rows = gathered[:batch], gathered[batch:]
    parts = []
    if g:
        parts.append(user_rows[:, :g] * item_rows[:, :g])
    activations = []
    if e:
        h = torch.cat([user_rows[:, g:], item_rows[:, g:]], dim=1)
        for layer in net.tower:
            activations.append(h)
            h = torch.relu(torch.nn.functional.linear(h, layer.weight, layer.bias))
        activations.append(h)
        parts.append(h)
    top = torch.cat(parts, dim=1)
    logits = torch.nn.functional.linear(top, net.predict.weight, net.predict.bias).squeeze(1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    # d mean-BCE / d logit = (σ(x) − y)/B, then each layer as AddmmBackward/ReluBackward do.
    d_logits = (torch.sigmoid(logits) - labels).div_(batch).unsqueeze(1)
    net.predict.weight.grad = d_logits.t().mm(top)
    net.predict.bias.grad = d_logits.sum(0)
    d_top = d_logits.mm(net.predict.weight)
    d_rows = torch.empty_like(gathered)
    if g:
        d_gmf = d_top[:, :g]
        torch.mul(d_gmf, item_rows[:, :g], out=d_rows[:batch, :g])
        torch.mul(d_gmf, user_rows[:, :g], out=d_rows[batch:, :g])
    if e:
        d_h = d_top[:, g:]
        for index in range(len(net.tower) - 1, -1, -1):
            layer = net.tower[index]
            d_pre = torch.ops.aten.threshold_backward(d_h, activations[index + 1], 0)
            layer.weight.grad = d_pre.t().mm(activations[index])
            layer.bias.grad = d_pre.sum(0)
            d_h = d_pre.mm(layer.weight)
        d_rows[:batch, g:] = d_h[:, :e]
        d_rows[batch:, g:] = d_h[:, e:]
    grad = torch.zeros(len(unique), g + e, dtype=d_rows.dtype, device=d_rows.device)
    grad.index_put_((inverse,), d_rows, accumulate=True)
    opt.step(unique, grad)
    return bce


def train_neumf_net(
    net: NeuMFNet,
    users: torch.Tensor,
    items: torch.Tensor,
    sampler: NegativeSampler,
    params: NeuMFParams,
    optimizer: Literal["adam", "sgd"],
    gen: torch.Generator,
    validate: Callable[[], float],
    log: Callable[[EpochLog], None],
    stage: str,
    domain: str | None = None,
) -> FitSummary:
    """Pointwise training with ``num_negatives`` fresh negatives per positive every epoch,
    positives and negatives shuffled together, and early stopping on ``validate()``."""
    device = net.table.device
    opt = _Optimizer(net, params, optimizer)
    k = params.num_negatives
    n = len(users)
    inst_users = users.repeat(1 + k)
    labels = torch.cat([torch.ones(n), torch.zeros(k * n)]).to(device)
    total = (1 + k) * n

    def train_epoch(_epoch: int) -> dict[str, float]:
        negatives = sampler.sample(inst_users[n:], gen)
        inst_items = torch.cat([items, negatives])
        order = torch.randperm(total, generator=gen)
        ep_users, ep_items = inst_users[order].to(device), inst_items[order].to(device)
        ep_labels = labels[order.to(device)]
        net.train()
        loss_sum = torch.zeros((), device=device)
        for start in range(0, total, params.batch_size):
            end = start + params.batch_size
            loss = neumf_step(
                net,
                opt,
                ep_users[start:end],
                ep_items[start:end],
                ep_labels[start:end],
                params.reg,
                gen,
            )
            loss_sum += loss * (min(end, total) - start)
        net.eval()
        return {"bce_loss": float(loss_sum) / total}

    return run_epochs(
        train_epoch,
        validate,
        net.state,
        net.load,
        max_epochs=params.max_epochs,
        patience=params.patience,
        eval_every=params.eval_every,
        log=log,
        stage=stage,
        domain=domain,
    )


def fuse_pretrained(
    gmf: NeuMFNet, mlp: NeuMFNet, params: NeuMFParams, gen: torch.Generator
) -> NeuMFNet:
    """NeuMF initialised from pretrained GMF and MLP (NCF ``load_pretrain_model``): both
    embedding tables and the tower copied, h = [0.5·h_G; 0.5·h_M], b = 0.5·(b_G + b_M)."""
    n_items = gmf.table.shape[0] - gmf.n_users
    net = NeuMFNet(gmf.n_users, n_items, params, "neumf", gen).to_device(gmf.table.device)
    with torch.no_grad():
        net.table.copy_(torch.cat([gmf.table, mlp.table], dim=1))
        for target, source in zip(net.tower, mlp.tower, strict=True):
            target.load_state_dict(source.state_dict())
        net.predict.weight.copy_(0.5 * torch.cat([gmf.predict.weight, mlp.predict.weight], 1))
        net.predict.bias.copy_(0.5 * (gmf.predict.bias + mlp.predict.bias))
    net.eval()
    return net


@register
class NeuMF(Method):
    """Neural collaborative filtering, one model per domain: a generalised-MF branch and an MLP
    tower over user and item embeddings, fused by a linear layer and trained with binary
    cross-entropy on sampled negatives. Scores are logits; each domain's model stops early on
    its validation NDCG@10.

    GMF branch p_u ⊙ q_j and an MLP tower over [p_u; q_j] (ReLU, halving widths), fused by a
    linear prediction layer; pointwise binary cross-entropy with ``num_negatives`` uniform
    negatives per positive outside the user's training items, redrawn every epoch; embeddings
    N(0, 0.01²), prediction layer LeCun-uniform; Adam 1e-3, batch 2048 instances, m = 128.

    Reconstruction decisions ([RECON], each a parameter):
      * sizes under m = 128: GMF 128, MLP 128 per side, tower 256→128→64, prediction 192→1;
        dropout 0 (RecBole 0.1); tower Linear init PyTorch default (NCF: Keras Glorot).
      * ``embedding_optimizer`` = rowwise: Adam on the rows a batch touches (SparseAdam
        semantics, like BPRMF here) rather than dense Adam over the whole tables.
      * ``pretrain`` = off (the UCLR paper trains everything with Adam 1e-3). When on, GMF and
        MLP are trained separately, each with early stopping, and fused as in NCF; the fused
        model is then trained with ``finetune_optimizer`` (Adam; NCF's paper used SGD).
      * ``max_epochs`` = 200 per stage, ``patience`` = 10 evaluations (§1.3); selection on the
        domain's validation NDCG@10 (NCF selected on HR@10).
      * Users with no pair in a domain keep their random embeddings: finite, near-chance scores.

    References: hexiangnan/neural_collaborative_filtering ``NeuMF.py`` (``get_model``,
    ``load_pretrain_model``, ``get_train_instances``), ``GMF.py``, ``MLP.py``; RecBole
    ``recbole/model/general_recommender/neumf.py`` (BCEWithLogits, ``load_pretrain``).
    """

    kind = "neumf"
    Params = NeuMFParams
    family = "single-domain"
    display_name = "NeuMF"
    paper = 'He et al., "Neural Collaborative Filtering", WWW 2017'
    version = "1"

    @classmethod
    def quick_params(cls) -> NeuMFParams:
        return NeuMFParams(
            gmf_size=8,
            mlp_embedding_size=8,
            mlp_layers=(8, 4),
            batch_size=512,
            max_epochs=3,
            patience=2,
        )

    def fit(self, data: TrainingData, ctx: FitContext) -> FitSummary:
        p: NeuMFParams = self.params  # type: ignore[assignment]
        self._scorer = DotScorer()
        self.nets: dict[str, NeuMFNet] = {}
        summaries: dict[str, FitSummary] = {}
        notes: dict[str, dict] = {}
        for index, domain in enumerate(data.domains):
            gen = seeded_generator(ctx.seed, index)
            n_items = self.n_items[domain]
            net = NeuMFNet(self.n_users, n_items, p, "neumf", gen).to_device(ctx.device)
            self.nets[domain] = net.eval()
            users, items = data.users[domain].cpu(), data.items[domain].cpu()
            if len(users) == 0:
                continue
            sampler = NegativeSampler(users, items, n_items)
            if p.pretrain:
                pretrained = {}
                for branch in ("gmf", "mlp"):
                    part = NeuMFNet(self.n_users, n_items, p, branch, gen).to_device(ctx.device)
                    s = self._train(part, domain, users, items, sampler, gen, ctx, "adam")
                    pretrained[branch] = part
                    notes[f"{domain}/{branch}"] = {
                        "epochs": s.epochs,
                        "best_epoch": s.best_epoch,
                        "best_valid": s.best_valid,
                    }
                net = fuse_pretrained(pretrained["gmf"], pretrained["mlp"], p, gen)
            optimizer = p.finetune_optimizer if p.pretrain else "adam"
            s = self._train(net, domain, users, items, sampler, gen, ctx, optimizer)
            summaries[domain] = s
            notes[domain] = {"epochs": s.epochs, "best_epoch": s.best_epoch}
        return FitSummary(
            epochs=sum(s.epochs for s in summaries.values()),
            best_epoch=max((s.best_epoch for s in summaries.values()), default=0),
            best_valid=sum(s.best_valid for s in summaries.values()) / max(len(summaries), 1),
            notes=notes,
        )

    def _train(
        self,
        net: NeuMFNet,
        domain: str,
        users: torch.Tensor,
        items: torch.Tensor,
        sampler: NegativeSampler,
        gen: torch.Generator,
        ctx: FitContext,
        optimizer: Literal["adam", "sgd"],
    ) -> FitSummary:
        """Train ``net`` as the domain's scorer (validation scores whatever net is training)."""
        self.nets[domain] = net
        stage = "neumf" if net.branch == "neumf" else f"neumf_pretrain_{net.branch}"
        return train_neumf_net(
            net,
            users,
            items,
            sampler,
            self.params,  # type: ignore[arg-type]
            optimizer,
            gen,
            lambda: ctx.validate(self.score, [domain]).get(domain, 0.0),
            ctx.log,
            stage,
            domain,
        )

    def score(self, users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
        return self.nets[domain].score(users, items, self._scorer)

    def score_all(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        items = torch.arange(self.n_items[domain], device=users.device)
        return self.score(users, domain, items.expand(len(users), -1))
