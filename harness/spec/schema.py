"""Pydantic schema of an experiment spec (TOML). Unknown keys are rejected everywhere.

Method ``params`` and dataset loader options are typed by the registered method / loader, so
``harness validate`` checks them with the same models that the runner uses.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DatasetSpec",
    "ExperimentSpec",
    "MatmulPrecision",
    "MethodSpec",
    "ProtocolSpec",
    "SearchSpec",
    "Spec",
]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")

# torch.set_float32_matmul_precision: "highest" is full fp32 (the default and every published
# cell); "high" allows TF32 on CUDA; "medium" allows bfloat16 products with fp32 accumulation
# (CUDA, and CPUs whose oneDNN has bf16 kernels: AVX512-BF16 / AMX). Part of a cell's identity.
MatmulPrecision = Literal["highest", "high", "medium"]
_PRECISION_HELP = (
    "float32 matrix products: 'highest' (full fp32), 'high' (TF32 on CUDA) or 'medium' "
    "(bfloat16 inputs, fp32 accumulation); anything but 'highest' changes the numbers and "
    "the cell id"
)


class _Strict(BaseModel):
    """Unknown keys are errors, and so are values of the wrong TOML type: ``negatives = "99"``
    or ``full_ranking = "yes"`` are not silently converted (pydantic strict mode)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ExperimentSpec(_Strict):
    name: str = Field(description="experiment name; also the default output folder name")
    description: str = ""
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        description="training seeds; every cell runs once per seed",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output: str | None = Field(None, description="output folder (relative to the spec file)")
    reference_method: str | None = Field(None, description="method the report compares against")
    results: list[str] = Field(
        default_factory=list,
        description="folders of published result bundles (relative to the spec file) that "
        "`harness run` imports first, so matching cells are reused instead of retrained",
    )
    search_budget: int | None = Field(
        None, ge=1, description="trials per seed of every searched method (unless it sets trials)"
    )
    matmul_precision: MatmulPrecision = Field("highest", description=_PRECISION_HELP)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '_', '-', '.' and start with a letter")
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds repeat: {value}")
        return value


class DatasetSpec(_Strict):
    """Loader name plus its options; the options are validated by the loader's own model."""

    model_config = ConfigDict(extra="allow")
    loader: str

    def options(self) -> dict[str, Any]:
        return {"loader": self.loader, **(self.model_extra or {})}


class ProtocolSpec(_Strict):
    split: Literal["leave_one_out"] = "leave_one_out"
    split_seed: int = Field(0, description="seed of the split and of the candidate lists")
    negatives: int = Field(99, ge=1, description="sampled negatives per held-out item")
    ks: list[int] = Field(default_factory=lambda: [10, 20], min_length=1)
    ties: Literal["expected", "optimistic", "pessimistic"] = "expected"
    validation_k: int = Field(10, ge=1, description="early stopping uses validation NDCG@k")
    full_ranking: bool = Field(False, description="also rank against every unseen item")
    sparse_max: int = Field(
        2,
        ge=0,
        description="'sparse users': at most this many training "
        "interactions in the domain (paper Table 3)",
    )
    buckets: list[int] = Field(
        default_factory=lambda: [0, 2, 4, 8, 16, 32, 64, 128],
        description="upper-inclusive edges of activity buckets over training interactions "
        "in the domain; a last open bucket is added (default: 9 groups, Fig. 5)",
    )

    @field_validator("ks")
    @classmethod
    def _positive_k(cls, value: list[int]) -> list[int]:
        # One message for every K below 1 (0 and negative alike), checked before the order.
        if any(v < 1 for v in value):
            raise ValueError(f"cut-offs must be >= 1: {value}")
        if sorted(set(value)) != value:
            raise ValueError(f"must be strictly increasing: {value}")
        return value

    @field_validator("buckets")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        if any(v < 0 for v in value):
            raise ValueError(f"must be non-negative: {value}")
        if sorted(set(value)) != value:
            raise ValueError(f"must be strictly increasing: {value}")
        return value

    def fingerprint(self) -> str:
        """Hash of everything that changes candidate lists or metric values."""
        payload = self.model_dump(exclude={"buckets", "sparse_max"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class SearchSpec(_Strict):
    """``[methods.NAME.search]``: the options below plus one space per method parameter (a list
    of values, ``{low, high, log}`` or ``{choices = [...]}``), checked by harness.search.space."""

    model_config = ConfigDict(extra="allow")
    strategy: Literal["grid", "random", "tpe"] = "grid"
    trials: int | None = Field(None, ge=1, description="trials per seed (default: search_budget)")
    seed: int = Field(0, description="seeds the proposals (random, tpe)")
    round_size: int = Field(1, ge=1, description="tpe: trials proposed per round")
    startup_trials: int | None = Field(
        None, ge=1, description="tpe: random trials before the model (default: a third)"
    )
    paper: bool = Field(True, description="also run the method's own params per seed (paper)")

    def spaces(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MethodSpec(_Strict):
    kind: str = Field(description="registered method kind, e.g. 'bprmf'")
    label: str | None = Field(None, description="name shown in reports (default: the table key)")
    datasets: list[str] | None = Field(None, description="restrict to these datasets")
    domains: list[str] | None = Field(None, description="evaluate only these domains")
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec | None = Field(None, description="hyperparameter search on validation")
    matmul_precision: MatmulPrecision | None = Field(
        None, description="overrides experiment.matmul_precision for this method"
    )


class Spec(_Strict):
    experiment: ExperimentSpec
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    methods: dict[str, MethodSpec] = Field(min_length=1)

    @field_validator("datasets", "methods")
    @classmethod
    def _names_ok(cls, value: dict) -> dict:
        for key in value:
            if not _NAME.match(key):
                raise ValueError(f"name {key!r}: use letters, digits, '_', '-', '.'")
        return value
