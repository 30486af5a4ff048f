"""HeroGraph: neighbour sampling, equalised domain steps, attention, learning, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from methods._cdr_graph import CSR
from methods.base import FitContext
from methods.herograph import HeroGraph, HeroGraphParams, domain_batch_sizes, epoch_chunks
from methods.popularity import Popularity, PopularityParams
from methods.training import seeded_generator
from tests.conftest import RANDOM_NDCG10, fit_planted, planted_training_data


def _star_graph() -> tuple[CSR, set[tuple[int, int]]]:
    """Users 0..3, items 4..63: user 0 has 60 items, user 1 has 3, user 2 one, user 3 none."""
    users = torch.cat([torch.zeros(60, dtype=torch.long), torch.tensor([1, 1, 1, 2])])
    items = torch.cat([torch.arange(4, 64), torch.tensor([4, 5, 6, 7])])
    edges = set(zip(users.tolist(), items.tolist(), strict=True))
    edges |= {(b, a) for a, b in edges}
    return CSR.symmetric(users, items, 64), edges


def test_neighbour_sampler_returns_only_true_neighbours_and_at_most_s():
    graph, edges = _star_graph()
    centers = torch.tensor([0, 1, 2, 3, 4, 0])
    for seed in range(5):
        seg, nbr = graph.neighbours(centers, 5, seeded_generator(seed))
        pairs = list(zip(centers[seg].tolist(), nbr.tolist(), strict=True))
        assert all(p in edges for p in pairs)
        counts = torch.bincount(seg, minlength=len(centers))
        # degree 60 -> S draws; degree <= S -> every neighbour exactly once; isolated -> none
        assert counts.tolist() == [5, 3, 1, 0, 2, 5]
        assert sorted(nbr[seg == 1].tolist()) == [4, 5, 6]
    # Evaluation: all neighbours, each once.
    seg, nbr = graph.neighbours(torch.tensor([0]))
    assert sorted(nbr.tolist()) == list(range(4, 64))
    # Sampling a degree-60 node many times reaches its whole neighbourhood (uniform draws).
    seen = set()
    for seed in range(40):
        seen |= set(graph.neighbours(torch.tensor([0]), 5, seeded_generator(seed))[1].tolist())
    assert len(seen) > 50


def test_domain_batch_sizes_equalise_steps_per_epoch():
    sizes = {"books": 263_535, "movies": 111_315, "electronics": 79_439}
    batch = domain_batch_sizes(sizes, 2048)
    assert batch["books"] == 2048
    assert batch == {d: math.ceil(2048 * n / 263_535) for d, n in sizes.items()}
    steps = {d: math.ceil(n / batch[d]) for d, n in sizes.items()}
    assert len(set(steps.values())) == 1, steps
    # The epoch splits every domain into exactly the same number of chunks, each <= B_d,
    # even for sizes where rounding would give a domain one batch less.
    odd = {"a": 4097, "b": 5}
    b_odd = domain_batch_sizes(odd, 2048)
    n_steps = math.ceil(4097 / 2048)
    for d, n in odd.items():
        chunks = epoch_chunks(n, n_steps)
        assert len(chunks) == n_steps
        assert chunks[0][0] == 0 and chunks[-1][1] == n
        assert all(b - a <= b_odd[d] for a, b in chunks)
        assert all(chunks[i][1] == chunks[i + 1][0] for i in range(n_steps - 1))


def test_fit_takes_one_batch_of_every_domain_per_step(monkeypatch):
    calls: list[dict[str, int]] = []
    real = HeroGraph._step_losses

    def spy(self, batches, gen):
        calls.append({d: len(b[0]) for d, b in batches.items()})
        return real(self, batches, gen)

    monkeypatch.setattr(HeroGraph, "_step_losses", spy)
    params = HeroGraphParams(embedding_size=8, batch_size=512, max_epochs=2, patience=2)
    _, summary, _ = fit_planted(HeroGraph, params)
    sizes = {d: len(u) for d, u in planted_training_data()[0].users.items()}
    n_steps = math.ceil(max(sizes.values()) / 512)
    assert summary.notes["steps_per_epoch"] == n_steps
    assert len(calls) == 2 * n_steps  # two epochs
    limits = domain_batch_sizes(sizes, 512)
    for call in calls:
        assert set(call) == set(sizes)  # every domain in every step
        assert all(0 < call[d] <= limits[d] for d in sizes)
    for d in sizes:  # each epoch covers each domain's pairs exactly once
        assert sum(call[d] for call in calls[:n_steps]) == sizes[d]


@pytest.fixture(scope="module")
def quick_model() -> HeroGraph:
    params = HeroGraphParams(embedding_size=8, batch_size=256, max_epochs=2, n_neighbours=4)
    return fit_planted(HeroGraph, params)[0]


@pytest.mark.parametrize("users", [True, False])
def test_attention_weights_sum_to_one_per_node(quick_model, users):
    n_users = quick_model.n_users
    nodes = torch.arange(0, 60) if users else torch.arange(n_users, n_users + 60)
    degree = quick_model.graph.degree[nodes]
    for sample in (False, True):
        seg, _, weights = quick_model.attention_weights(
            nodes, users=users, sample=sample, gen=seeded_generator(3)
        )
        assert (weights >= 0).all()
        sums = torch.zeros(len(nodes)).index_add(0, seg, weights)
        assert torch.allclose(sums[degree > 0], torch.ones(int((degree > 0).sum())), atol=1e-5)
        assert (sums[degree == 0] == 0).all()
        counts = torch.bincount(seg, minlength=len(nodes))
        expected = degree if not sample else degree.clamp(max=4)
        assert torch.equal(counts, expected)


def test_evaluation_graph_embedding_equals_training_path_with_every_neighbour():
    """The precomputed (all-neighbour) embeddings match the sampled training path when S is at
    least every degree, so training and evaluation compute the same function."""
    params = HeroGraphParams(embedding_size=8, batch_size=512, max_epochs=1, n_neighbours=10**6)
    method, _, _ = fit_planted(HeroGraph, params)
    users = torch.arange(50)
    with torch.no_grad():
        g = method.graph_embed(users, users=True, sample=True, gen=seeded_generator(0))
    method.refresh()
    user_vec, _ = method._cache["books"]
    assert torch.allclose(user_vec[users, 8:], g, atol=1e-6)


def test_herograph_learns_the_planted_signal():
    params = HeroGraphParams(
        embedding_size=32, batch_size=256, learning_rate=0.01, max_epochs=12, patience=4
    )
    method, summary, validator = fit_planted(HeroGraph, params)
    valid = validator(method.score)
    mean = sum(valid.values()) / len(valid)
    assert mean > 1.5 * RANDOM_NDCG10, valid
    pop, _, _ = fit_planted(Popularity, PopularityParams())
    popular = validator(pop.score)
    assert mean > sum(popular.values()) / len(popular) + 0.01, (valid, popular)
    assert summary.best_valid == pytest.approx(mean)


def test_scores_are_finite_and_deterministic_for_a_seed():
    params = HeroGraphParams(embedding_size=8, batch_size=512, max_epochs=2, n_neighbours=4)
    a, _, _ = fit_planted(HeroGraph, params, seed=0)
    b, _, _ = fit_planted(HeroGraph, params, seed=0)
    c, _, _ = fit_planted(HeroGraph, params, seed=1)
    users = torch.arange(30)
    items = torch.arange(40).expand(30, -1)
    for domain in ("books", "movies"):
        s = a.score(users, domain, items)
        assert torch.isfinite(s).all()
        assert torch.equal(s, b.score(users, domain, items))
        assert not torch.equal(s, c.score(users, domain, items))
        assert torch.allclose(a.score_all(users, domain)[:, :40], s, atol=1e-5)


def test_users_without_interactions_in_a_domain_get_finite_scores():
    data, validator = planted_training_data()
    absent = torch.arange(20)
    keep = ~torch.isin(data.users["movies"], absent)
    users = {**data.users, "movies": data.users["movies"][keep]}
    items = {**data.items, "movies": data.items["movies"][keep]}
    data = type(data)(data.n_users, data.domains, data.n_items, users, items)
    params = HeroGraphParams(embedding_size=8, batch_size=512, max_epochs=1)
    method = HeroGraph(params, data.n_users, data.n_items)
    method.fit(data, FitContext(seed=0, device=torch.device("cpu"), validate=validator))
    scores = method.score_all(absent, "movies")
    assert torch.isfinite(scores).all()
    # Their graph embedding still carries their other domains: not all equal across users.
    assert not torch.allclose(scores[0], scores[1])
