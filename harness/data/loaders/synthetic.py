"""Loader "synthetic": the seeded cross-domain generator of :mod:`harness.data.synthetic`.

A preset fixes the shape ("quickstart": small, for tests; "amazon": the paper's Amazon sizes);
any field set here overrides it. "custom" starts from the generator defaults and needs
``n_users``, ``domains``, ``n_items`` and ``n_interactions``. Per-domain sizes are dicts
(domain -> count) or lists aligned with the resolved domains.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from harness.data.dataset import Dataset
from harness.data.loaders._common import LoaderConfig
from harness.data.synthetic import PRESETS, SyntheticParams, SyntheticTruth, generate

__all__ = ["SyntheticConfig", "generate_from_config", "load_synthetic"]

PerDomain = dict[str, int] | list[int] | None


class SyntheticConfig(LoaderConfig):
    """Seeded synthetic data with a planted cross-domain preference (nothing is read from
    disk): a preset plus overrides; unset keys keep the preset's value."""

    loader: Literal["synthetic"] = "synthetic"
    preset: Literal["quickstart", "amazon", "custom"] = Field(
        "quickstart",
        description="'quickstart': 1,500 users, three small domains; 'amazon': shaped like the "
        "paper's Amazon (26,507 users); 'custom': no preset, n_users, domains, n_items and "
        "n_interactions required",
    )
    seed: int = Field(0, description="seed of every random stream of the generator")
    n_users: int | None = Field(None, ge=1, description="users (unset: the preset's)")
    n_items: PerDomain = Field(
        None,
        description="items with at least one interaction per domain: {domain = n} or a list in "
        "domain order (unset: the preset's)",
    )
    n_interactions: PerDomain = Field(
        None,
        description="distinct (user, item) pairs per domain, as n_items (unset: the preset's)",
    )
    latent_dim: int | None = Field(
        None, ge=1, description="dimension r of the user and cluster latents (unset: 16)"
    )
    n_clusters: int | None = Field(
        None, ge=1, description="item clusters K per domain (unset: the preset's)"
    )
    shared_weight: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="weight a of the user's cross-domain latent against the per-domain one: "
        "0 = no shared signal, 1 = the same taste everywhere (unset: 0.6)",
    )
    temperature: float | None = Field(
        None,
        gt=0.0,
        description="softmax temperature of cluster preferences; lower = sharper taste "
        "(unset: 0.5)",
    )
    activity_sigma: float | None = Field(
        None, ge=0.0, description="log-normal sigma of a user's overall activity (unset: 1.0)"
    )
    domain_activity_sigma: float | None = Field(
        None,
        ge=0.0,
        description="log-normal sigma of a user's activity per domain (unset: 0.75)",
    )
    popularity_exponent: float | None = Field(
        None,
        ge=0.0,
        description="Zipf exponent of item popularity within a cluster; 0 = uniform (unset: 0.8)",
    )
    max_user_fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="most interactions one user may have in a domain, as a fraction of its "
        "items (unset: 0.05)",
    )

    @model_validator(mode="after")
    def _resolvable(self) -> SyntheticConfig:
        self.resolve()  # surface incomplete or inconsistent settings when the spec is parsed
        return self

    def resolve(self) -> SyntheticParams:
        """The fully specified generator parameters (raises ValueError when incomplete)."""
        if self.preset == "custom":
            missing = [
                f
                for f in ("n_users", "domains", "n_items", "n_interactions")
                if getattr(self, f) is None
            ]
            if missing:
                raise ValueError(f"preset 'custom' needs {missing}")
            base = None
        else:
            base = PRESETS[self.preset]
        domains = tuple(self.domains) if self.domains is not None else base.domains
        sizes = {}
        for field in ("n_items", "n_interactions"):
            preset_values = (
                dict(zip(base.domains, getattr(base, field), strict=True)) if base else {}
            )
            given = getattr(self, field)
            if isinstance(given, list):
                if len(given) != len(domains):
                    raise ValueError(f"{field} has {len(given)} entries for domains {domains}")
                given = dict(zip(domains, given, strict=True))
            merged = {**preset_values, **(given or {})}
            unknown = [d for d in (given or {}) if d not in domains]
            absent = [d for d in domains if d not in merged]
            if unknown or absent:
                raise ValueError(
                    f"{field}: domains {unknown} are not generated; domains {absent} lack a size"
                )
            sizes[field] = tuple(int(merged[d]) for d in domains)
        knobs = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(SyntheticParams)
            if f.name not in ("domains", "n_items", "n_interactions", "seed")
            and getattr(self, f.name) is not None
        }
        if base is None:
            return SyntheticParams(domains=domains, seed=self.seed, **sizes, **knobs)
        return dataclasses.replace(base, domains=domains, seed=self.seed, **sizes, **knobs)


def generate_from_config(config: SyntheticConfig) -> tuple[Dataset, SyntheticTruth]:
    """Dataset plus the generating truth (for oracle checks); named after preset and seed."""
    dataset, truth = generate(config.resolve())
    dataset = dataclasses.replace(
        dataset,
        name=f"synthetic-{config.preset}-s{config.seed}",
        source={**dataset.source, "preset": config.preset},
    )
    return dataset, truth


def load_synthetic(config: SyntheticConfig, base_dir: Path) -> Dataset:
    """Generate the dataset; ``base_dir`` is unused (nothing is read from disk)."""
    return generate_from_config(config)[0]
