"""CAT-ART (Li et al., WSDM'23 "One for All, All for One"), from the official code (methods.md §8).

Three stages: per-domain BPR-MF (stage 0); CAT, a contrastive autoencoder over each user's stack
of frozen domain embeddings, trained once (stage 1); ART, one model per target domain that adds
an attention-weighted transfer of the other domains' embeddings and the CAT code to the target
user embedding (stage 2).
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from methods._xdomain import EmbeddingTable, init_module_, seeded_dropout
from methods.base import EpochLog, FitContext, FitSummary, Method, MethodParams, TrainingData
from methods.bprmf import BPRMFParams, MFTables, train_bpr_tables
from methods.registry import register
from methods.scoring import DotScorer
from methods.training import EarlyStopping, NegativeSampler, run_epochs, seeded_generator

__all__ = ["CATART", "CATARTParams", "masked_stacks", "symmetric_info_nce"]


class CATARTParams(MethodParams):
    embedding_size: int = Field(128, ge=1, description="m; the paper fixes 128 (code: 64)")
    batch_size: int = Field(2048, ge=1, description="all stages (code: 2048; cross 8129)")
    learning_rate: float = Field(1e-3, gt=0, description="Adam, every stage")
    max_epochs: int = Field(200, ge=1, description="stage 2 (ART) epochs per target domain")
    patience: int = Field(10, ge=1, description="stages 0 and 2: validations without gain")
    eval_every: int = Field(1, ge=1, description="stages 0 and 2: validate every k epochs")
    # Stage 0: single-domain MF (CAT-ART's PureMF).
    mf_max_epochs: int = Field(200, ge=1, description="stage 0 epochs per domain")
    mf_reg: float = Field(
        1e-4,
        ge=0,
        description="PureMF weight_decay: λ/2·(‖u‖²+‖i‖²+‖j‖²)/B, the same form as BPRMF's reg",
    )
    mf_init: Literal["xavier_normal", "normal"] = Field(
        "xavier_normal", description="[RECON] code: nn.Embedding default N(0, 1)"
    )
    mf_init_std: float = Field(0.01, gt=0, description="std for mf_init='normal'")
    # Stage 1: CAT (contrastive autoencoder), shared by all target domains.
    cat_max_epochs: int = Field(200, ge=1, description="stage 1 passes over the users")
    cat_patience: int = Field(2, ge=1, description="code: patience 2 on validation loss")
    cat_valid_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="[RECON] fixed random share of users whose stacks give the validation loss;"
        " 0 trains cat_max_epochs without early stopping",
    )
    cat_loss: Literal["full", "rec"] = Field(
        "full", description="code --encoder_loss: full loss, or rec1 only"
    )
    temperature: float = Field(0.1, gt=0, description="cosine / temperature in the InfoNCE")
    contrastive_weight: float = Field(
        0.2, ge=0, description="weight of the InfoNCE term in the CAT loss (code: 0.2)"
    )
    reconstruction_weight: float = Field(0.4, ge=0, description="rec1: Dec(Enc(orig)) vs orig")
    masked_reconstruction_weight: float = Field(
        0.4, ge=0, description="rec2: Dec(Enc(masked)) vs orig"
    )
    pad_missing: bool = Field(
        True,
        description="[RECON] the pad also replaces domains where the user has no training"
        " interactions (code's sparse-user path), in stage 1 and in ART's CAT input",
    )
    pad_init: Literal["matched", "standard_normal"] = Field(
        "matched",
        description="[RECON] pad ~ N(0, std of the frozen embeddings); code: nn.Embedding N(0,1)",
    )
    # Stage 2: ART, one model per target domain.
    knowledge: Literal["both", "d_sp", "d_in"] = Field(
        "both", description="z = E^t + a (d_sp) + g (d_in); CAT-ART is 'both'"
    )
    attention_dropout: float = Field(0.1, ge=0, lt=1, description="on attention weights")
    fix_user: bool = Field(False, description="freeze the target user embedding (code default)")
    fix_item: bool = Field(False, description="freeze the target item table (code default)")
    embedding_optimizer: Literal["lazy_adam", "adam"] = Field(
        "lazy_adam",
        description="[RECON] tables updated on touched rows (harness convention) or by dense"
        " Adam over the whole table (the code's torch.optim.Adam)",
    )


def masked_stacks(
    frozen: torch.Tensor,
    present: torch.Tensor,
    masked: torch.Tensor | None,
    pad: torch.Tensor,
    pad_missing: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(orig, masked) stacks [B, D, m] for CAT.

    ``orig`` is ``frozen`` with the pad in every domain the user has no history in (when
    ``pad_missing``); ``masked`` additionally has the pad in domain ``masked[b]`` of row b.
    ``torch.where`` keeps the pad differentiable.
    """
    missing = ~present if pad_missing else torch.zeros_like(present)
    orig = torch.where(missing.unsqueeze(2), pad, frozen)
    if masked is None:
        return orig, orig
    hide = missing | F.one_hot(masked, frozen.shape[1]).bool()
    return orig, torch.where(hide.unsqueeze(2), pad, frozen)


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row i of ``a`` matches row i of ``b`` among all rows and vice versa; the two cross-
    entropies are averaged per row, then over rows (code: contrastive_loss_sample_N)."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    labels = torch.arange(len(a), device=a.device)
    forward = F.cross_entropy(logits, labels, reduction="none")
    backward = F.cross_entropy(logits.T, labels, reduction="none")
    return ((forward + backward) / 2).mean()


