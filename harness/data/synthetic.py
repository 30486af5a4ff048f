"""Synthetic cross-domain implicit feedback with a planted, shared preference signal.

Why: real sets are few and small; a generator lets tests and benchmarks control the amount of
cross-domain signal, the sparsity of users and the item popularity skew, with a known truth.

Model (all vectorised with numpy; every stream is seeded from (seed, purpose[, domain])):

* users share a latent ``s_u ~ N(0, I_r)`` and have a per-domain latent ``t_ud ~ N(0, I_r)``;
  ``z_ud = (a s_u + (1 - a) t_ud) / sqrt(a^2 + (1 - a)^2)`` with ``a = shared_weight`` (the
  normalisation keeps ``z`` unit-variance so ``temperature`` means the same for every ``a``);
* each domain has ``K`` unit cluster vectors ``c_dk``; the user's cluster preference is
  ``softmax_k(<z_ud, c_dk> / temperature)``; within a cluster, items have Zipf popularity
  ``rank^-popularity_exponent``, so ``P(i | u, d) = pi_udk(i) * p(i | k(i))``;
* activity: ``n_ud = min(cap_d, 1 + Poisson(scale_d * b_u * m_ud))`` with log-normal user base
  ``b_u`` (``activity_sigma``) and log-normal user-domain multiplier ``m_ud``
  (``domain_activity_sigma``); ``scale_d`` is solved so the expected domain total matches the
  target, and ``cap_d = max_user_fraction * n_items_d``. Every user has >= 1 interaction in
  every domain (like the paper's all-domain Amazon users) and many have only 1-2;
* each user draws distinct items (oversample, dedupe, truncate, top up the few who fall short);
* the catalogue is larger than ``n_items`` and solved so that the expected number of items with
  at least one interaction equals ``n_items``; unseen items are dropped, so as in real data
  every item in a vocabulary has an interaction;
* timestamps: each user's interactions over all domains are put in a random order with
  positive integer gaps (seconds), so "last item by time" is well defined and is a draw from
  the same preference as the rest.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from harness.data.dataset import Dataset, DomainData

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "SyntheticParams",
    "SyntheticTruth",
    "generate",
    "with_overrides",
]

GENERATOR_VERSION = 1
_MAX_ROUNDS = 8
_T0 = 1_262_304_000  # 2010-01-01 UTC; start of the synthetic time axis


def _cap(n_items: int, fraction: float) -> int:
    """Most interactions one user may have in a domain of ``n_items`` items."""
    return max(1, int(fraction * n_items))


@dataclass(frozen=True)
class SyntheticParams:
    """Fully resolved generator parameters (a preset plus overrides)."""

    n_users: int
    domains: tuple[str, ...]
    n_items: tuple[int, ...]  # target items with >= 1 interaction, per domain
    n_interactions: tuple[int, ...]  # target distinct (user, item) pairs, per domain
    latent_dim: int = 16
    n_clusters: int = 16
    shared_weight: float = 0.6
    temperature: float = 0.5
    activity_sigma: float = 1.0
    domain_activity_sigma: float = 0.75
    popularity_exponent: float = 0.8
    max_user_fraction: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        d = len(self.domains)
        if d == 0 or len(set(self.domains)) != d:
            raise ValueError("domains must be non-empty and distinct")
        if len(self.n_items) != d or len(self.n_interactions) != d:
            raise ValueError("n_items and n_interactions need one entry per domain")
        if not 0.0 <= self.shared_weight <= 1.0:
            raise ValueError("shared_weight must lie in [0, 1]")
        if self.temperature <= 0 or self.latent_dim < 1 or self.n_clusters < 1:
            raise ValueError("temperature, latent_dim and n_clusters must be positive")
        for name, items, total in zip(self.domains, self.n_items, self.n_interactions, strict=True):
            cap = _cap(items, self.max_user_fraction)
            if items < 1 or total < self.n_users or total > self.n_users * cap:
                raise ValueError(
                    f"domain {name!r}: need n_items >= 1 and n_users <= n_interactions <= "
                    f"n_users * cap ({self.n_users} * {cap}); got {items} items, {total} rows"
                )


PRESETS: dict[str, SyntheticParams] = {
    # Shaped like the paper's Amazon (books / movies / electronics, users in all domains).
    "amazon": SyntheticParams(
        n_users=26_507,
        domains=("books", "movies", "electronics"),
        n_items=(102_800, 14_912, 26_933),
        n_interactions=(311_539, 153_361, 119_342),
        n_clusters=64,
    ),
    # Small enough for tests and a first run on a laptop.
    "quickstart": SyntheticParams(
        n_users=1_500,
        domains=("books", "movies", "electronics"),
        n_items=(3_000, 1_000, 1_500),
        n_interactions=(25_000, 12_000, 10_000),
        n_clusters=16,
    ),
}


@dataclass(frozen=True)
class SyntheticTruth:
    """The generating latents, indexed like the returned Dataset (users, local items)."""

    params: SyntheticParams
    shared: np.ndarray  # [n_users, r]
    specific: dict[str, np.ndarray] = field(default_factory=dict)  # domain -> [n_users, r]
    cluster_vectors: dict[str, np.ndarray] = field(default_factory=dict)  # domain -> [K, r]
    item_cluster: dict[str, np.ndarray] = field(default_factory=dict)  # domain -> [n_items]
    item_log_weight: dict[str, np.ndarray] = field(default_factory=dict)  # log p(i | cluster)

    def user_factor(self, domain: str, users: np.ndarray, shared_only: bool = False) -> np.ndarray:
        """``z_ud`` for ``users``; with ``shared_only`` the cross-domain part ``s_u`` alone."""
        if shared_only:
            return self.shared[users]
        a = self.params.shared_weight
        mix = a * self.shared[users] + (1.0 - a) * self.specific[domain][users]
        return mix / math.hypot(a, 1.0 - a)

    def log_preference(
        self, domain: str, users: np.ndarray, shared_only: bool = False
    ) -> np.ndarray:
        """log P(item | user, domain) up to a per-user constant, shape [len(users), n_items]."""
        z = self.user_factor(domain, np.asarray(users), shared_only)
        logits = z @ self.cluster_vectors[domain].T / self.params.temperature
        log_pi = logits - _logsumexp(logits)
        return log_pi[:, self.item_cluster[domain]] + self.item_log_weight[domain][None, :]


def generate(params: SyntheticParams) -> tuple[Dataset, SyntheticTruth]:
    """Generate the dataset and its truth; identical params give identical arrays."""
    n_users, r = params.n_users, params.latent_dim
    rng = _rng(params.seed, "users")
    shared = rng.standard_normal((n_users, r))
    base_activity = rng.lognormal(0.0, params.activity_sigma, n_users)

    truth = SyntheticTruth(params=params, shared=shared)
    sampled: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name, n_items, n_rows in zip(
        params.domains, params.n_items, params.n_interactions, strict=True
    ):
        sampled[name] = _generate_domain(params, name, n_items, n_rows, base_activity, truth)

    timestamps = _timestamps(params, [sampled[d][0] for d in params.domains])
    width = len(str(n_users - 1))
    user_ids = np.asarray([f"u{i:0{width}d}" for i in range(n_users)], dtype=object)
    domains = {}
    for name, ts in zip(params.domains, timestamps, strict=True):
        users, items, item_ids = sampled[name]
        order = np.lexsort((items, ts, users))
        domains[name] = DomainData(
            name=name,
            item_ids=item_ids,
            users=users[order],
            items=items[order],
            timestamps=ts[order],
        )
    source = {
        "loader": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "params": asdict(params),
    }
    dataset = Dataset(name="synthetic", user_ids=user_ids, domains=domains, source=source)
    dataset.validate()
    return dataset, truth


def with_overrides(params: SyntheticParams, **overrides: object) -> SyntheticParams:
    """A copy of ``params`` with the non-None ``overrides`` applied (and re-validated)."""
    return replace(params, **{k: v for k, v in overrides.items() if v is not None})


# --- one domain -------------------------------------------------------------------------------


def _generate_domain(
    params: SyntheticParams,
    name: str,
    n_items: int,
    n_rows: int,
    base_activity: np.ndarray,
    truth: SyntheticTruth,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample one domain; fills ``truth`` and returns (users, local items, item_ids)."""
    rng = _rng(params.seed, "domain", name)
    n_users, r, k = params.n_users, params.latent_dim, params.n_clusters
    specific = rng.standard_normal((n_users, r))
    clusters = rng.standard_normal((k, r))
    clusters /= np.linalg.norm(clusters, axis=1, keepdims=True)
    truth.specific[name] = specific
    truth.cluster_vectors[name] = clusters
    z = truth.user_factor(name, np.arange(n_users))
    logits = z @ clusters.T / params.temperature
    pi = np.exp(logits - _logsumexp(logits))  # [U, K]

    cap = _cap(n_items, params.max_user_fraction)
    rate = base_activity * rng.lognormal(0.0, params.domain_activity_sigma, n_users)
    scale = _solve_scale(rate, cap, n_rows)
    counts = np.minimum(1 + rng.poisson(scale * rate), cap).astype(np.int64)

    # Catalogue: clusters are contiguous blocks in "cluster order"; a random permutation maps
    # cluster order to catalogue ids so ids carry no cluster information.
    cluster_mass = counts.astype(np.float64) @ pi  # expected draws per cluster
    size = _solve_catalogue(cluster_mass, params.popularity_exponent, n_items)
    block_sizes, log_w = _zipf_blocks(size, k, params.popularity_exponent)
    block_of = np.repeat(np.arange(k), block_sizes)
    block_start = np.concatenate([[0], np.cumsum(block_sizes)[:-1]])
    # Each block's weights sum to 1, so the global cumulative runs over (k, k + 1] in block k.
    cdf = np.cumsum(np.exp(log_w))
    cdf[np.cumsum(block_sizes) - 1] = np.arange(1, k + 1)
    catalogue_of = rng.permutation(size)  # cluster-order position -> catalogue id

    flat_pi = np.cumsum(pi, axis=1)
    flat_pi[:, -1] = 1.0
    flat_pi = (flat_pi + np.arange(n_users)[:, None]).ravel()

    def draw(users: np.ndarray) -> np.ndarray:
        """Cluster-order positions for one draw per entry of ``users``."""
        v = users + rng.random(len(users))
        cl = np.searchsorted(flat_pi, v, side="right") - users * k
        cl = np.clip(cl, 0, k - 1)
        pos = np.searchsorted(cdf, cl + rng.random(len(users)), side="right")
        return np.clip(pos, block_start[cl], block_start[cl] + block_sizes[cl] - 1)

    keys = _sample_distinct(counts, draw, size)
    users = keys // size
    positions = keys % size
    catalogue = catalogue_of[positions]
    seen, local = np.unique(catalogue, return_inverse=True)
    width = len(str(size - 1))
    item_ids = np.asarray([f"{name[:1]}{c:0{width}d}" for c in seen.tolist()], dtype=object)
    position_of = np.empty(size, dtype=np.int64)
    position_of[catalogue_of] = np.arange(size)
    truth.item_cluster[name] = block_of[position_of[seen]]
    truth.item_log_weight[name] = log_w[position_of[seen]]
    return users.astype(np.int64), local.astype(np.int64), item_ids


