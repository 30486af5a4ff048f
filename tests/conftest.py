"""Shared fixtures: a tiny deterministic dataset and the location of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.data.dataset import Dataset, DomainData

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def make_dataset(
    n_users: int = 60, items: tuple[int, ...] = (300, 150), seed: int = 0, with_time: bool = True
) -> Dataset:
    """Random interactions with varied activity (1 to 30 per user and domain)."""
    rng = np.random.default_rng(seed)
    domains = {}
    for d, n_items in enumerate(items):
        users, its = [], []
        for u in range(n_users):
            count = int(rng.integers(1, 30))
            chosen = rng.choice(n_items, size=count, replace=False)
            users.append(np.full(count, u))
            its.append(chosen)
        users_a, items_a = np.concatenate(users), np.concatenate(its)
        ts = rng.permutation(len(users_a)).astype(np.int64) if with_time else None
        name = f"d{d}"
        domains[name] = DomainData(
            name,
            np.array([f"i{j}" for j in range(n_items)], dtype=object),
            users_a.astype(np.int64),
            items_a.astype(np.int64),
            ts,
        )
    ds = Dataset(
        "tiny",
        np.array([f"u{u}" for u in range(n_users)], dtype=object),
        domains,
        {"loader": "test", "seed": seed},
    )
    ds.validate()
    return ds


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"../shared/data not found at {SHARED_DATA}; the test suite needs it beside "
            f"the repository"
        )
    return SHARED_DATA
