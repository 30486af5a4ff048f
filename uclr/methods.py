"""UCLR and its ablation ladder as registered methods (paper §4.5, Tables 4-5; methods.md §2.6).

===========  =============================================================  ==================
kind         trains                                                          scores with
===========  =============================================================  ==================
pge          stage A: global BPRMF over the union of domains                 E_u
pge_ae       + single-stream AE, reconstruction only                         g(f(E_u))
pge_cl_ae    + dual-stream AE, Eq. 3 with one global τ, + α·L_rec             g(f(E_u))
pge_ucl_ae   + dual-stream AE, per-user τ by iSogCLR, + α·L_rec (stage B)     g(f(E_u))
uclr         + per-domain LoRA fine-tuning (stage C)                         g_d(f_d(W^d_u))
===========  =============================================================  ==================

The score is the dot product of that user vector with the domain's item row (I_{off_d + j};
the fine-tuned I^d_j for uclr).

[RECON] decisions (each a field of :class:`uclr.params.UCLRParams`, default first):
A1 PGE negatives from all domains (``pge_neg``); A2 explicit ρ = 1 instead of the literal Eq. 3
(``tau_rho``, 'logn' = literal); A3 LoRA rank 8 (``lora_rank``); A4 scoring through the AE
output, reading R1 (``score_path``); A5/A6 items and AE trainable in stage C
(``lora_finetune_items``, ``lora_finetune_ae``); A7/A8 row masking at ratio 0.3
(``ae_mask_mode``, ``ae_mask_ratio``); encoder m→128→32, decoder mirrored, ReLU, no BatchNorm
or dropout; cosine similarity; τ_init 0.1, γ = β = 0.9, η_τ = 1e-3 additive (``tau_update``);
one-way contrast (``ae_symmetric``); stage-B schedule of §2.3.7; LoRA B = 0, A ~ N(0, 1),
s = 1; stage-C reconstruction target W (``lora_rec_target``); L2 as squared norms on batch rows.

Reference code paths: iSogCLR in Optimization-AI/LibAUC ``libauc/losses/contrastive.py``
(``GCLoss_v1``/``GCLoss_v2``) and ``libauc/optimizers/isogclr.py`` (docstring), and
zhqiu/contrastive-learning-iSogCLR ``*/losses.py`` (``SogCLR_DRO_Loss``); LoRA for embeddings
in microsoft/loralib ``loralib/layers.py`` (``Embedding``). No official UCLR code exists.

Per-user temperatures go to ``FitSummary.user_values`` (stage ``cdcae``, and stage ``lora``
per domain); per-epoch curves carry losses, validation NDCG@10, τ mean, the share of τ at a
bound and the mean τ per activity quintile (``tau_mean_q1`` = least active).
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch

from methods.base import FitContext, FitSummary, Method, TrainingData, UserValues
from methods.registry import register
from methods.scoring import DotScorer
from uclr.cache import cached_stage, stage_key, training_fingerprint
from uclr.params import STAGE_A_FIELDS, STAGE_B_FIELDS, UCLRParams
from uclr.pretrain import PGEResult, pretrain
from uclr.stages import AutoencoderResult, AutoencoderStage, LoRAStage, Mode, activity_groups

__all__ = ["PGE", "PGEAE", "PGECLAE", "PGEUCLAE", "UCLR", "UCLRLadder"]


def _summary_notes(summary: FitSummary, seconds: float, cached: bool) -> dict:
    return {
        "epochs": summary.epochs,
        "best_epoch": summary.best_epoch,
        "best_valid": summary.best_valid,
        "seconds": round(seconds, 3),
        "seconds_per_epoch": round(seconds / max(summary.epochs, 1), 4),
        "from_cache": cached,
    }


class UCLRLadder(Method):
    """Shared fit/score of the ladder; subclasses pick how far up the ladder they go."""

    Params = UCLRParams
    family = "ours"
    version = "1"
    stage_group = "uclr"
    paper = (
        'Yang et al., "Not All Embeddings are Created Equal: Towards Robust Cross-domain '
        'Recommendation via Contrastive Learning", WWW 2024'
    )
    stage_b_mode: ClassVar[Mode | None] = None
    fine_tune: ClassVar[bool] = False

    @classmethod
    def quick_params(cls) -> UCLRParams:
        return UCLRParams(
            embedding_size=16,
            batch_size=64,
            learning_rate=0.01,
            patience=2,
            pge_max_epochs=3,
            ae_hidden=16,
            ae_latent=8,
            ae_max_epochs=3,
            ae_max_steps=1,
            ae_eval_every_epochs=1,
            ae_eval_every_steps=1,
            lora_rank=4,
            lora_max_epochs=2,
        )

    def fit(self, data: TrainingData, ctx: FitContext) -> FitSummary:
        p: UCLRParams = self.params  # type: ignore[assignment]
        notes: dict = {}
        epochs = 0
        parent = stage_key(
            "data", training_fingerprint(data), p, (), seed=ctx.seed, device=str(ctx.device)
        )
        key_a = stage_key("pge", parent, p, STAGE_A_FIELDS)
        pge, cached, seconds = cached_stage(
            key_a, lambda log: pretrain(data, p, ctx, log), ctx.log, p.share_stages
        )
        notes["pge"] = _summary_notes(pge.summary, seconds, cached)
        epochs += pge.summary.epochs
        summary = pge.summary
        vectors = {d: pge.users for d in data.domains}
        items = {d: pge.domain_items(d) for d in data.domains}
        values: list[UserValues] = []

        if self.stage_b_mode is not None:
            groups = activity_groups(data)
            mode = self.stage_b_mode
            key_b = stage_key("cdcae", key_a, p, STAGE_B_FIELDS, mode=mode)
            stage_b, cached, seconds = cached_stage(
                key_b,
                lambda log: AutoencoderStage(pge, mode, p, ctx, data, groups).run(log),
                ctx.log,
                p.share_stages,
            )
            notes["cdcae"] = _summary_notes(stage_b.summary, seconds, cached)
            epochs += stage_b.summary.epochs
            summary = stage_b.summary
            if stage_b.temperatures is not None:
                stage_b.temperatures.check_collapse(
                    p.collapse_share, "stage B (cdcae)", p.allow_collapse
                )
                values.append(_temperatures(stage_b, "cdcae", None))
            shared = stage_b.user_vectors(pge, p)
            vectors = {d: shared for d in data.domains}
            if self.fine_tune:
                tuned, tuned_values = self._fine_tune(
                    data, ctx, pge, stage_b, groups, vectors, items, notes
                )
                epochs += tuned
                values += tuned_values

        self._vectors = vectors
        self._items = items
        self._scorer = DotScorer()
        valid = ctx.validate(self.score)
        # The last stage's best epoch (stage C: the latest over domains, as BPRMF reports).
        tuned = [n["best_epoch"] for k, n in notes.items() if k.startswith("lora:")]
        return FitSummary(
            epochs=epochs,
            best_epoch=max(tuned) if tuned else summary.best_epoch,
            best_valid=sum(valid.values()) / max(len(valid), 1),
            notes=notes | {"valid": valid},
            user_values=values,
        )

    def _fine_tune(
        self,
        data: TrainingData,
        ctx: FitContext,
        pge: PGEResult,
        stage_b: AutoencoderResult,
        groups: torch.Tensor,
        vectors: dict[str, torch.Tensor],
        items: dict[str, torch.Tensor],
        notes: dict,
    ) -> tuple[int, list[UserValues]]:
        """Stage C once per domain, independently, from the stage-B checkpoint; fills
        ``vectors``/``items`` per domain and returns (epochs, per-domain temperatures)."""
        p: UCLRParams = self.params  # type: ignore[assignment]
        epochs, values = 0, []
        for index, domain in enumerate(data.domains):
            if len(data.users[domain]) == 0:
                continue  # nothing to fine-tune on: the domain keeps the stage-B model
            started = time.perf_counter()
            stage = LoRAStage(domain, index, pge, stage_b, p, ctx, data, groups)
            result = stage.run(ctx.log)
            stage.temperatures.check_collapse(
                p.collapse_share, f"stage C (lora, {domain})", p.allow_collapse
            )
            vectors[domain] = stage.user_vectors()
            items[domain] = stage.item_table()
            values.append(
                UserValues(
                    stage="lora",
                    name="temperature",
                    values=stage.temperatures.tau.detach().cpu().double().numpy(),
                    domain=domain,
                )
            )
            notes[f"lora:{domain}"] = _summary_notes(
                result, time.perf_counter() - started, cached=False
            )
            epochs += result.epochs
        return epochs, values

    def score(self, users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
        return self._scorer(self._vectors[domain][users], self._items[domain], items)

    def score_all(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        return self._vectors[domain][users] @ self._items[domain].T


def _temperatures(stage_b: AutoencoderResult, stage: str, domain: str | None) -> UserValues:
    assert stage_b.temperatures is not None
    tau = stage_b.temperatures.tau.detach().cpu().double().numpy()
    return UserValues(stage=stage, name="temperature", values=np.array(tau), domain=domain)


@register
class PGE(UCLRLadder):
    """UCLR's stage A alone: one BPR matrix factorisation over the items of all domains
    together, its user embeddings shared by every domain (the PGE row of the paper's Tables
    4-5, the first rung of the ablation ladder)."""

    kind = "pge"
    display_name = "PGE"


@register
class PGEAE(UCLRLadder):
    """PGE plus an autoencoder over the frozen user embeddings, trained on reconstruction
    alone (ablation rung 2: what the autoencoder gives without contrastive learning)."""

    kind = "pge_ae"
    display_name = "PGE+AE"
    stage_b_mode = "rec"


@register
class PGECLAE(UCLRLadder):
    """PGE plus the dual-stream contrastive autoencoder with one fixed temperature for every
    user (``ae_cl_tau``; ablation rung 3: contrastive learning without per-user
    temperatures)."""

    kind = "pge_cl_ae"
    display_name = "PGE+CL-AE"
    stage_b_mode = "cl"


@register
class PGEUCLAE(UCLRLadder):
    """PGE plus the dual-stream contrastive autoencoder with a learned temperature per user
    (UCLR's stage B; ablation rung 4: UCLR without the per-domain fine-tuning)."""

    kind = "pge_ucl_ae"
    display_name = "PGE+UCL-AE"
    stage_b_mode = "ucl"


@register
class UCLR(UCLRLadder):
    """User embeddings from one model over all domains (stage A), refined by a dual-stream
    contrastive autoencoder whose learned per-user temperatures treat sparse and active users
    differently (stage B), then fine-tuned per domain with LoRA (stage C). The full method and
    the report's default reference; its temperatures are kept per user (view
    ``temperatures``)."""

    kind = "uclr"
    display_name = "UCLR"
    # 2: stage C's contrastive term in anchor-row blocks and row-wise Adam for the items
    # (float summation order only; stages A/B and the other rungs are unchanged).
    # 3: stage C's masked stream shares the unmasked pass over B + 1 rows (row_masked_dual_stream;
    # same draws, float summation order only).
    version = "3"
    stage_b_mode = "ucl"
    fine_tune = True
