"""The one in-memory dataset model every loader produces and every later stage reads.

Users share one dense index across domains; items are indexed per domain. Interactions are
implicit (one row per distinct user-item pair). Arrays are numpy so loaders stay free of torch
and the protocol can hash them cheaply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Dataset", "DomainData", "HeldOut"]


@dataclass(frozen=True)
class HeldOut:
    """A pre-split held-out interaction per user (e.g. the DisenCDR Amazon pairs' test item)."""

    users: np.ndarray  # int64 [n] indices into Dataset.user_ids, unique
    items: np.ndarray  # int64 [n] local item indices


@dataclass(frozen=True)
class DomainData:
    """Interactions of one domain.

    ``users``/``items``/``timestamps`` are aligned int64 arrays. ``timestamps`` is None when the
    source has no time information (the protocol then holds out in a seeded random order).
    ``fixed_test`` is set only for pre-split sources; those rows are *not* in ``users``/``items``.
    """

    name: str
    item_ids: np.ndarray  # object/str [n_items]: raw item id per local index
    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None
    fixed_test: HeldOut | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        """Interactions including a pre-split held-out item."""
        extra = 0 if self.fixed_test is None else len(self.fixed_test.users)
        return len(self.users) + extra

    def all_users(self) -> np.ndarray:
        """Sorted unique users with at least one interaction (held-out ones included)."""
        parts = [self.users]
        if self.fixed_test is not None:
            parts.append(self.fixed_test.users)
        return np.unique(np.concatenate(parts))


@dataclass(frozen=True)
class Dataset:
    """Several domains over one shared user index."""

    name: str
    user_ids: np.ndarray  # object/str [n_users]: raw user id per index
    domains: dict[str, DomainData]
    source: dict = field(
        default_factory=dict
    )  # loader name, files and preprocessing, for provenance
    # Preprocessing funnel per domain (rows read, rows rejected by rule, items after a drop),
    # shown by `harness data stats`; a by-product of loading, not part of the fingerprint.
    funnel: dict = field(default_factory=dict, compare=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def domain_names(self) -> list[str]:
        return list(self.domains)

    def fingerprint(self) -> str:
        """Content hash of the interactions, id vocabularies and preprocessing description.

        Two datasets with the same fingerprint yield the same splits and candidates, so it keys
        candidate sets and cells.
        """
        digest = hashlib.sha256()
        digest.update(json.dumps(self.source, sort_keys=True, default=str).encode())
        digest.update(_hash_strings(self.user_ids))
        for name in sorted(self.domains):
            domain = self.domains[name]
            digest.update(name.encode())
            digest.update(_hash_strings(domain.item_ids))
            for array in (domain.users, domain.items, domain.timestamps):
                digest.update(
                    b"-" if array is None else np.ascontiguousarray(array, np.int64).tobytes()
                )
            if domain.fixed_test is not None:
                digest.update(np.ascontiguousarray(domain.fixed_test.users, np.int64).tobytes())
                digest.update(np.ascontiguousarray(domain.fixed_test.items, np.int64).tobytes())
        return digest.hexdigest()[:16]

    def validate(self) -> None:
        """Check invariants every loader must guarantee; raise ValueError naming the domain."""
        for name, domain in self.domains.items():
            if not (len(domain.users) == len(domain.items)):
                raise ValueError(f"domain {name!r}: users and items differ in length")
            if domain.timestamps is not None and len(domain.timestamps) != len(domain.users):
                raise ValueError(f"domain {name!r}: timestamps differ in length from interactions")
            for label, array, bound in (
                ("user", domain.users, self.n_users),
                ("item", domain.items, domain.n_items),
            ):
                if len(array) and (array.min() < 0 or array.max() >= bound):
                    raise ValueError(f"domain {name!r}: {label} index out of range")
            keys = domain.users.astype(np.int64) * domain.n_items + domain.items
            if len(np.unique(keys)) != len(keys):
                raise ValueError(
                    f"domain {name!r}: duplicate (user, item) pairs; loaders must dedupe"
                )


def _hash_strings(values: np.ndarray) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, values.tolist())).encode()).digest()