def _sample_distinct(
    counts: np.ndarray, draw: Callable[[np.ndarray], np.ndarray], size: int
) -> np.ndarray:
    """Keys ``user * size + position`` with about ``counts[u]`` distinct positions per user.

    Oversample, drop repeats (keeping draw order, so truncation keeps a sequential draw without
    replacement), truncate; users still short get further rounds. Vectorised per round.
    """
    n_users = len(counts)
    keys = np.empty(0, dtype=np.int64)
    need = counts.copy()
    active = np.arange(n_users)
    for round_ in range(_MAX_ROUNDS):
        per_user = np.ceil(need[active] * (1.3 if round_ == 0 else 2.0)).astype(np.int64) + 2
        users = np.repeat(active, per_user)
        fresh = users * size + draw(users)
        combined = np.concatenate([keys, fresh])
        _, first = np.unique(combined, return_index=True)
        combined = combined[np.sort(first)]
        owner = combined // size
        order = np.argsort(owner, kind="stable")
        owner_sorted = owner[order]
        start = np.searchsorted(owner_sorted, np.arange(n_users))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order)) - start[owner_sorted]
        keys = combined[rank < counts[owner]]
        have = np.bincount(keys // size, minlength=n_users)
        need = counts - have
        active = np.flatnonzero(need > 0)
        if not len(active):
            break
    return keys


# --- helpers ----------------------------------------------------------------------------------


def _rng(seed: int, *purpose: str) -> np.random.Generator:
    """Independent stream per purpose (and domain name), stable under adding other domains."""
    return np.random.default_rng([seed, *(zlib.crc32(p.encode()) for p in purpose)])


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=1, keepdims=True))


