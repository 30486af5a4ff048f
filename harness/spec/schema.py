"""Pydantic schema of an experiment spec (TOML). Unknown keys are rejected everywhere.

Method ``params`` and dataset loader options are typed by the registered method / loader, so
``harness validate`` checks them with the same models that the runner uses.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    """``[experiment]``: the experiment's name, the seeds every cell runs with, where cells
    train, and where results go."""

    name: str = Field(description="experiment name; also the default output folder name")
    description: str = Field("", description="one line shown at the top of the report")
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        description="training seeds; every cell runs once per seed",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where cells train: 'auto' takes CUDA when available, else the CPU"
    )
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
    """A registered dataset by name (``dataset = "amazon-pairs"``: its files are read from the
    data home, see ``harness data list``) or a loader with a ``path`` to your own files; either
    way the other keys are the loader's options, validated by the loader's own model."""

    model_config = ConfigDict(extra="allow")
    dataset: str | None = Field(
        None,
        description="a registered dataset (`harness data list`): its loader, default options "
        "and files in the data home ($HARNESS_DATA); `path` may still point elsewhere",
    )
    loader: str = Field(
        description="loader that reads the files (douban, amazon, amazon_pairs, interactions, "
        "synthetic); implied by `dataset`, required without it",
    )

    @model_validator(mode="before")
    @classmethod
    def _loader_from_registry(cls, data: Any) -> Any:
        """Fill ``loader`` from the registered dataset, which must exist."""
        if not isinstance(data, dict):
            return data
        name = data.get("dataset")
        if name is None:
            return data  # a missing loader is reported as a required key
        if not isinstance(name, str):
            return data  # strict mode reports the type
        from harness.data.registry import UnknownDataset, get_entry

        try:
            entry = get_entry(name)
        except UnknownDataset as exc:
            raise ValueError(str(exc)) from None
        if data.get("loader", entry.loader) != entry.loader:
            raise ValueError(
                f"dataset {name!r} is read by loader {entry.loader!r}, not {data['loader']!r}"
            )
        return {**data, "loader": entry.loader}

    def options(self) -> dict[str, Any]:
        """The loader options: the registered dataset's defaults and its folder in the data
        home, overridden by the spec's own keys."""
        extra = dict(self.model_extra or {})
        if self.dataset is None:
            return {"loader": self.loader, **extra}
        from harness.data.home import entry_dir
        from harness.data.registry import get_entry

        entry = get_entry(self.dataset)
        return {
            "loader": entry.loader,
            "path": str(entry_dir(entry)),
            **entry.loader_options,
            **extra,
        }


class ProtocolSpec(_Strict):
    """``[protocol]``: how every cell of the experiment is evaluated. All keys but ``buckets``
    and ``sparse_max`` fix the split and the candidate lists (they are hashed into the
    candidate set's identity); those two only group users in the report."""

    split: Literal["leave_one_out"] = Field(
        "leave_one_out",
        description="per (user, domain): the last interaction is test, the one before it "
        "validation (pre-split sources keep their own test item)",
    )
    split_seed: int = Field(0, description="seed of the split and of the candidate lists")
    negatives: int = Field(99, ge=1, description="sampled negatives per held-out item")
    ks: list[int] = Field(
        default_factory=lambda: [10, 20],
        min_length=1,
        description="cut-offs K of HR@K, NDCG@K and MRR@K (strictly increasing)",
    )
    ties: Literal["expected", "optimistic", "pessimistic"] = Field(
        "expected",
        description="a positive tied with t candidates: 'expected' averages its t + 1 "
        "possible positions; 'optimistic' takes the best, 'pessimistic' the worst",
    )
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
    strategy: Literal["grid", "random", "tpe"] = Field(
        "grid",
        description="grid: the product of list spaces; random: seeded draws; tpe: Optuna's "
        "TPE sampler, proposing in rounds from the finished trials",
    )
    trials: int | None = Field(None, ge=1, description="trials per seed (default: search_budget)")
    seed: int = Field(0, description="seeds the proposals (random, tpe)")
    round_size: int = Field(1, ge=1, description="tpe: trials proposed per round")
    startup_trials: int | None = Field(
        None, ge=1, description="tpe: random trials before the model (default: a third)"
    )
    paper: bool = Field(True, description="also run the method's own params per seed (paper)")
    select_on: list[int] | None = Field(
        None,
        min_length=1,
        description="search on these seeds only and select once per method (mean validation "
        "over them); the chosen values then run on every seed of the experiment. Default: a "
        "search and a selection per seed",
    )
    pruner: Literal["none", "median", "percentile"] = Field(
        "none",
        description="tpe: stop a trial whose validation curve falls below the median "
        "(or prune_percentile) of the finished trials of earlier rounds",
    )
    prune_percentile: float = Field(
        50.0,
        gt=0,
        lt=100,
        description="pruner 'percentile': keep trials in the top this-many percent at each "
        "validation (Optuna's PercentilePruner); 'median' is 50",
    )
    prune_warmup: int = Field(
        5, ge=0, description="validations of each stage and domain before pruning may stop it"
    )
    prune_min_trials: int = Field(
        2,
        ge=1,
        description="finished earlier trials that must have reached a validation before it "
        "can prune there",
    )

    @field_validator("select_on")
    @classmethod
    def _unique_select_seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"seeds repeat: {value}")
        return value

    def spaces(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def prunes(self) -> bool:
        return self.pruner != "none"


class MethodSpec(_Strict):
    """``[methods.NAME]``: one method of the comparison: its registered kind, its name in the
    report, where it runs, and its typed parameters."""

    kind: str = Field(description="registered method kind, e.g. 'bprmf'")
    label: str | None = Field(None, description="name shown in reports (default: the table key)")
    datasets: list[str] | None = Field(None, description="restrict to these datasets")
    domains: list[str] | None = Field(None, description="evaluate only these domains")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="the method's typed parameters; unset ones keep their defaults",
    )
    search: SearchSpec | None = Field(None, description="hyperparameter search on validation")
    matmul_precision: MatmulPrecision | None = Field(
        None, description="overrides experiment.matmul_precision for this method"
    )


class Spec(_Strict):
    experiment: ExperimentSpec = Field(description="name, seeds, device and outputs")
    datasets: dict[str, DatasetSpec] = Field(
        min_length=1, description="one table per dataset, keyed by the name results use"
    )
    protocol: ProtocolSpec = Field(
        default_factory=ProtocolSpec,
        description="split, candidates, cut-offs and tie rule shared by every cell",
    )
    methods: dict[str, MethodSpec] = Field(
        min_length=1, description="one table per method, keyed by the name results use"
    )

    @field_validator("datasets", "methods")
    @classmethod
    def _names_ok(cls, value: dict) -> dict:
        for key in value:
            if not _NAME.match(key):
                raise ValueError(f"name {key!r}: use letters, digits, '_', '-', '.'")
        return value
