"""The cell matrix (dataset x method x seed) and each cell's content address.

A cell id hashes everything that determines its numbers: dataset fingerprint, protocol,
candidate-set content, method kind and fully-resolved parameters, training seed and code
version. Changing any input yields a new id, so stale results are never reused; renaming a
method in the spec does not retrain it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from harness.evaluation.metrics import METRICS_VERSION
from harness.runner.prepare import PlannedData
from harness.search.pruning import PruneRule
from harness.spec.load import LoadedSpec, SpecError
from methods.base import MethodParams
from methods.registry import get_method

__all__ = [
    "PROTOCOL_VERSION",
    "CellTask",
    "cell_id",
    "cell_identity",
    "code_version",
    "identity_hash",
    "plan_cells",
]


@dataclass(frozen=True)
class CellTask:
    """Everything one cell needs; self-contained so an executor can ship it elsewhere."""

    cell_id: str
    dataset: str
    method: str
    kind: str
    params: MethodParams
    seed: int
    domains: list[str]
    prepared: PlannedData
    ks: list[int]
    ties: str
    validation_k: int
    full_ranking: bool
    device: str
    protocol_fingerprint: str = ""
    matmul_precision: str = "highest"  # torch float32 matmul precision (spec schema)
    # Mid-training checkpoints of methods that can resume (not part of the identity):
    # the results folder they are kept in (None: none are kept) and the seconds between saves.
    checkpoint_dir: str | None = None
    checkpoint_every_s: float = 600.0
    # A search trial's pruning rule (harness.search.pruning): part of the identity when set,
    # since it can stop the cell early; plain cells, paper cells and final runs have none.
    prune: PruneRule | None = None

    def identity(self) -> dict:
        """What this cell's id hashes (see :func:`cell_identity`)."""
        identity = cell_identity(
            self.prepared,
            self.protocol_fingerprint,
            self.kind,
            self.params,
            self.seed,
            self.domains,
            matmul_precision=self.matmul_precision,
        )
        if self.prune is not None:
            identity["prune"] = self.prune.identity()
        return identity


PROTOCOL_VERSION = "1"  # the split and candidate rules; bump when either changes its output


def code_version(kind: str) -> str:
    """The versions of the code that determine a cell's numbers: the method, the metric
    definitions and the protocol rules. Deliberately not the package version, so a release
    keeps every published cell valid while a method's ``version`` bump marks its cells stale."""
    return (
        f"{kind} v{get_method(kind).version}; metrics v{METRICS_VERSION}; "
        f"protocol v{PROTOCOL_VERSION}"
    )


def cell_identity(
    prepared: PlannedData,
    protocol_fp: str,
    kind: str,
    params: MethodParams,
    seed: int,
    domains: list[str],
    code: str | None = None,
    matmul_precision: str = "highest",
) -> dict:
    """The content a cell id hashes; ``code`` defaults to the current :func:`code_version`.
    Bundles carry this dict so an importer can recompute the id from the bundle alone. A
    reduced ``matmul_precision`` enters it; full fp32 does not, so ids from before the option
    existed stay valid."""
    identity = {
        "dataset": prepared.fingerprint,
        "protocol": protocol_fp,
        "candidates": prepared.candidate_hash,
        "kind": kind,
        "params": params.model_dump(mode="json"),
        "seed": seed,
        "domains": domains,
        "code": code if code is not None else code_version(kind),
    }
    if matmul_precision != "highest":
        identity["matmul_precision"] = matmul_precision
    return identity


def identity_hash(identity: dict) -> str:
    """A cell id from its identity dict (see :func:`cell_identity`)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def cell_id(
    prepared: PlannedData,
    protocol_fp: str,
    kind: str,
    params: MethodParams,
    seed: int,
    domains: list[str],
    matmul_precision: str = "highest",
) -> str:
    return identity_hash(
        cell_identity(
            prepared, protocol_fp, kind, params, seed, domains, matmul_precision=matmul_precision
        )
    )


def plan_cells(loaded: LoadedSpec, prepared: dict[str, PlannedData], device: str) -> list[CellTask]:
    """Expand the spec into cells, in a stable order (dataset, method, seed)."""
    spec = loaded.spec
    protocol = spec.protocol
    tasks = []
    for dataset_name in spec.datasets:
        data = prepared[dataset_name]
        for method_name, method in spec.methods.items():
            if dataset_name not in loaded.datasets_of(method_name):
                continue
            domains = method.domains or data.domain_names
            missing = [d for d in domains if d not in data.domain_names]
            if missing:
                raise SpecError(
                    [
                        loaded.issue(
                            ("methods", method_name, "domains"),
                            f"dataset {dataset_name!r} has no domain(s) {missing}; "
                            f"it has {data.domain_names}",
                        )
                    ]
                )
            params = loaded.method_params[method_name]
            precision = loaded.matmul_precision(method_name)
            for seed in spec.experiment.seeds:
                tasks.append(
                    CellTask(
                        cell_id=cell_id(
                            data,
                            protocol.fingerprint(),
                            method.kind,
                            params,
                            seed,
                            domains,
                            matmul_precision=precision,
                        ),
                        dataset=dataset_name,
                        method=method_name,
                        kind=method.kind,
                        params=params,
                        seed=seed,
                        domains=list(domains),
                        prepared=data,
                        ks=protocol.ks,
                        ties=protocol.ties,
                        validation_k=protocol.validation_k,
                        full_ranking=protocol.full_ranking,
                        device=device,
                        protocol_fingerprint=protocol.fingerprint(),
                        matmul_precision=precision,
                    )
                )
    return tasks