def _expected_capped_total(mean: np.ndarray, cap: int) -> float:
    """``sum_u E[min(cap, 1 + Poisson(mean_u))]``, exact where the cap can bind.

    ``E[min(L, P)] = sum_{j < L} P(P > j)``; users whose mean lies far below the cap
    contribute ``1 + mean``, the rest (the heaviest few) are summed exactly.
    """
    limit = cap - 1
    near = mean + 10.0 * np.sqrt(mean) + 10.0 >= limit
    total = float((1.0 + mean[~near]).sum())
    if near.any() and limit > 0:
        m = np.maximum(mean[near], 1e-300)[:, None]
        j = np.arange(limit)
        log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, limit)))])
        cdf = np.cumsum(np.exp(j * np.log(m) - m - log_fact[j]), axis=1)
        total += float((1.0 + np.clip(1.0 - cdf, 0.0, 1.0).sum(axis=1)).sum())
    elif near.any():
        total += float(near.sum())
    return total


def _solve_scale(rate: np.ndarray, cap: int, target: int) -> float:
    """``scale`` with ``sum_u E[min(cap, 1 + Poisson(scale * rate_u))] = target`` (bisection)."""
    lo, hi = 0.0, 1.0
    while _expected_capped_total(hi * rate, cap) < target and hi < 1e12:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _expected_capped_total(mid * rate, cap) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-9 * hi:
            break
    return 0.5 * (lo + hi)


