"""Shared fixtures: a tiny deterministic dataset and real data through the dataset registry."""

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


# --- Real data through the dataset registry ---------------------------------------------------
# Tests that need real data get it from the data home ($HARNESS_DATA), else fetch it from
# $HARNESS_DATA_MIRROR, else from the pinned upstream URLs. Where none is reachable they are
# skipped with the fetch command as the reason; HARNESS_REQUIRE_REAL_DATA=1 (set by .ci/run when
# ../shared/data is there) turns that skip into a failure.
REQUIRE_ENV = "HARNESS_REQUIRE_REAL_DATA"


@functools.cache
def _fetch_outcome(name: str, paths: tuple[str, ...]) -> str | None:
    """None when the registered files are in place (fetched if needed), else why not."""
    from rich.console import Console

    from harness.data.fetch import FetchError, fetch_entry, mirror_from_env
    from harness.data.registry import get_entry

    entry = get_entry(name)
    files = [entry.file(p) for p in paths]
    try:
        fetch_entry(entry, mirror=mirror_from_env(), console=Console(quiet=True), files=files,
                    retries=1, backoff_s=0.2, timeout_s=20.0)  # fmt: skip
    except FetchError as exc:
        return str(exc)
    return None


def require_real_files(paths) -> None:
    """Skip (or fail, under HARNESS_REQUIRE_REAL_DATA=1) unless the registered data files
    ``paths`` are in the data home, fetching them first."""
    from harness.data.home import registered_files

    missing = [Path(p) for p in paths if not Path(p).is_file()]
    if not missing:
        return
    found = registered_files(missing)
    if not found:
        pytest.fail(f"{missing[0]} is no registered data file")
    for name, files in found.items():
        why = _fetch_outcome(name, tuple(sorted(f.path for f in files)))
        if why is not None:
            reason = (
                f"real data {name!r} is not in the data home and could not be fetched; run "
                f"`harness data fetch {name}` (or set $HARNESS_DATA_MIRROR): {why}"
            )
            if os.environ.get(REQUIRE_ENV) == "1":
                pytest.fail(reason)
            pytest.skip(reason)


def real_data_home(name: str, parts: tuple[str, ...] = ()) -> Path:
    """The data home, holding registered dataset ``name`` (only ``parts`` of it, if given)."""
    from harness.data.home import data_home, entry_dir
    from harness.data.registry import get_entry

    entry = get_entry(name)
    folder = entry_dir(entry)
    require_real_files([folder / f.path for f in entry.select(list(parts))])
    return data_home()


def require_spec_data(spec: Path) -> None:
    """Make the data files a spec reads available (or skip / fail as above)."""
    from harness.spec.load import load_spec

    loaded = load_spec(spec, check_files=False)
    require_real_files(
        path
        for config in loaded.loader_configs.values()
        for path, _hint in config.required_files(loaded.base_dir)
    )


@pytest.fixture
def douban_home() -> Path:
    """The data home with the registered Douban books + music."""
    return real_data_home("douban")


@pytest.fixture
def amazon_pairs_home() -> Path:
    """The data home with the registered Amazon pair cloth_sport."""
    return real_data_home("amazon-pairs", ("cloth_sport",))


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
