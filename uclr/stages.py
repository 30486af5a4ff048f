"""Stages B and C of UCLR: the contrastive autoencoder over the frozen global users, and the
per-domain LoRA fine-tuning (methods.md §2.3, §2.4).

Each stage is a small trainer object exposing ``train_epoch`` / ``validate`` / ``get_state`` /
``set_state`` for :func:`methods.training.run_epochs`, so the benchmark can time one epoch of
either directly. Every random stream comes from ``seeded_generator(seed, salt…)`` with a salt per
stage (and per domain in stage C), so a stage's result never depends on whether the stages
before it were computed or taken from the stage cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from methods.base import EpochLog, FitContext, FitSummary, TrainingData
from methods.scoring import DotScorer
from methods.training import NegativeSampler, RowwiseAdam, run_epochs, seeded_generator
from uclr.autoencoder import (
    CollaborativeAutoencoder,
    cosine_similarity_matrix,
    dual_stream,
    mask_embeddings,
    reconstruction_loss,
    row_keep_mask,
    row_masked_dual_stream,
)
from uclr.lora import LoRAUserTable
from uclr.params import UCLRParams
from uclr.pretrain import PGEResult, domain_validator
from uclr.temperature import (
    TemperatureConfig,
    UserTemperatures,
    fixed_temperature_loss,
    margins,
)

__all__ = [
    "AutoencoderResult",
    "AutoencoderStage",
    "CombinedLoss",
    "LoRAStage",
    "Mode",
    "UserStream",
    "activity_groups",
    "stage_b_schedule",
]

#: ``rec``: single-stream reconstruction only (PGE+AE); ``cl``: dual stream, one global τ
#: (PGE+CL-AE); ``ucl``: dual stream, per-user τ by iSogCLR (PGE+UCL-AE and UCLR).
Mode = Literal["rec", "cl", "ucl"]
STAGE_B_SALT = 2001
STAGE_C_SALT = 3001
#: Anchor rows per block of stage C's contrastive term (a [256, B] block stays in cache).
CONTRASTIVE_CHUNK = 256
Log = Callable[[EpochLog], None]


def activity_groups(data: TrainingData, n_groups: int = 5) -> torch.Tensor:
    """Activity group per user (0 = least active) by rank of total training interactions,
    for the temperature-by-activity curves (paper Fig. 5)."""
    counts = sum(data.counts_per_user(d).cpu() for d in data.domains)
    order = torch.argsort(counts, stable=True)
    groups = torch.empty(data.n_users, dtype=torch.long)
    groups[order] = torch.arange(data.n_users) * n_groups // max(data.n_users, 1)
    return groups


class UserStream:
    """Batches of users without replacement, a fresh permutation whenever one is used up.

    Near-equal batches (``tensor_split``) so no batch is too small to have negatives."""

    def __init__(self, n_users: int, batch_size: int, gen: torch.Generator):
        self.n_users, self.gen = n_users, gen
        self.n_batches = max(1, math.ceil(n_users / batch_size))
        self._pending: list[torch.Tensor] = []

    def epoch(self) -> tuple[torch.Tensor, ...]:
        return torch.tensor_split(torch.randperm(self.n_users, generator=self.gen), self.n_batches)

    def next(self) -> torch.Tensor:
        if not self._pending:
            self._pending = list(self.epoch())
        return self._pending.pop(0)


class CombinedLoss:
    """L_combined = L_con + α·L_rec of Eq. 5 on one batch of user rows (or L_rec alone for
    ``rec``). ``x`` is the encoder input (and the generative stream's before masking)."""

    def __init__(
        self,
        mode: Mode,
        p: UCLRParams,
        temperatures: UserTemperatures | None,
        gen: torch.Generator,
        chunk: int | None = None,
        share_masked_pass: bool = True,
    ):
        """``chunk``: for ``ucl``, compute the contrastive term in blocks of that many anchor
        rows without forming the [B, B] similarity matrix
        (:meth:`UserTemperatures.chunked_loss`; stage C), and with a 'row' mask share the
        masked stream's pass with the unmasked one (:func:`row_masked_dual_stream`). None: the
        full-matrix, two-stream path that stage B's published results were computed with.
        ``share_masked_pass=False`` keeps two streams with ``chunk`` (version 2's stage C, the
        reference of ``benchmarks/uclr_speed.py --stage-c-reference``)."""
        if mode == "ucl" and temperatures is None:
            raise ValueError("mode 'ucl' needs per-user temperatures")
        self.mode, self.p, self.temperatures, self.gen = mode, p, temperatures, gen
        self.chunk, self.share_masked_pass = chunk, share_masked_pass

    def __call__(
        self,
        ae: CollaborativeAutoencoder,
        x: torch.Tensor,
        target: torch.Tensor,
        users: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.p
        if self.mode == "rec":
            rec = (ae(x) - target).square().sum(1).mean()
            return rec, {"loss_rec": rec.detach()}
        if self.chunk is not None and self.share_masked_pass and p.ae_mask_mode == "row":
            # Stage C: the masked stream shares the unmasked pass (B + 1 rows, not 2B).
            keep = row_keep_mask(x.shape[0], p.ae_mask_ratio, self.gen)
            streams = row_masked_dual_stream(ae, x, keep)
        else:
            masked = mask_embeddings(x, p.ae_mask_ratio, p.ae_mask_mode, self.gen)
            streams = dual_stream(ae, x, masked)
        rec = reconstruction_loss(streams.x_hat, streams.x_hat_masked, target)
        parts: dict[str, torch.Tensor] = {}
        if self.mode == "ucl" and self.chunk is not None:
            assert self.temperatures is not None
            # Normalised once; each direction reuses the same rows (no [B, B] tensor).
            z = F.normalize(streams.z, dim=1, eps=1e-8)
            z_masked = F.normalize(streams.z_masked, dim=1, eps=1e-8)
            pairs = [(z, z_masked), (z_masked, z)] if p.ae_symmetric else [(z, z_masked)]
            con, stats = self.temperatures.chunked_loss(pairs, users, self.chunk)
            parts.update({k: v.detach() for k, v in stats.items()})
            parts["loss_con"] = con.detach()
            parts["loss_rec"] = rec.detach()
            return con + p.ae_alpha * rec, parts
        sim = cosine_similarity_matrix(streams.z, streams.z_masked)
        sims = [sim, sim.T] if p.ae_symmetric else [sim]
        if self.mode == "cl":
            con = torch.stack([fixed_temperature_loss(margins(s), p.ae_cl_tau) for s in sims])
            con = con.mean()
        else:
            assert self.temperatures is not None
            con, stats = self.temperatures.loss(sims, users)
            parts.update({k: v.detach() for k, v in stats.items()})
        parts["loss_con"] = con.detach()
        parts["loss_rec"] = rec.detach()
        return con + p.ae_alpha * rec, parts


def _accumulate(totals: dict[str, torch.Tensor], parts: dict[str, torch.Tensor]) -> None:
    for name, value in parts.items():
        totals[name] = totals.get(name, 0.0) + value


def _make_autoencoder(p: UCLRParams, device: torch.device) -> CollaborativeAutoencoder:
    return CollaborativeAutoencoder(p.embedding_size, p.ae_hidden, p.ae_latent).to(device)


def stage_b_schedule(p: UCLRParams, n_users: int) -> tuple[int, int]:
    """(max_epochs, eval_every) of stage B, §2.3.7: up to ae_max_epochs epochs or
    ae_max_steps steps and validation every ae_eval_every_epochs epochs or
    ae_eval_every_steps steps, whichever is longer (Amazon: 200 epochs, every 5; Douban, one
    batch per epoch: 2,000 steps, every 50)."""
    steps_per_epoch = max(1, math.ceil(n_users / p.batch_size))
    max_epochs = max(p.ae_max_epochs, math.ceil(p.ae_max_steps / steps_per_epoch))
    eval_every = max(p.ae_eval_every_epochs, math.ceil(p.ae_eval_every_steps / steps_per_epoch))
    return max_epochs, min(eval_every, max_epochs)


@dataclass(frozen=True)
class AutoencoderResult:
    """Stage B's output: the selected autoencoder weights and temperature state (read-only)."""

    mode: Mode
    ae_state: dict[str, torch.Tensor]
    temperatures: UserTemperatures | None
    summary: FitSummary

    def autoencoder(self, p: UCLRParams, device: torch.device) -> CollaborativeAutoencoder:
        ae = _make_autoencoder(p, device)
        ae.load_state_dict(self.ae_state)
        return ae.eval()

    def user_vectors(self, pge: PGEResult, p: UCLRParams) -> torch.Tensor:
        """Scoring vectors g(f(E_u)) of every user (E_u itself for score_path='raw')."""
        if p.score_path == "raw":
            return pge.users
        with torch.no_grad():
            return self.autoencoder(p, pge.users.device)(pge.users)


class AutoencoderStage:
    """Stage B over the frozen E: one epoch is one pass over all users in near-equal batches."""

    def __init__(
        self,
        pge: PGEResult,
        mode: Mode,
        p: UCLRParams,
        ctx: FitContext,
        data: TrainingData,
        groups: torch.Tensor | None = None,
    ):
        self.pge, self.mode, self.p = pge, mode, p
        self.device = pge.users.device
        self.n_users = pge.users.shape[0]
        init_gen = seeded_generator(ctx.seed, STAGE_B_SALT, 0)
        self.gen = seeded_generator(ctx.seed, STAGE_B_SALT, 1)
        self.ae = _make_autoencoder(p, self.device)
        self.ae.reset_parameters(init_gen)
        self.temperatures = (
            UserTemperatures(
                self.n_users,
                TemperatureConfig.from_params(p),
                self.device,
                directions=2 if p.ae_symmetric else 1,
            )
            if mode == "ucl"
            else None
        )
        self.objective = CombinedLoss(mode, p, self.temperatures, self.gen)
        self.opt = torch.optim.Adam(self.ae.parameters(), lr=p.learning_rate)
        self.users = UserStream(self.n_users, p.batch_size, self.gen)
        self.groups = None if groups is None else groups.to(self.device)
        self._validate = domain_validator(data, ctx)

    def train_epoch(self, _epoch: int = 0) -> dict[str, float]:
        self.ae.train()
        totals: dict[str, torch.Tensor] = {}
        batches = self.users.epoch()
        for batch in batches:
            users = batch.to(self.device)
            x = self.pge.users[users]
            loss, parts = self.objective(self.ae, x, x, users)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            _accumulate(totals, {"loss": loss.detach(), **parts})
        out = {k: float(v) / len(batches) for k, v in totals.items()}
        if self.temperatures is not None:
            out.update(self.temperatures.summary(self.groups))
        return out

    def user_vectors(self) -> torch.Tensor:
        if self.p.score_path == "raw":
            return self.pge.users
        self.ae.eval()
        with torch.no_grad():
            return self.ae(self.pge.users)

    def validate(self) -> float:
        return self._validate(self.user_vectors(), self.pge.items)

    def get_state(self) -> dict[str, torch.Tensor]:
        state = {f"ae.{k}": v for k, v in self.ae.state_dict().items()}
        if self.temperatures is not None:
            state |= {f"tau.{k}": v for k, v in self.temperatures.state().items()}
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        self.ae.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("ae.")})
        if self.temperatures is not None:
            self.temperatures.load({k[4:]: v for k, v in state.items() if k.startswith("tau.")})

    def run(self, log: Log) -> AutoencoderResult:
        max_epochs, eval_every = stage_b_schedule(self.p, self.n_users)
        summary = run_epochs(
            self.train_epoch,
            self.validate,
            self.get_state,
            self.set_state,
            max_epochs=max_epochs,
            patience=self.p.patience,
            eval_every=eval_every,
            log=log,
            stage="cdcae",
        )
        return AutoencoderResult(
            mode=self.mode,
            ae_state={k: v.detach().clone() for k, v in self.ae.state_dict().items()},
            temperatures=None if self.temperatures is None else self.temperatures.copy(),
            summary=summary,
        )


