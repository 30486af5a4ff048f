"""GA-MTCDR(-P): node2vec walks, masked attention, unclipped cosine, -P, learning, determinism."""

from __future__ import annotations

import pytest
import torch

from methods._cdr_graph import CSR
from methods.base import FitContext, TrainingData
from methods.gamtcdr import GAMTCDR, GAMTCDRParams, Node2VecParams, node2vec, random_walks
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
