"""Synthetic generator: determinism, preset shape, sparsity, timestamps and planted signal."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from harness.data.dataset import Dataset
from harness.data.loaders import load_dataset, parse_loader_config
from harness.data.loaders.synthetic import SyntheticConfig, generate_from_config
from harness.data.stats import dataset_statistics
from harness.data.synthetic import PRESETS, SyntheticTruth


@pytest.fixture(scope="module")
def quickstart() -> tuple[Dataset, SyntheticTruth]:
    return generate_from_config(SyntheticConfig(preset="quickstart", seed=0))


def arrays(ds: Dataset) -> list[np.ndarray]:
    out = [ds.user_ids]
    for domain in ds.domains.values():
        out += [domain.item_ids, domain.users, domain.items, domain.timestamps]
    return out


def test_same_seed_same_data_other_seed_differs(quickstart):
    ds, _ = quickstart
    again = load_dataset({"loader": "synthetic", "preset": "quickstart", "seed": 0}, ".")
    assert again.fingerprint() == ds.fingerprint()
    for a, b in zip(arrays(ds), arrays(again), strict=True):
        assert np.array_equal(a, b)
    other = load_dataset({"loader": "synthetic", "seed": 1}, ".")
    assert other.fingerprint() != ds.fingerprint()
    assert not np.array_equal(other.domains["books"].items, ds.domains["books"].items)


def test_quickstart_shape_within_tolerance(quickstart):
    ds, _ = quickstart
    ds.validate()
    preset = PRESETS["quickstart"]
    assert ds.n_users == preset.n_users == 1500
    assert ds.domain_names == ["books", "movies", "electronics"]
    for name, items, total in zip(
        preset.domains, preset.n_items, preset.n_interactions, strict=True
    ):
        domain = ds.domains[name]
        assert domain.n_interactions == pytest.approx(total, rel=0.02)
        assert domain.n_items == pytest.approx(items, rel=0.03)
        # every item in the vocabulary was interacted with, like real data
        assert len(np.unique(domain.items)) == domain.n_items
        assert len(np.unique(domain.users)) == ds.n_users  # users are in every domain
        assert domain.items.dtype == np.int64 and domain.timestamps.dtype == np.int64
    assert ds.source["preset"] == "quickstart" and ds.source["params"]["seed"] == 0


def test_many_users_are_sparse_in_some_domain(quickstart):
    ds, _ = quickstart
    counts = np.stack([np.bincount(d.users, minlength=ds.n_users) for d in ds.domains.values()])
    sparse_somewhere = (counts <= 2).any(axis=0).mean()
    assert sparse_somewhere > 0.3
    stats = dataset_statistics(ds)
    assert stats["share_users_1"][2] > 0.1  # electronics has many single-interaction users
    assert stats["act_max"][0] <= int(0.05 * 3000)  # per-user cap

    item_counts = np.bincount(ds.domains["books"].items)
    top = np.sort(item_counts)[::-1]
    assert top[: len(top) // 10].sum() > 0.3 * top.sum()  # skewed popularity


def test_timestamps_strictly_increase_per_user_across_domains(quickstart):
    ds, _ = quickstart
    users = np.concatenate([d.users for d in ds.domains.values()])
    stamps = np.concatenate([d.timestamps for d in ds.domains.values()])
    order = np.lexsort((stamps, users))
    same_user = users[order][1:] == users[order][:-1]
    assert (np.diff(stamps[order])[same_user] > 0).all()
    for domain in ds.domains.values():  # rows ordered by (user, time)
        assert (np.diff(domain.users) >= 0).all()


def _hit_rate(scores: np.ndarray, train_mask: np.ndarray, target: np.ndarray, k: int = 10):
    scores = np.where(train_mask, -np.inf, scores)
    own = scores[np.arange(len(target)), target]
    return float(((scores > own[:, None]).sum(axis=1) < k).mean())


@pytest.mark.parametrize("domain", ["books", "electronics"])
def test_planted_signal_beats_popularity_on_last_item(quickstart, domain):
    ds, truth = quickstart
    data = ds.domains[domain]
    last = np.r_[np.flatnonzero(np.diff(data.users)), len(data.users) - 1]  # latest per user
    is_train = np.ones(len(data.users), dtype=bool)
    is_train[last] = False
    counts = np.bincount(data.users, minlength=ds.n_users)
    users = data.users[last][counts[data.users[last]] >= 2]
    target = data.items[last][counts[data.users[last]] >= 2]
    mask = np.zeros((ds.n_users, data.n_items), dtype=bool)
    mask[data.users[is_train], data.items[is_train]] = True
    mask = mask[users]
    popularity = np.bincount(data.items[is_train], minlength=data.n_items).astype(float)

    pop = _hit_rate(np.broadcast_to(popularity, mask.shape), mask, target)
    oracle = _hit_rate(truth.log_preference(domain, users), mask, target)
    shared = _hit_rate(truth.log_preference(domain, users, shared_only=True), mask, target)
    assert oracle > 2 * pop
    assert shared > 1.5 * pop  # the cross-domain (shared) part alone carries signal


def test_domain_subset_reproduces_that_domain():
    full, _ = generate_from_config(SyntheticConfig())
    part, _ = generate_from_config(SyntheticConfig(domains=["movies"]))
    a, b = full.domains["movies"], part.domains["movies"]
    assert np.array_equal(a.item_ids, b.item_ids)
    key = lambda d: np.sort(d.users * d.n_items + d.items)  # noqa: E731
    assert np.array_equal(key(a), key(b))


def test_config_overrides_and_custom():
    config = SyntheticConfig(n_users=300, n_items={"books": 5000}, n_clusters=4)
    params = config.resolve()
    assert (params.n_users, params.n_items[0], params.n_items[1], params.n_clusters) == (
        300,
        5000,
        PRESETS["quickstart"].n_items[1],
        4,
    )
    custom = parse_loader_config(
        {
            "loader": "synthetic",
            "preset": "custom",
            "n_users": 200,
            "domains": ["a", "b"],
            "n_items": [100, 50],
            "n_interactions": [800, 400],
            "seed": 5,
        }
    )
    ds = load_dataset(custom, ".")
    assert ds.domain_names == ["a", "b"] and ds.n_users == 200
    assert ds.domains["a"].n_interactions == pytest.approx(800, rel=0.03)
    with pytest.raises(ValidationError, match="custom"):
        SyntheticConfig(preset="custom", n_users=10)
    with pytest.raises(ValidationError, match="lack a size"):
        SyntheticConfig(domains=["books", "toys"])
    with pytest.raises(ValidationError):  # fewer interactions than users
        SyntheticConfig(n_interactions={"books": 100})
