"""HeroGraph: neighbour sampling, equalised domain steps, attention, learning, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from methods._cdr_graph import CSR
from methods.base import FitContext
from methods.herograph import (
    HeroGraph,
    HeroGraphParams,
    _Attention,
    domain_batch_sizes,
    epoch_chunks,
)
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


def test_sparse_attention_equals_the_edge_list_reference_with_gradients():
    """The sparse-product path (training and evaluation) computes ``_Attention.forward``'s
    function and gradients, with repeated neighbours (draws with replacement) and centres
    without any neighbour."""
    gen = torch.Generator().manual_seed(0)
    att = _Attention(6, seeded_generator(1))
    table = torch.randn(30, 6, generator=gen)
    counts = torch.tensor([3, 0, 5, 1, 0, 4])
    seg = torch.repeat_interleave(torch.arange(6), counts)
    nbr = torch.randint(30, (len(seg),), generator=gen)
    nbr[1] = nbr[0]  # a repeated neighbour
    centers = torch.tensor([2, 7, 7, 11, 29, 0])
    upstream = torch.randn(6, 6, generator=gen)

    def run(sparse: bool):
        rows = table.clone().requires_grad_()
        att.zero_grad()
        if sparse:
            out, weights = att.sparse(rows[centers], rows, nbr, seg, return_weights=True)
        else:
            out, weights = att(rows[centers], rows[nbr], seg, return_weights=True)
        (out * upstream).sum().backward()
        return out.detach(), weights.detach(), rows.grad, [p.grad.clone() for p in att.parameters()]

    fast, slow = run(True), run(False)
    assert torch.allclose(fast[0], slow[0], atol=1e-6)
    assert torch.allclose(fast[1], slow[1], atol=1e-6)
    assert torch.allclose(fast[2], slow[2], atol=1e-6)
    assert slow[2].abs().sum() > 0
    for a, b in zip(fast[3], slow[3], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
        assert b.abs().sum() > 0


def test_step_gradient_of_the_graph_table_equals_autograd_through_the_reference():
    """One training step's graph-table gradient (sparse products accumulated into the lazy
    table's buffer plus the centre rows' hooks) equals autograd through the edge-list
    reference attention on the same sampled neighbours."""
    params = HeroGraphParams(embedding_size=8, batch_size=256, max_epochs=1, n_neighbours=3)
    method, _, _ = fit_planted(HeroGraph, params)
    data, _ = planted_training_data()
    batches = {
        d: (data.users[d][:40], data.items[d][:40], data.items[d][40:80]) for d in data.domains
    }
    losses = method._step_losses(batches, seeded_generator(9))
    method.att_user.zero_grad()
    method.att_item.zero_grad()
    sum(bpr + l2 for bpr, l2 in losses.values()).backward()
    (rows, buffer), *_ = method.graph_table._pending
    fast = buffer.grad.clone()
    fast_att = [p.grad.clone() for p in method.att_user.parameters()]
    for table in method._tables():
        table.discard()

    # Reference: the same neighbours (same generator state), expanded rows, autograd.
    gen = seeded_generator(9)
    table = method.graph_table.weights.clone().requires_grad_()
    method.att_user.zero_grad()
    total = 0
    for d, (users, pos, neg) in batches.items():
        items = torch.cat([pos, neg])
        nodes = items + method.offsets[d] + method.n_users
        seg_u, nbr_u = method.graph.neighbours(users, 3, gen)
        seg_i, nbr_i = method.graph.neighbours(nodes, 3, gen)
        g_u = method.att_user(table[users], table[nbr_u], seg_u)
        g_i = method.att_item(table[nodes], table[nbr_i], seg_i)
        z_u = torch.cat([method.local_users[d].weights[users], g_u], 1)
        z_i = torch.cat([method.local_items[d].weights[items], g_i], 1)
        b = len(users)
        bpr = torch.nn.functional.softplus(
            torch.linalg.vecdot(z_u, z_i[b:]) - torch.linalg.vecdot(z_u, z_i[:b])
        ).mean()
        squares = table[users].pow(2).sum() + table[nodes].pow(2).sum()
        total = total + bpr + params.reg * squares / (2 * b)
    total.backward()
    slow = table.grad[rows]
    assert slow.abs().sum() > 0
    assert torch.allclose(fast, slow, atol=1e-6)
    assert table.grad.index_fill(0, rows, 0).abs().sum() == 0  # nothing outside the rows
    for a, b in zip(fast_att, method.att_user.parameters(), strict=True):
        assert torch.allclose(a, b.grad, atol=1e-6)
