"""UCLR's typed parameters: every [RECON] choice and ambiguity of methods.md §2 is a field.

One class serves the whole ablation ladder (``pge`` … ``uclr``), so a spec tunes every variant
the same way; a variant ignores the fields of stages it does not run. Field prefixes name the
stage a field belongs to (``pge_``: stage A, ``ae_``/``tau_``: stage B, ``lora_``: stage C);
:data:`STAGE_A_FIELDS` and :data:`STAGE_B_FIELDS` say which fields can change each stage's
result, which is what the in-process stage cache keys on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from methods.base import MethodParams

__all__ = ["STAGE_A_FIELDS", "STAGE_B_FIELDS", "STAGE_C_FIELDS", "UNKEYED_FIELDS", "UCLRParams"]


class UCLRParams(MethodParams):
    """Parameters of UCLR and its ablation ladder (methods.md §2.7, ambiguity register §2.8)."""

    # -- shared by every stage (paper fairness settings, methods.md §1.3) ---------------------
    embedding_size: int = Field(128, ge=1, description="m; the paper fixes 128 for every method")
    batch_size: int = Field(
        2048, ge=2, description="BPR triples per step (stages A, C); users per step (stages B, C)"
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate of every stage")
    patience: int = Field(
        10, ge=1, description="validation evaluations without improvement before stopping"
    )
    score_path: Literal["ae_output", "raw"] = Field(
        "ae_output",
        description="A4: 'ae_output' scores <g(f(W_u)), I_j> (reading R1, default); 'raw' scores "
        "<W_u, I_j> and keeps the autoencoder only as a regulariser (reading R2)",
    )
    share_stages: bool = Field(
        True,
        description="reuse stage A/B results across ladder variants of one process when data, "
        "seed and every parameter of those stages agree (results are unchanged)",
    )
    allow_collapse: bool = Field(
        False,
        description="keep a run whose temperatures pile up at a bound instead of failing it "
        "(needed to show the collapse of the literal Eq. 3, tau_rho='logn')",
    )
    collapse_share: float = Field(
        0.9, gt=0, le=1, description="fail when more than this share of temperatures is at a bound"
    )

    # -- stage A: pretrained global embedding (methods.md §2.2) -------------------------------
    backbone: Literal["bprmf", "lightgcn"] = Field(
        "bprmf", description="single-model embedding pretrained on the union of domains (Table 6)"
    )
    pge_neg: Literal["all", "same_domain"] = Field(
        "all",
        description="A1: BPR negatives drawn from all items of all domains (literal Eq. 2, "
        "default) or from the positive's own domain",
    )
    pge_reg: float = Field(1e-5, ge=0, description="λ_U = λ_V of Eq. 2 (squared L2 on batch rows)")
    pge_max_epochs: int = Field(200, ge=1, description="methods.md §1.3: up to 200 epochs")
    pge_eval_every: int = Field(1, ge=1, description="validate every k epochs in stage A")
    pge_init: Literal["xavier_normal", "normal"] = Field(
        "xavier_normal", description="stage-A embedding init: Xavier-normal or N(0, std²)"
    )
    pge_init_std: float = Field(0.01, gt=0, description="std for pge_init='normal'")
    pge_backbone_params: dict[str, int | float | bool | str] = Field(
        default_factory=dict,
        description="extra parameters of a non-BPRMF backbone (e.g. LightGCN's layer count), "
        "validated by that backbone's own parameter model",
    )

    # -- stage B: contrastive dual-stream collaborative autoencoder (§2.3) ---------------------
    ae_hidden: int = Field(128, ge=1, description="encoder m -> hidden -> latent (paper: 128)")
    ae_latent: int = Field(32, ge=1, description="latent size (paper: 32)")
    ae_alpha: float = Field(1e-3, ge=0, description="α: weight of L_rec in Eq. 5 (paper: 1e-3)")
    ae_mask_mode: Literal["row", "feature"] = Field(
        "row",
        description="A7: 'row' zeroes whole user rows (literal); 'feature' zeroes Bernoulli(p) "
        "coordinates of every row (SimCLR-style second view)",
    )
    ae_mask_ratio: float = Field(
        0.3, ge=0, lt=1, description="A8: share of rows (or coordinates) masked"
    )
    ae_symmetric: bool = Field(
        False,
        description="also contrast generative-stream anchors against reconstructive-stream "
        "candidates (Eq. 3 is one-way; default off)",
    )
    ae_cl_tau: float = Field(
        0.1, gt=0, description="pge_cl_ae: the one global temperature (grid 0.05/0.1/0.2/0.5)"
    )
    ae_max_epochs: int = Field(
        200, ge=1, description="§2.3.7: stage B runs up to this many epochs or ae_max_steps"
    )
    ae_max_steps: int = Field(
        2000,
        ge=1,
        description="§2.3.7: … or this many steps, whichever is longer (200 epochs on Amazon, "
        "2,000 one-batch steps on Douban)",
    )
    ae_eval_every_epochs: int = Field(
        5, ge=1, description="§2.3.7: validate every this many epochs or ae_eval_every_steps"
    )
    ae_eval_every_steps: int = Field(
        50, ge=1, description="… or this many steps, whichever is longer"
    )

    # -- stage B/C: per-user temperatures, iSogCLR (§2.3.5-2.3.6) ------------------------------
    tau_rho: float | Literal["logn"] = Field(
        1.0,
        description="A2: KL-ball radius ρ of the robust loss (grid 0.3/1/2/3/6); 'logn' is the "
        "literal Eq. 3 (ρ = log n_i), which drives every temperature to tau_min",
    )
    tau_init: float = Field(0.1, gt=0, description="initial temperature (LibAUC default)")
    tau_min: float = Field(1e-5, gt=0, description="lower clip of τ (paper)")
    tau_max: float = Field(1.0, gt=0, description="upper clip of τ (paper)")
    tau_gamma: float = Field(
        0.9, gt=0, le=1, description="weight of the new estimate in the moving average of g_i"
    )
    tau_beta: float = Field(0.9, gt=0, le=1, description="weight of the new τ-gradient (momentum)")
    tau_eta: float = Field(1e-3, gt=0, description="η_τ of the additive projected step")
    tau_update: Literal["additive", "log"] = Field(
        "additive",
        description="'additive': τ ← clip(τ − η v) (iSogCLR); 'log': τ ← clip(τ·exp(−η_log v))",
    )
    tau_eta_log: float = Field(0.1, gt=0, description="η of tau_update='log'")
    tau_grad_clip: float | None = Field(
        None, gt=0, description="clip the τ-gradient to [-c, c] (zhqiu: 3 or 5; LibAUC: none)"
    )

    # -- stage C: domain-aware LoRA fine-tuning (§2.4) ----------------------------------------
    lora_rank: int = Field(8, ge=1, description="A3: rank r of B_d A_d (grid 4/8/16/32)")
    lora_alpha: float | None = Field(
        None, gt=0, description="scale s = lora_alpha / r; None means lora_alpha = r (s = 1)"
    )
    lora_init_std: float = Field(
        1.0, gt=0, description="A_d ~ N(0, std²), B_d = 0 (loralib Embedding convention)"
    )
    lora_reg: float = Field(1e-5, ge=0, description="λ_U = λ_V of Eq. 6")
    lora_max_epochs: int = Field(100, ge=1, description="per domain (§2.4)")
    lora_eval_every: int = Field(1, ge=1, description="validate every k epochs in stage C")
    lora_finetune_items: bool = Field(True, description="A5: domain items trainable in stage C")
    lora_finetune_ae: bool = Field(True, description="A6: autoencoder trainable in stage C")
    lora_rec_target: Literal["W", "W0"] = Field(
        "W", description="reconstruction target of L_combined in stage C: adapted W or frozen W0"
    )

    @model_validator(mode="after")
    def _consistent(self) -> UCLRParams:
        if not self.tau_min < self.tau_max:
            raise ValueError("tau_min must be below tau_max")
        if not self.tau_min <= self.tau_init <= self.tau_max:
            raise ValueError("tau_init must lie in [tau_min, tau_max]")
        if isinstance(self.tau_rho, float) and self.tau_rho < 0:
            raise ValueError("tau_rho must be >= 0 or 'logn'")
        if self.backbone != "bprmf" and self.pge_neg != "all":
            raise ValueError("pge_neg='same_domain' is implemented for backbone='bprmf' only")
        if self.backbone == "bprmf" and self.pge_backbone_params:
            raise ValueError("pge_backbone_params is for non-BPRMF backbones")
        return self


_SHARED = {"embedding_size", "batch_size", "learning_rate", "patience"}
#: Fields that can change stage A's output.
STAGE_A_FIELDS = frozenset(
    _SHARED | {name for name in UCLRParams.model_fields if name.startswith("pge_")} | {"backbone"}
)
#: Fields that can change stage B's output (given stage A's).
STAGE_B_FIELDS = frozenset(
    {name for name in UCLRParams.model_fields if name.startswith(("ae_", "tau_"))} | {"score_path"}
)
#: Fields that only matter to stage C.
STAGE_C_FIELDS = frozenset(name for name in UCLRParams.model_fields if name.startswith("lora_"))
#: Fields that change no stage's numbers (sharing on/off, whether a collapse fails the cell).
UNKEYED_FIELDS = frozenset({"share_stages", "allow_collapse", "collapse_share"})