class LoRAStage:
    """Stage C for one domain: W = W0 + s·BA, trainable domain items and autoencoder, loss
    L_ft-bpr (Eq. 6, scored through the autoencoder, reading R1) + L_combined on an
    independent batch of users from all of U (Eq. 7)."""

    def __init__(
        self,
        domain: str,
        domain_index: int,
        pge: PGEResult,
        stage_b: AutoencoderResult,
        p: UCLRParams,
        ctx: FitContext,
        data: TrainingData,
        groups: torch.Tensor | None = None,
    ):
        if stage_b.temperatures is None:
            raise ValueError("stage C continues the per-user temperatures of stage B ('ucl')")
        self.domain, self.p, self.ctx = domain, p, ctx
        self.device = pge.users.device
        self.gen = seeded_generator(ctx.seed, STAGE_C_SALT, domain_index)
        self.table = LoRAUserTable(pge.users, p.lora_rank, self.gen, p.lora_alpha, p.lora_init_std)
        self.ae = stage_b.autoencoder(p, self.device)
        self.ae.requires_grad_(p.lora_finetune_ae)
        # A plain tensor: its rows are updated in place by row-wise Adam, outside autograd.
        self.items = pge.domain_items(domain).clone()
        self.temperatures = stage_b.temperatures.copy()
        self.objective = CombinedLoss("ucl", p, self.temperatures, self.gen, CONTRASTIVE_CHUNK)
        dense = [self.table.lora_B, self.table.lora_A]
        if p.lora_finetune_ae:
            dense += list(self.ae.parameters())
        self.opt = torch.optim.Adam(dense, lr=p.learning_rate)
        # Items get row-wise (lazy) Adam, as in stage A: only the rows a batch touches move
        # (torch.optim.SparseAdam's semantics without its coalesce and sparse-mask passes).
        self.item_opt = RowwiseAdam(self.items, p.learning_rate) if p.lora_finetune_items else None
        self.train_users = data.users[domain].cpu()
        self.train_items = data.items[domain].cpu()
        self.sampler = NegativeSampler(self.train_users, self.train_items, data.n_items[domain])
        self.users = UserStream(pge.users.shape[0], p.batch_size, self.gen)
        self.groups = None if groups is None else groups.to(self.device)

    def _score_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        return self.ae(rows) if self.p.score_path == "ae_output" else rows

    def train_epoch(self, _epoch: int = 0) -> dict[str, float]:
        p = self.p
        self.ae.train()
        n = len(self.train_users)
        order = torch.randperm(n, generator=self.gen)
        negatives = self.sampler.sample(self.train_users[order], self.gen).to(self.device)
        users_all = self.train_users[order].to(self.device)
        pos_all = self.train_items[order].to(self.device)
        totals: dict[str, torch.Tensor] = {}
        steps = 0
        for start in range(0, n, p.batch_size):
            u = users_all[start : start + p.batch_size]
            j, k = pos_all[start : start + p.batch_size], negatives[start : start + p.batch_size]
            w_u = self.table(u)
            vec = self._score_vectors(w_u)
            if self.item_opt is not None:
                # The batch's distinct item rows as one leaf: its gradient is summed per row.
                rows, inverse = torch.unique(torch.cat([j, k]), return_inverse=True)
                leaf = self.items[rows].requires_grad_()
                item_j, item_k = leaf[inverse].chunk(2)
            else:
                item_j, item_k = self.items[j], self.items[k]
            bpr = F.softplus(-(vec * (item_j - item_k)).sum(1)).mean()
            reg = (w_u.square().sum() + item_j.square().sum() + item_k.square().sum()) * (
                p.lora_reg / (2 * len(u))
            )
            batch = self.users.next().to(self.device)
            x = self.table(batch)
            target = x if p.lora_rec_target == "W" else self.table.base[batch]
            combined, parts = self.objective(self.ae, x, target, batch)
            loss = bpr + reg + combined
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.item_opt is not None:
                self.item_opt.step(rows, leaf.grad)
            _accumulate(totals, {"loss": loss.detach(), "loss_bpr": bpr.detach(), **parts})
            steps += 1
        out = {k: float(v) / max(steps, 1) for k, v in totals.items()}
        out.update(self.temperatures.summary(self.groups))
        return out

    def user_vectors(self) -> torch.Tensor:
        self.ae.eval()
        with torch.no_grad():
            return self._score_vectors(self.table.merged())

    def item_table(self) -> torch.Tensor:
        return self.items

    def validate(self) -> float:
        vectors, items, scorer = self.user_vectors(), self.item_table(), DotScorer()

        def score(users: torch.Tensor, _domain: str, cands: torch.Tensor) -> torch.Tensor:
            return scorer(vectors[users], items, cands)

        return self.ctx.validate(score, [self.domain]).get(self.domain, 0.0)

    def get_state(self) -> dict[str, torch.Tensor]:
        state = {
            "lora_B": self.table.lora_B,
            "lora_A": self.table.lora_A,
            "items": self.items,
        }
        state |= {f"ae.{k}": v for k, v in self.ae.state_dict().items()}
        state |= {f"tau.{k}": v for k, v in self.temperatures.state().items()}
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.table.lora_B.copy_(state["lora_B"])
            self.table.lora_A.copy_(state["lora_A"])
            self.items.copy_(state["items"])
        self.ae.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("ae.")})
        self.temperatures.load({k[4:]: v for k, v in state.items() if k.startswith("tau.")})

    def run(self, log: Log) -> FitSummary:
        return run_epochs(
            self.train_epoch,
            self.validate,
            self.get_state,
            self.set_state,
            max_epochs=self.p.lora_max_epochs,
            patience=self.p.patience,
            eval_every=self.p.lora_eval_every,
            log=log,
            stage="lora",
            domain=self.domain,
        )
