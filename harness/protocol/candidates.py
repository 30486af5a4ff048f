"""Fixed evaluation candidate lists: the held-out item plus N sampled negatives (methods.md §10.2).

Negatives are drawn uniformly *without replacement* from the domain's items the user never
interacted with (train, validation or test). Sampling is sequential-draw-with-rejection done for
all cases at once: each row draws a surplus of uniform items, drops known positives and repeats
(keeping the first occurrence), and keeps the first N survivors; rows that fall short are redrawn
with a larger surplus. The first N distinct survivors of i.i.d. uniform draws are a uniform sample
without replacement, so the vectorised form is exact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from harness.data.dataset import Dataset
from harness.protocol.split import DomainSplit, Split

__all__ = ["CandidateSet", "DomainCandidates", "build_candidates", "sample_negatives"]


@dataclass(frozen=True)
class DomainCandidates:
    """One split (validation or test) of one domain: ``users[i]`` ranks ``positives[i]``
    against ``negatives[i, :]``. Arrays are int64; rows sorted by user."""

    users: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray  # [n_cases, n_negatives]

    @property
    def n_cases(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class CandidateSet:
    """Validation and test candidates of every domain, materialised once and hashed."""

    valid: dict[str, DomainCandidates]
    test: dict[str, DomainCandidates]
    n_negatives: int
    seed: int

    def content_hash(self) -> str:
        digest = hashlib.sha256(f"{self.n_negatives}:{self.seed}".encode())
        for split_name, part in (("valid", self.valid), ("test", self.test)):
            for domain in sorted(part):
                c = part[domain]
                digest.update(f"{split_name}/{domain}".encode())
                for array in (c.users, c.positives, c.negatives):
                    digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


class NotEnoughItems(ValueError):
    """A domain has too few unseen items to draw the requested negatives for some user."""


def sample_negatives(
    users: np.ndarray,
    positive_keys: np.ndarray,
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
    domain: str = "?",
) -> np.ndarray:
    """Draw ``n_negatives`` distinct unseen items per entry of ``users``.

    ``positive_keys`` are sorted ``user * n_items + item`` keys of every known interaction.
    """
    n_cases = len(users)
    out = np.empty((n_cases, n_negatives), dtype=np.int64)
    if n_cases == 0:
        return out
    seen = np.bincount(positive_keys // n_items, minlength=int(users.max()) + 1)[users]
    available = n_items - seen
    if (short := available < n_negatives).any():
        worst = int(np.argmax(short))
        raise NotEnoughItems(
            f"domain {domain!r} has {n_items} items but user index {int(users[worst])} has "
            f"interacted with {int(seen[worst])}, leaving {int(available[worst])} < "
            f"{n_negatives} negatives; lower protocol.negatives or filter such users"
        )
    pending = np.arange(n_cases)
    surplus = 1.3
    while len(pending):
        # Expected draws needed: n_neg * n_items / available, plus slack for repeats.
        need = n_negatives * n_items / available[pending].min()
        width = int(np.ceil(need * surplus)) + 8
        rows = users[pending]
        draws = rng.integers(0, n_items, size=(len(pending), width), dtype=np.int64)
        keys = rows[:, None] * n_items + draws
        hit = np.searchsorted(positive_keys, keys)
        is_positive = positive_keys[np.minimum(hit, len(positive_keys) - 1)] == keys
        keep = ~is_positive & _first_occurrence(draws)
        rank = np.cumsum(keep, axis=1)
        complete = rank[:, -1] >= n_negatives
        done_rows = np.flatnonzero(complete)
        if len(done_rows):
            selected = keep[done_rows] & (rank[done_rows] <= n_negatives)
            out[pending[done_rows]] = draws[done_rows][selected].reshape(-1, n_negatives)
        pending = pending[~complete]
        surplus *= 2
    return out


def _first_occurrence(draws: np.ndarray) -> np.ndarray:
    """Mask of entries that are the first occurrence of their value within the row."""
    order = np.argsort(draws, axis=1, kind="stable")
    sorted_draws = np.take_along_axis(draws, order, axis=1)
    repeat = np.zeros_like(sorted_draws, dtype=bool)
    repeat[:, 1:] = sorted_draws[:, 1:] == sorted_draws[:, :-1]
    first = np.empty_like(repeat)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first


def build_candidates(dataset: Dataset, split: Split, n_negatives: int, seed: int) -> CandidateSet:
    """Materialise validation and test candidates for every domain, deterministic in the inputs."""
    rng = np.random.default_rng([seed, 0xCA4D])
    valid, test = {}, {}
    for name in dataset.domain_names:
        part: DomainSplit = split.domains[name]
        n_items = dataset.domains[name].n_items
        known = part.positives(n_items)
        for target, users, items in (
            (valid, part.valid_users, part.valid_items),
            (test, part.test_users, part.test_items),
        ):
            child = np.random.default_rng(rng.integers(2**63))
            negatives = sample_negatives(users, known, n_items, n_negatives, child, domain=name)
            target[name] = DomainCandidates(users=users, positives=items, negatives=negatives)
    return CandidateSet(valid=valid, test=test, n_negatives=n_negatives, seed=seed)