def _zipf_blocks(size: int, k: int, exponent: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-ish blocks of ``size`` items over ``k`` clusters and log p(item | cluster)."""
    block_sizes = np.full(k, size // k, dtype=np.int64)
    block_sizes[: size % k] += 1
    block_start = np.concatenate([[0], np.cumsum(block_sizes)[:-1]])
    rank = np.arange(size) - np.repeat(block_start, block_sizes) + 1
    log_w = -exponent * np.log(rank)
    norm = np.log(np.add.reduceat(np.exp(log_w), block_start))
    return block_sizes, log_w - np.repeat(norm, block_sizes)


def _solve_catalogue(cluster_mass: np.ndarray, exponent: float, target: int) -> int:
    """Smallest catalogue whose expected number of items drawn at least once is >= target.

    Expected count of an item is ``mass_k * p(i | k)`` (draws treated as Poisson); falls back
    to 20x the target if the popularity skew never reaches it.
    """
    k = len(cluster_mass)

    def coverage(size: int) -> float:
        block_sizes, log_w = _zipf_blocks(size, k, exponent)
        mean = np.repeat(cluster_mass, block_sizes) * np.exp(log_w)
        return float((-np.expm1(-mean)).sum())

    lo, hi = max(target, k), max(target, k) * 20
    if coverage(hi) < target:
        return hi
    while hi - lo > max(1, target // 2000):
        mid = (lo + hi) // 2
        if coverage(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return hi


def _timestamps(params: SyntheticParams, users_per_domain: list[np.ndarray]) -> list[np.ndarray]:
    """Strictly increasing integer times per user over all domains, in random order."""
    rng = _rng(params.seed, "time")
    users = np.concatenate(users_per_domain)
    order = np.lexsort((rng.random(len(users)), users))
    gaps = rng.integers(60, 3 * 86_400, len(users))  # 1 min .. 3 days between interactions
    total = np.cumsum(gaps)
    sorted_users = users[order]
    start = np.searchsorted(sorted_users, np.arange(params.n_users))
    before = np.concatenate([[0], total])[start]  # cumulative gap before each user's block
    user_start = _T0 + rng.integers(0, 2 * 365 * 86_400, params.n_users)
    ts = np.empty(len(users), dtype=np.int64)
    ts[order] = user_start[sorted_users] + total - before[sorted_users]
    bounds = np.cumsum([len(u) for u in users_per_domain])[:-1]
    return np.split(ts, bounds)
