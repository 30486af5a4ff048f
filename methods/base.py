"""The one interface every method implements, and what the harness hands it.

A method receives only training interactions and a validation oracle (it gets numbers back,
never validation or test items), and returns raw real-valued scores for candidate lists the
harness chose. It never draws its own evaluation negatives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from methods.checkpoint import EpochCheckpoints

__all__ = [
    "EpochLog",
    "FitContext",
    "FitSummary",
    "Method",
    "MethodParams",
    "TrainingData",
    "UserValues",
    "ValidationOracle",
]


class MethodParams(BaseModel):
    """Base of every method's typed parameters: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class TrainingData:
    """Training interactions only, as int64 tensors on the method's device."""

    n_users: int
    domains: list[str]
    n_items: dict[str, int]
    users: dict[str, torch.Tensor]
    items: dict[str, torch.Tensor]

    def item_offsets(self) -> dict[str, int]:
        """Offsets of each domain in a concatenated global item space (methods.md §1.1)."""
        offsets, total = {}, 0
        for name in self.domains:
            offsets[name] = total
            total += self.n_items[name]
        return offsets

    def counts_per_user(self, domain: str) -> torch.Tensor:
        return torch.bincount(self.users[domain], minlength=self.n_users)


@dataclass(frozen=True)
class EpochLog:
    """One point of a training curve; ``values`` holds losses, validation metrics, etc."""

    stage: str
    epoch: int
    values: dict[str, float]
    domain: str | None = None


ScoreFn = Callable[[torch.Tensor, str, torch.Tensor], torch.Tensor]


class ValidationOracle(ABC):
    """Scores a method's ranking of validation candidates and returns NDCG@K means."""

    metric: str

    @abstractmethod
    def __call__(self, score: ScoreFn, domains: list[str] | None = None) -> dict[str, float]:
        """Mean validation metric per domain (domains with no validation case are omitted)."""


@dataclass
class FitContext:
    seed: int
    device: torch.device
    validate: ValidationOracle
    log: Callable[[EpochLog], None] = lambda _log: None
    extras: dict[str, Any] = field(default_factory=dict)
    # Where run_epochs keeps a resumable method's mid-training state (None: nowhere).
    checkpoints: EpochCheckpoints | None = None


@dataclass(frozen=True)
class UserValues:
    """One value per user that a method wants kept for inspection (e.g. UCLR's temperatures)."""

    stage: str
    name: str
    values: np.ndarray  # float [n_users]
    domain: str | None = None


@dataclass
class FitSummary:
    epochs: int
    best_epoch: int
    best_valid: float
    notes: dict[str, Any] = field(default_factory=dict)
    user_values: list[UserValues] = field(default_factory=list)


class Method(ABC):
    """Base class: subclasses set ``kind``, ``Params``, ``family`` and ``version``.

    ``version`` is part of each cell's identity; bump it when a change alters results so that
    stored cells are recomputed instead of silently mixed with new ones.
    """

    kind: ClassVar[str]
    Params: ClassVar[type[MethodParams]]
    family: ClassVar[Literal["single-domain", "cross-domain", "ours"]] = "single-domain"
    version: ClassVar[str] = "1"
    display_name: ClassVar[str] = ""
    #: The publication the method comes from (authors, title, venue and year); shown in the
    #: methods reference of the docs. Empty for methods without one (MostPop).
    paper: ClassVar[str] = ""
    #: Cells of methods sharing a non-empty ``stage_group`` (same dataset and seed) reuse each
    #: other's in-process stage results, so a parallel executor keeps them on one worker.
    stage_group: ClassVar[str] = ""

    @classmethod
    def quick_params(cls) -> MethodParams:
        """Tiny, fast settings for the contract tests (few epochs, small embeddings)."""
        return cls.Params()

    def __init__(self, params: MethodParams, n_users: int, n_items: dict[str, int]):
        self.params = params
        self.n_users = n_users
        self.n_items = dict(n_items)

    @abstractmethod
    def fit(self, data: TrainingData, ctx: FitContext) -> FitSummary:
        """Train on ``data``; use ``ctx.validate`` only for model selection."""

    @abstractmethod
    def score(self, users: torch.Tensor, domain: str, items: torch.Tensor) -> torch.Tensor:
        """Raw scores [B, C] for ``users`` [B] against local ``items`` [B, C] of ``domain``."""

    def score_all(self, users: torch.Tensor, domain: str) -> torch.Tensor:
        """Scores [B, n_items] against every item (full ranking). Override when cheaper."""
        items = torch.arange(self.n_items[domain], device=users.device)
        return self.score(users, domain, items.expand(len(users), -1))
