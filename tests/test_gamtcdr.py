"""GA-MTCDR(-P): node2vec walks, masked attention, unclipped cosine, -P, learning, determinism."""

from __future__ import annotations

import pytest
import torch

from methods._cdr_graph import CSR, LazyTable
from methods.base import FitContext, TrainingData
from methods.gamtcdr import (
    GAMTCDR,
    GAMTCDRParams,
    Node2VecParams,
    node2vec,
    random_walks,
    walk_batches,
)
from methods.popularity import Popularity, PopularityParams
from methods.training import seeded_generator
from tests.conftest import RANDOM_NDCG10, fit_planted, planted_training_data

QUICK = dict(
    embedding_size=8,
    batch_size=256,
    batch_unit="positives",
    max_epochs=1,
    n2v_walk_length=20,
    n2v_walks_per_node=2,
)


def _bipartite(n_users: int, n_items: int, n_edges: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(n_users, (n_edges,), generator=gen)
    items = torch.randint(n_items, (n_edges,), generator=gen) + n_users
    return users, items


def test_random_walks_follow_graph_edges_only():
    users, items = _bipartite(30, 40, 120, 0)
    graph = CSR.symmetric(users, items, 70)
    edges = set(zip(users.tolist(), items.tolist(), strict=True))
    edges |= {(b, a) for a, b in edges}
    starts = torch.nonzero(graph.degree > 0).squeeze(1).repeat(3)
    walks = random_walks(graph, starts, 25, seeded_generator(1))
    assert walks.shape == (len(starts), 25)
    assert torch.equal(walks[:, 0], starts)
    steps = zip(walks[:, :-1].reshape(-1).tolist(), walks[:, 1:].reshape(-1).tolist(), strict=True)
    assert all(step in edges for step in steps)
    assert torch.equal(walks, random_walks(graph, starts, 25, seeded_generator(1)))
    assert not torch.equal(walks, random_walks(graph, starts, 25, seeded_generator(2)))


def test_node2vec_separates_disconnected_communities_and_is_seeded():
    # Two disjoint bipartite blocks: users 0-9 with items 20-29, users 10-19 with items 30-39.
    a_users, a_items = _bipartite(10, 10, 40, 1)
    b_users, b_items = _bipartite(10, 10, 40, 2)
    users = torch.cat([a_users, b_users + 10])
    items = torch.cat([a_items + 10, b_items + 20])
    graph = CSR.symmetric(users, items, 40)
    params = Node2VecParams(
        walk_length=20, walks_per_node=20, window=5, batch_walks=32, learning_rate=0.05
    )
    emb = node2vec(graph, 16, params, seeded_generator(0))
    assert torch.equal(emb, node2vec(graph, 16, params, seeded_generator(0)))
    unit = torch.nn.functional.normalize(emb, dim=1)
    sim = unit @ unit.T
    block = torch.tensor([0] * 10 + [1] * 10 + [0] * 10 + [1] * 10)
    same = block.unsqueeze(0) == block.unsqueeze(1)
    off_diagonal = ~torch.eye(40, dtype=torch.bool)
    connected = graph.degree > 0
    pair = connected.unsqueeze(0) & connected.unsqueeze(1) & off_diagonal
    assert sim[same & pair].mean() > sim[~same & pair].mean() + 0.3


def _without(data: TrainingData, domain: str, users: torch.Tensor) -> TrainingData:
    keep = ~torch.isin(data.users[domain], users)
    return TrainingData(
        data.n_users,
        data.domains,
        data.n_items,
        {**data.users, domain: data.users[domain][keep]},
        {**data.items, domain: data.items[domain][keep]},
    )


def _fit(data: TrainingData, validator, seed: int = 0, **kw) -> GAMTCDR:
    method = GAMTCDR(GAMTCDRParams(**{**QUICK, **kw}), data.n_users, data.n_items)
    method.fit(data, FitContext(seed=seed, device=torch.device("cpu"), validate=validator))
    return method


@pytest.fixture(scope="module")
def absent_setup():
    data, validator = planted_training_data()
    absent = torch.arange(20)
    data = _without(data, "movies", absent)  # users 0-19: no movies history
    for domain in ("books", "electronics"):  # users 0-4: no history anywhere
        data = _without(data, domain, absent[:5])
    return data, validator, absent


def test_attention_masks_domains_without_training_history(absent_setup):
    data, validator, absent = absent_setup
    method = _fit(data, validator)
    movies = data.domains.index("movies")
    for target in data.domains:
        weights = method.attention_weights(absent, target).detach()  # [20, D, m]
        assert torch.allclose(weights.sum(1), torch.ones(20, 8), atol=1e-6)
        # Users 0-4: no history anywhere -> uniform over the domains instead of NaN.
        assert torch.allclose(weights[:5], torch.full((5, 3, 8), 1 / 3))
        # Users 5-19 have no movies history: zero weight on movies unless they have no
        # history at all (then uniform, like users 0-4).
        some = method.history[absent].any(1)
        assert some[5:].any()
        assert (weights[5:][some[5:], movies] == 0).all()
    # Everyone with some history: positive weight exactly on the domains with history.
    history = torch.stack([data.counts_per_user(d) > 0 for d in data.domains], 1)
    users = torch.nonzero(history.any(1)).squeeze(1)
    weights = method.attention_weights(users, "books").detach()
    assert torch.equal(weights.gt(0).all(2), history[users])
    assert torch.equal(weights.eq(0).all(2), ~history[users])


def test_users_without_interactions_get_finite_scores(absent_setup):
    data, validator, absent = absent_setup
    for embed in ("onehop", "node2vec"):
        method = _fit(data, validator, graph_embed=embed, n2v_walks_per_node=1)
        for domain in data.domains:
            assert torch.isfinite(method.score_all(absent, domain)).all()


def test_scoring_uses_the_unclipped_cosine():
    data, validator = planted_training_data()
    method = _fit(data, validator, final_relu=False)
    # Negate the item tower's output layer: every cosine flips sign, so the model now scores
    # pairs with negative cosine; the training clip (1e-6) must not floor them.
    last = method.item_towers["books"][-1]
    with torch.no_grad():
        last.weight.neg_()
        last.bias.neg_()
    method.refresh()
    users = torch.arange(40)
    scores = method.score_all(users, "books")
    with torch.no_grad():
        user_out = method._user_out(users, "books")[0]
        items = torch.arange(data.n_items["books"])
        item_out = method.item_towers["books"](method.item_features("books", items))
    cosine = torch.nn.functional.cosine_similarity(
        user_out.unsqueeze(1), item_out.unsqueeze(0), dim=2
    )
    assert torch.allclose(scores, cosine, atol=1e-5)
    negative = cosine < -0.01
    assert negative.float().mean() > 0.5  # pairs with negative cosine exist ...
    assert (scores[negative] < 1e-6).all()  # ... and are not floored at the training clip
    assert len(torch.unique(scores[negative])) > negative.sum() // 2  # nor tied
    candidates = torch.arange(50).expand(40, -1)
    assert torch.allclose(method.score(users, "books", candidates), scores[:, :50], atol=1e-6)


@pytest.mark.parametrize("on", ["combined", "domain"])
def test_personalized_term_changes_training_and_runs(on):
    data, validator = planted_training_data()
    kw = dict(max_epochs=2, patience=2)
    plain = _fit(data, validator, **kw)
    personal = _fit(data, validator, personalized=True, lambda_p=1.0, personalized_on=on, **kw)
    # books is the richest domain: it gets no -P term; the sparser domains do.
    assert personal.richer["books"] == []
    assert personal.richer["electronics"] == ["books", "movies"]
    users = torch.arange(data.n_users)
    common = personal.history.all(1)
    books, electronics = data.domains.index("books"), data.domains.index("electronics")
    gaps = []
    with torch.no_grad():
        for model in (plain, personal):
            feats = model.user_features(users)
            if on == "combined":
                sparse = model.combine(users, "electronics", feats)
                rich = model.combine(users, "books", feats)
            else:
                sparse, rich = feats[:, electronics], feats[:, books]
            gaps.append((sparse - rich).pow(2).sum(1)[common].mean())
            assert torch.isfinite(sparse).all()
    # The term pulls the sparse domain's user representation towards the richer domain's.
    assert gaps[1] < gaps[0], gaps
    assert torch.isfinite(personal.score_all(users, "electronics")).all()


def test_scores_are_finite_and_deterministic_for_a_seed():
    data, validator = planted_training_data()
    for kw in ({}, {"graph_embed": "node2vec", "n2v_walks_per_node": 1}):
        a, b, c = (_fit(data, validator, seed=s, **kw) for s in (0, 0, 1))
        users = torch.arange(30)
        items = torch.arange(40).expand(30, -1)
        s = a.score(users, "movies", items)
        assert torch.isfinite(s).all()
        assert torch.equal(s, b.score(users, "movies", items))
        assert not torch.equal(s, c.score(users, "movies", items))


# Small, fast settings. He-initialised towers: with PyTorch's default Linear init (the
# method's default, methods.md §1.3) the six-layer ReLU towers need about twice the epochs.
LEARN = dict(
    embedding_size=32,
    batch_size=256,
    batch_unit="positives",
    learning_rate=0.003,
    tower_init="kaiming",
    n2v_batch_walks=64,
    n2v_learning_rate=0.05,
)


@pytest.mark.parametrize(
    ("embed", "extra"),
    [
        ("node2vec", dict(max_epochs=12, patience=4)),
        ("onehop", dict(max_epochs=25, patience=6, onehop_init_std=0.1)),
    ],
)
def test_gamtcdr_learns_the_planted_signal(embed, extra):
    params = GAMTCDRParams(**LEARN, **extra, graph_embed=embed)
    method, summary, validator = fit_planted(GAMTCDR, params)
    valid = validator(method.score)
    mean = sum(valid.values()) / len(valid)
    assert mean > 1.5 * RANDOM_NDCG10, valid
    pop, _, _ = fit_planted(Popularity, PopularityParams())
    popular = validator(pop.score)
    assert mean > sum(popular.values()) / len(popular) + 0.01, (valid, popular)
    assert summary.best_valid == pytest.approx(mean)


def _reference_walks(graph: CSR, starts: torch.Tensor, length: int, gen: torch.Generator):
    """The step-by-step walk (one draw per walk per step), as before vectorisation."""
    walks = torch.empty(len(starts), length, dtype=torch.long)
    walks[:, 0] = current = starts
    for step in range(1, length):
        degree = graph.degree[current]
        draw = torch.rand(len(current), generator=gen, dtype=torch.float64)
        offset = (draw * degree).long().clamp_(max=degree - 1)
        current = graph.col[graph.rowptr[current] + offset]
        walks[:, step] = current
    return walks


def _reference_batches(graph, order, params, noise_cdf, gen):
    """Batch after batch: the batch's walks, then its noise draws (the original order)."""
    for start in range(0, len(order), params.batch_walks):
        walks = _reference_walks(
            graph, order[start : start + params.batch_walks], params.walk_length, gen
        )
        draw = torch.rand(len(walks) * params.noise_per_walk, generator=gen, dtype=torch.float64)
        yield walks, torch.searchsorted(noise_cdf, draw).clamp_(max=graph.n - 1)


def _n2v_graph():
    users, items = _bipartite(40, 60, 200, 3)
    return CSR.symmetric(users, items, 100)


@pytest.mark.parametrize("chunk_walks", [7, 64, 10_000])
def test_walk_batches_reproduce_the_per_batch_random_stream(chunk_walks):
    graph = _n2v_graph()
    nodes = torch.nonzero(graph.degree > 0).squeeze(1)
    order = nodes[torch.randperm(len(nodes), generator=torch.Generator().manual_seed(0))]
    params = Node2VecParams(walk_length=12, batch_walks=16, noise_per_walk=5)
    cdf = torch.cumsum(graph.degree.double().pow(0.75), 0)
    cdf = cdf / cdf[-1]
    fast = list(walk_batches(graph, order, params, cdf, seeded_generator(4), chunk_walks))
    slow = list(_reference_batches(graph, order, params, cdf, seeded_generator(4)))
    assert len(fast) == len(slow) == -(-len(order) // 16)
    for (w_fast, n_fast), (w_slow, n_slow) in zip(fast, slow, strict=True):
        assert torch.equal(w_fast, w_slow)
        assert torch.equal(n_fast, n_slow)
    starts = order[:30]
    assert torch.equal(
        random_walks(graph, starts, 9, seeded_generator(5)),
        _reference_walks(graph, starts, 9, seeded_generator(5)),
    )


def _reference_node2vec(graph: CSR, dim: int, params: Node2VecParams, gen: torch.Generator):
    """The autograd formulation (two lazy tables, softplus losses), on the same walks."""
    table = torch.empty(graph.n, dim).uniform_(-0.5 / dim, 0.5 / dim, generator=gen)
    vin = LazyTable(table, params.learning_rate)
    vout = LazyTable(torch.zeros(graph.n, dim), params.learning_rate)
    nodes = torch.nonzero(graph.degree > 0).squeeze(1)
    cdf = torch.cumsum(graph.degree.double().pow(0.75), 0)
    cdf = cdf / cdf[-1]
    length, window = params.walk_length, min(params.window, params.walk_length - 1)
    gap = (torch.arange(length).unsqueeze(1) - torch.arange(length).unsqueeze(0)).abs()
    band = torch.where((gap >= 1) & (gap <= window), (window - gap + 1) / window, 0.0)
    pairs = band.sum(1)
    for _rep in range(params.walks_per_node):
        order = nodes[torch.randperm(len(nodes), generator=gen)]
        for walks, noise in walk_batches(graph, order, params, cdf, gen):
            n_walks, k = len(walks), params.noise_per_walk
            e_in = vin.lookup(walks)
            e_out, e_noise = vout.lookup(torch.cat([walks.reshape(-1), noise])).split(
                [walks.numel(), len(noise)]
            )
            scores = torch.bmm(e_in, e_out.view(n_walks, length, dim).transpose(1, 2))
            positive = (torch.nn.functional.softplus(-scores) * band).sum()
            noise_scores = torch.bmm(e_in, e_noise.view(n_walks, k, dim).transpose(1, 2))
            negative = (
                torch.nn.functional.softplus(noise_scores).sum(-1) * pairs * (params.negatives / k)
            ).sum()
            ((positive + negative) / (n_walks * pairs.sum())).backward()
            vin.step()
            vout.step()
    return vin.weights.detach()


def test_node2vec_equals_the_autograd_formulation():
    graph = _n2v_graph()
    params = Node2VecParams(walk_length=10, walks_per_node=3, window=3, batch_walks=8)
    fast = node2vec(graph, 16, params, seeded_generator(6))
    slow = _reference_node2vec(graph, 16, params, seeded_generator(6))
    assert not torch.equal(fast, node2vec(graph, 16, params, seeded_generator(7)))
    init = torch.empty(graph.n, 16).uniform_(-0.5 / 16, 0.5 / 16, generator=seeded_generator(6))
    assert (fast - init).abs().max() > 100 * (fast - slow).abs().max()  # training moved them
    assert torch.allclose(fast, slow, atol=1e-6, rtol=1e-4), (fast - slow).abs().max()