class _CAT(nn.Module):
    """Encoder D·m → 5m → 3m → m and mirrored decoder, PReLU between (code: MultiRecommendBase4)."""

    def __init__(self, n_domains: int, dim: int, pad: torch.Tensor):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_domains * dim, 5 * dim),
            nn.PReLU(),
            nn.Linear(5 * dim, 3 * dim),
            nn.PReLU(),
            nn.Linear(3 * dim, dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(dim, 3 * dim),
            nn.PReLU(),
            nn.Linear(3 * dim, 5 * dim),
            nn.PReLU(),
            nn.Linear(5 * dim, n_domains * dim),
        )
        self.pad = nn.Parameter(pad)


class _ARTNet(nn.Module):
    """ART's dense layers for one target: per-source adapters, single-head attention, Linear_g."""

    def __init__(self, n_sources: int, dim: int):
        super().__init__()
        self.adapt = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_sources))
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.general = nn.Linear(dim, dim)


class _ART:
    """One target domain's model: trainable copies of every domain's user table, the target item
    table, and the dense layers; z_u = E^t_u + a_u + g_u."""

    def __init__(
        self,
        target: int,
        user_tables: list[torch.Tensor],
        item_table: torch.Tensor,
        general: torch.Tensor,
        p: CATARTParams,
        gen: torch.Generator,
        device: torch.device,
    ):
        n_domains = len(user_tables)
        self.target, self.p, self.gen = target, p, gen
        self.n_users, self.dim = user_tables[0].shape
        self.sources = [k for k in range(n_domains) if k != target]
        self.offsets = torch.arange(n_domains, device=device) * self.n_users
        lazy = p.embedding_optimizer == "lazy_adam"
        self.users = EmbeddingTable(torch.cat(user_tables), p.learning_rate, (0.9, 0.999), lazy)
        self.items = EmbeddingTable(item_table, p.learning_rate, (0.9, 0.999), lazy)
        self.general = general
        self.net = init_module_(_ARTNet(len(self.sources), self.dim), gen).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=p.learning_rate, weight_decay=0.0)

    def user_vectors(self, users: torch.Tensor, training: bool) -> torch.Tensor:
        index = users.unsqueeze(1) + self.offsets
        stack = self.users.gather(index) if training else self.users.lookup(index)
        target = stack[:, self.target]
        if self.p.fix_user:
            target = target.detach()
        z = target
        knowledge = self.p.knowledge
        if knowledge in ("both", "d_sp") and self.sources:
            transferred = torch.stack(
                [layer(stack[:, k]) for layer, k in zip(self.net.adapt, self.sources, strict=True)],
                1,
            )
            query = self.net.query(target).unsqueeze(1)  # [B, 1, m]
            keys, values = self.net.key(transferred), self.net.value(transferred)
            weights = torch.softmax(query @ keys.transpose(1, 2) / math.sqrt(self.dim), dim=-1)
            if training:
                weights = seeded_dropout(weights, self.p.attention_dropout, self.gen)
            z = z + self.net.out((weights @ values).squeeze(1))
        if knowledge in ("both", "d_in"):
            z = z + self.net.general(self.general[users])
        return z

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        return self.items.lookup(items) if self.p.fix_item else self.items.gather(items)

    def step(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """One BPR step (mean softplus, no L2: the code adds none in cross mode)."""
        z = self.user_vectors(users, training=True)
        x = (z * (self.item_rows(pos) - self.item_rows(neg))).sum(1)
        loss = F.softplus(-x).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.users.step()
        if self.p.fix_item:
            self.items.discard()
        else:
            self.items.step()
        return loss.detach()

    @torch.no_grad()
    def all_user_vectors(self, chunk: int = 65536) -> torch.Tensor:
        device = self.general.device
        return torch.cat(
            [
                self.user_vectors(
                    torch.arange(s, min(s + chunk, self.n_users), device=device), False
                )
                for s in range(0, self.n_users, chunk)
            ]
        )

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        out["users"], out["items"] = self.users.state(), self.items.state()
        return out

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.users.load(state["users"])
        self.items.load(state["items"])


@register
class CATART(Method):
    """Learns one user embedding shared by all domains and transfers it to each of them: per-
    domain MF first, then a contrastive autoencoder (CAT) over the user's stacked per-domain
    embeddings, then per target domain an attention module (ART) that mixes the other
    domains' embeddings into the target's. Each stage stops early on validation.

    CAT-ART, multi-target: one shared CAT, one ART per target domain.

    Reference: ``Chain123/CAT-ART`` @ 5170d67a — ``models.py`` (``PureMF``,
    ``MultiRecommendBase4`` = CAT-ART with ``--knowledge both``; attention from
    ``bert/model/attention``), ``loss_functions.py`` (``contrastive_loss_sample_N``,
    ``Similarity``), ``run_functions.py`` (``train_single_step_pre``: loss 0.2/0.4/0.4;
    ``train_single_step(cross=True)``: no L2), ``main_cross_pre.py`` (Adam, weight_decay 0,
    patience 2), ``utils/data.py`` (mask ``rand``: one domain uniformly per user).

    Decisions ([RECON] or harness conventions, all parameters):

    * m = 128, batch 2048, Adam 1e-3; stages 0 and 2 select on validation NDCG@10 (patience 10)
      instead of the code's validation BPR loss (patience 2).
    * Stage 0 reuses BPRMF's trainer: its ``reg`` is λ/2·Σ‖row‖²/B, exactly PureMF's
      ½(‖u‖²+‖i‖²+‖j‖²)/B × weight_decay, so ``mf_reg`` = 1e-4 maps one to one. Init
      Xavier-normal (code: N(0, 1)).
    * Stage 1 epoch = one pass over users with at least one training interaction (the code
      makes ~interactions-per-user passes over the target domain's users between evaluations);
      early stopping on the loss of a fixed random 10% of them (fixed masks), patience 2. The
      pad also fills domains without training history (``pad_missing``; False reproduces the
      code's ART input, which never pads and does not even load the pretrained pad), and is
      initialised at the scale of the frozen embeddings (``pad_init``). The reconstruction
      target is ``orig`` with the pad detached, so the pad learns as an input only.
    * Stage 2: the frozen encoder's code Enc(orig stack) is computed once (the code runs it under
      no_grad; no dropout), g_u = Linear_g(code). Keys/values Linear_k(E^k_u) from trainable
      copies of the stage-0 tables; query E^t_u; attention dropout 0.1 in training only. Tables
      are updated lazily by default (``embedding_optimizer``; code: dense Adam).
    """

    kind = "catart"
    Params = CATARTParams
    family = "cross-domain"
    display_name = "CAT-ART"
    paper = (
        'Li et al., "One for All, All for One: Learning and Transferring User Embeddings '
        'for Cross-Domain Recommendation", WSDM 2023'
    )
    version = "1"

    @classmethod
    def quick_params(cls) -> CATARTParams:
        return CATARTParams(
            embedding_size=8,
            batch_size=256,
            max_epochs=2,
            patience=1,
            mf_max_epochs=2,
            cat_max_epochs=2,
        )

    # ------------------------------------------------------------------ fit
    def fit(self, data: TrainingData, ctx: FitContext) -> FitSummary:
        p: CATARTParams = self.params  # type: ignore[assignment]
        device = ctx.device
        domains = data.domains
        self._domains = list(domains)
        self._scorer = DotScorer()
        counts = torch.stack([data.counts_per_user(d).to(device) for d in domains], 1)
        present = counts > 0  # [n_users, D]

        # Stage 0: per-domain MF.
        mf_params = BPRMFParams(
            embedding_size=p.embedding_size,
            batch_size=p.batch_size,
            learning_rate=p.learning_rate,
            reg=p.mf_reg,
            max_epochs=p.mf_max_epochs,
            patience=p.patience,
            eval_every=p.eval_every,
            init=p.mf_init,
            init_std=p.mf_init_std,
        )
        tables: list[MFTables] = []
        notes: dict = {"mf": {}, "art": {}}
        for index, domain in enumerate(domains):
            gen = seeded_generator(ctx.seed, 0, index)
            mf = MFTables(self.n_users, self.n_items[domain], mf_params, gen).to(device)
            tables.append(mf)
            users, items = data.users[domain].cpu(), data.items[domain].cpu()
            if len(users) == 0:
                continue

            def validate_mf(mf: MFTables = mf, domain: str = domain) -> float:
                def score(u: torch.Tensor, _d: str, it: torch.Tensor) -> torch.Tensor:
                    return self._scorer(mf.users[u], mf.items, it)

                return ctx.validate(score, [domain]).get(domain, 0.0)

            summary = train_bpr_tables(
                mf,
                users,
                items,
                NegativeSampler(users, items, self.n_items[domain]),
                mf_params,
                gen,
                validate=validate_mf,
                log=ctx.log,
                stage="catart-mf",
                domain=domain,
            )
            notes["mf"][domain] = {"epochs": summary.epochs, "best_epoch": summary.best_epoch}
        frozen = torch.stack([t.users.clone() for t in tables], 1)  # [n_users, D, m]

        # Stage 1: CAT.
        self.cat, notes["cat"] = self._train_cat(frozen, present, p, ctx)
        with torch.no_grad():
            general = torch.cat(
                [
                    self.cat.encoder(
                        masked_stacks(
                            frozen[s : s + 65536],
                            present[s : s + 65536],
                            None,
                            self.cat.pad,
                            p.pad_missing,
                        )[0]
                    )
                    for s in range(0, self.n_users, 65536)
                ]
            )

        # Stage 2: ART per target domain.
        self._user_vectors: dict[str, torch.Tensor] = {}
        self._item_tables: dict[str, torch.Tensor] = {}
        summaries = {}
        user_tables = [t.users.clone() for t in tables]
        for index, domain in enumerate(domains):
            gen = seeded_generator(ctx.seed, 2, index)
            art = _ART(index, user_tables, tables[index].items.clone(), general, p, gen, device)
            users, items = data.users[domain].cpu(), data.items[domain].cpu()
            if len(users):
                summaries[domain] = self._train_art(art, domain, users, items, gen, p, ctx)
                notes["art"][domain] = {
                    "epochs": summaries[domain].epochs,
                    "best_epoch": summaries[domain].best_epoch,
                }
            self._user_vectors[domain] = art.all_user_vectors()
            self._item_tables[domain] = art.items.state().clone()
        return FitSummary(
            epochs=sum(s.epochs for s in summaries.values()),
            best_epoch=max((s.best_epoch for s in summaries.values()), default=0),
            best_valid=sum(s.best_valid for s in summaries.values()) / max(len(summaries), 1),
            notes=notes,
        )

    def _train_cat(
        self, frozen: torch.Tensor, present: torch.Tensor, p: CATARTParams, ctx: FitContext
    ) -> tuple[_CAT, dict]:
        """Stage 1: symmetric InfoNCE + two reconstructions; early stop on held-out users."""
        device = frozen.device
        n_domains, dim = frozen.shape[1], frozen.shape[2]
        gen = seeded_generator(ctx.seed, 1)
        if p.pad_init == "matched":
            pad = torch.randn(dim, generator=gen) * float(frozen.std())
        else:
            pad = torch.randn(dim, generator=gen)
        cat = init_module_(_CAT(n_domains, dim, pad), gen).to(device)
        opt = torch.optim.Adam(cat.parameters(), lr=p.learning_rate, weight_decay=0.0)

        active = torch.nonzero(present.any(1).cpu()).squeeze(1)
        order = active[torch.randperm(len(active), generator=seeded_generator(ctx.seed, 1, 1))]
        n_valid = round(p.cat_valid_fraction * len(order))
        valid_users, train_users = order[:n_valid].to(device), order[n_valid:]
        valid_masks = torch.randint(
            n_domains, (n_valid,), generator=seeded_generator(ctx.seed, 1, 2)
        ).to(device)

        def losses(users: torch.Tensor, masked: torch.Tensor) -> dict[str, torch.Tensor]:
            orig, hidden = masked_stacks(
                frozen[users], present[users], masked, cat.pad, p.pad_missing
            )
            code, code_masked = cat.encoder(orig), cat.encoder(hidden)
            target = orig.detach().flatten(1)
            rec1 = F.mse_loss(cat.decoder(code), target)
            rec2 = F.mse_loss(cat.decoder(code_masked), target)
            contrastive = symmetric_info_nce(code, code_masked, p.temperature)
            if p.cat_loss == "full":
                total = (
                    p.contrastive_weight * contrastive
                    + p.reconstruction_weight * rec1
                    + p.masked_reconstruction_weight * rec2
                )
            else:
                total = rec1
            return {"loss": total, "contrastive": contrastive, "rec1": rec1, "rec2": rec2}

        def valid_loss() -> float:
            total = 0.0
            with torch.no_grad():
                for s in range(0, n_valid, p.batch_size):
                    users = valid_users[s : s + p.batch_size]
                    total += float(losses(users, valid_masks[s : s + p.batch_size])["loss"]) * len(
                        users
                    )
            return total / max(n_valid, 1)

        stopper = EarlyStopping(patience=p.cat_patience)
        epoch = 0
        for epoch in range(1, p.cat_max_epochs + 1):
            started = time.perf_counter()
            perm = train_users[torch.randperm(len(train_users), generator=gen)].to(device)
            masks = torch.randint(n_domains, (len(perm),), generator=gen).to(device)
            sums = dict.fromkeys(("loss", "contrastive", "rec1", "rec2"), 0.0)
            for s in range(0, len(perm), p.batch_size):
                part = losses(perm[s : s + p.batch_size], masks[s : s + p.batch_size])
                opt.zero_grad(set_to_none=True)
                part["loss"].backward()
                opt.step()
                for key, value in part.items():
                    sums[key] += float(value.detach()) * len(perm[s : s + p.batch_size])
            values = {k: v / max(len(perm), 1) for k, v in sums.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise FloatingPointError(f"catart-cat: non-finite {values} at epoch {epoch}")
            values["train_s"] = time.perf_counter() - started  # as run_epochs logs it
            stop = False
            if n_valid:
                started = time.perf_counter()
                values["valid_loss"] = valid_loss()
                values["valid_s"] = time.perf_counter() - started
                stop = stopper.update(epoch, -values["valid_loss"], cat.state_dict())
            ctx.log(EpochLog(stage="catart-cat", epoch=epoch, values=values))
            if stop:
                break
        if stopper.best_state:
            cat.load_state_dict(stopper.best_state)
        cat.eval()
        for param in cat.parameters():
            param.requires_grad_(False)
        return cat, {"epochs": epoch, "best_epoch": stopper.best_epoch if n_valid else epoch}

    def _train_art(
        self,
        art: _ART,
        domain: str,
        users: torch.Tensor,
        items: torch.Tensor,
        gen: torch.Generator,
        p: CATARTParams,
        ctx: FitContext,
    ) -> FitSummary:
        device = art.general.device
        sampler = NegativeSampler(users, items, self.n_items[domain])
        n = len(users)

        def train_epoch(_epoch: int) -> dict[str, float]:
            order = torch.randperm(n, generator=gen)
            neg = sampler.sample(users[order], gen).to(device)
            ep_users, ep_pos = users[order].to(device), items[order].to(device)
            total = torch.zeros((), device=device)
            for s in range(0, n, p.batch_size):
                e = s + p.batch_size
                loss = art.step(ep_users[s:e], ep_pos[s:e], neg[s:e])
                total += loss * (min(e, n) - s)
            return {"bpr_loss": float(total) / n}

        def score(u: torch.Tensor, _d: str, it: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self._scorer(art.user_vectors(u, False), art.items.state(), it)

        return run_epochs(
            train_epoch,
            lambda: ctx.validate(score, [domain]).get(domain, 0.0),
            art.state,
            art.load,
            max_epochs=p.max_epochs,
            patience=p.patience,
            eval_every=p.eval_every,
            log=ctx.log,
            stage="catart-art",
            domain=domain,
        )

    # ------------------------------------------------------------------ scoring
    def score(self, users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
        return self._scorer(self._user_vectors[domain][users], self._item_tables[domain], items)

    def score_all(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        return self._user_vectors[domain][users] @ self._item_tables[domain].T
