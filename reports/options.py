"""Report settings: the reference method, the significance test and its correction, buckets.

They come from the spec (``experiment.reference_method``, ``protocol.buckets``,
``protocol.sparse_max``) and from ``harness report`` flags; without a spec the report reads the
latest run's stored spec text, so the store alone is enough to render it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from typing import Any

from reports.stats import CORRECTIONS, TESTS

__all__ = ["ReportOptions"]


@dataclass(frozen=True)
class ReportOptions:
    reference: str | None = None  # a method name of the spec; None: UCLR, else the best
    test: str = "t"  # t | wilcoxon: which test's adjusted p decides the marks
    correction: str = "holm"  # holm | bh
    alpha: float = 0.05
    n_boot: int = 2000
    confidence: float = 0.95
    buckets: tuple[int, ...] | None = None  # None: the protocol stored with the candidates
    sparse_max: int | None = None
    persist: bool = True  # write report_settings and significance_results into the store

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"test must be one of {', '.join(TESTS)}, got {self.test!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(
                f"correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}"
            )
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.n_boot < 0:
            raise ValueError(f"n_boot must be >= 0, got {self.n_boot}")

    @classmethod
    def from_spec(cls, spec: Any, **overrides: Any) -> ReportOptions:
        """Options from a validated ``harness.spec.schema.Spec`` plus explicit overrides."""
        base = cls(
            reference=spec.experiment.reference_method,
            buckets=tuple(spec.protocol.buckets),
            sparse_max=spec.protocol.sparse_max,
        )
        return base.with_overrides(**overrides)

    @classmethod
    def from_spec_text(cls, text: str | None) -> ReportOptions:
        """Best-effort options from a stored spec text (unparsable text gives the defaults)."""
        if not text:
            return cls()
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return cls()
        experiment = data.get("experiment", {}) if isinstance(data, dict) else {}
        protocol = data.get("protocol", {}) if isinstance(data, dict) else {}
        reference = experiment.get("reference_method")
        buckets = protocol.get("buckets")
        sparse_max = protocol.get("sparse_max")
        return cls(
            reference=reference if isinstance(reference, str) else None,
            buckets=tuple(int(b) for b in buckets) if isinstance(buckets, list) else None,
            sparse_max=int(sparse_max) if isinstance(sparse_max, int) else None,
        )

    def with_overrides(self, **overrides: Any) -> ReportOptions:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
