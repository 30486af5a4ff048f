"""Shared fixtures: a tiny deterministic dataset and the location of ../shared/data."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.dataset import Dataset, DomainData

# One intra-op thread: test tensors are small, and OpenMP spin-waiting makes multi-threaded
# kernels orders of magnitude slower whenever other processes share the cores.
torch.set_num_threads(1)
# Tests never write to the user's prepared-dataset cache; tests/test_data_cache.py points it
# at temporary folders.
os.environ.setdefault("HARNESS_CACHE_DIR", "off")

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


# --- A small synthetic dataset with a planted preference signal, shared by method tests ------

PLANTED_CONFIG = {
    "loader": "synthetic",
    "preset": "quickstart",
    "n_users": 400,
    "n_items": [400, 250, 300],
    "n_interactions": [6000, 3000, 2500],
    "max_user_fraction": 0.2,
    "popularity_exponent": 0.5,  # weak enough that popularity alone loses to personalisation
}
PLANTED_NEGATIVES = 49
# Expected NDCG@10 of a random ranking of 1 + 49 candidates (positions uniform on 1..50).
RANDOM_NDCG10 = sum(1 / math.log2(p + 1) for p in range(1, 11)) / (PLANTED_NEGATIVES + 1)


@functools.lru_cache(maxsize=1)
def planted_setup():
    """(dataset, split, candidates) of the planted dataset; built once per test session."""
    from harness.data.loaders import get_loader
    from harness.protocol.candidates import build_candidates
    from harness.protocol.split import leave_one_out

    loader = get_loader("synthetic")
    ds = loader.load(loader.config_model.model_validate(PLANTED_CONFIG), Path("."))
    split = leave_one_out(ds, 0)
    return ds, split, build_candidates(ds, split, PLANTED_NEGATIVES, 0)


def planted_training_data(device: str = "cpu"):
    """(TrainingData, validator) for the planted dataset: training pairs only."""
    import torch

    from harness.evaluation.evaluator import CandidateValidator, TensorCandidates
    from methods.base import TrainingData

    ds, split, cands = planted_setup()
    dev = torch.device(device)
    data = TrainingData(
        n_users=ds.n_users,
        domains=ds.domain_names,
        n_items={d: ds.domains[d].n_items for d in ds.domain_names},
        users={
            d: torch.as_tensor(split.domains[d].train_users, device=dev) for d in ds.domain_names
        },
        items={
            d: torch.as_tensor(split.domains[d].train_items, device=dev) for d in ds.domain_names
        },
    )
    validator = CandidateValidator(
        {d: TensorCandidates.from_numpy(c, dev) for d, c in cands.valid.items()}
    )
    return data, validator


def fit_planted(method_cls, params, seed: int = 0):
    """Fit ``method_cls`` on the planted data; return (method, summary, validator)."""
    import torch

    from methods.base import FitContext

    data, validator = planted_training_data()
    method = method_cls(params, data.n_users, data.n_items)
    summary = method.fit(
        data, FitContext(seed=seed, device=torch.device("cpu"), validate=validator)
    )
    return method, summary, validator


@pytest.fixture(autouse=True)
def _no_drain_left_over():
    """The drain flag is process-wide: a test that drains a run must not drain the next one."""
    from harness.runner.executor import DRAIN

    DRAIN.clear()
    yield
    DRAIN.clear()
