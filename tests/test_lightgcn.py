"""LightGCN: propagation and analytic gradients equal a dense reference; it learns; seeded;
``train_lightgcn_embeddings`` yields the embeddings the method scores with."""

from __future__ import annotations

import pytest
import torch

from methods.graph import propagate_layers
from methods.lightgcn import (
    LightGCN,
    LightGCNParams,
    batch_blocks,
    build_adjacency,
    final_rows,
    lightgcn_gradient,
    row_of_nonzero,
    train_lightgcn_embeddings,
)
from methods.popularity import Popularity, PopularityParams
from methods.training import Workspace, seeded_generator
from tests.conftest import RANDOM_NDCG10, fit_planted, planted_training_data

# A tiny graph: user 6 and items 5, 6 have no edge; user 2 has three items.
N_USERS, N_ITEMS = 7, 9
USERS = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
ITEMS = torch.tensor([0, 3, 3, 1, 2, 8, 4, 4, 0, 7])


def dense_normalised_adjacency() -> torch.Tensor:
    """Â = D^-1/2 A D^-1/2 built entry by entry from the definition (float64)."""
    n = N_USERS + N_ITEMS
    a = torch.zeros(n, n, dtype=torch.float64)
    for u, i in zip(USERS.tolist(), ITEMS.tolist(), strict=True):
        a[u, N_USERS + i] = a[N_USERS + i, u] = 1.0
    degree = a.sum(1)
    out = torch.zeros_like(a)
    for r in range(n):
        for c in range(n):
            if a[r, c]:
                out[r, c] = 1.0 / (degree[r].sqrt() * degree[c].sqrt())
    return out


def dense_final(adjacency: torch.Tensor, ego: torch.Tensor, layers: int) -> torch.Tensor:
    power, total = torch.eye(len(ego), dtype=ego.dtype), torch.zeros_like(ego)
    for _ in range(layers + 1):
        total = total + power @ ego
        power = power @ adjacency
    return total / (layers + 1)


def test_propagation_matches_a_dense_reference():
    reference = dense_normalised_adjacency()
    adjacency = build_adjacency(USERS, ITEMS, N_USERS, N_ITEMS, torch.float64)
    assert torch.allclose(adjacency.to_dense(), reference)
    ego = torch.randn(N_USERS + N_ITEMS, 5, dtype=torch.float64, generator=seeded_generator(3))
    for layers in range(4):
        expected = dense_final(reference, ego, layers)
        assert torch.allclose(propagate_layers(adjacency, ego, layers), expected)
        # The training path: final embeddings of a node subset only.
        nodes = torch.tensor([0, 2, 6, 8, 12, 15])
        blocks = batch_blocks(adjacency, row_of_nonzero(adjacency), nodes)
        assert torch.allclose(blocks.rows.to_dense(), reference[nodes])
        assert torch.allclose(blocks.cols.to_dense(), reference[:, nodes])
        got = final_rows(adjacency, ego, layers, nodes, blocks)
        assert torch.allclose(got, expected[nodes])
    # Isolated nodes keep e⁰/(K+1).
    final = propagate_layers(adjacency, ego, 3)
    assert torch.allclose(final[6], ego[6] / 4)
    assert torch.allclose(final[N_USERS + 5], ego[N_USERS + 5] / 4)


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_analytic_gradient_matches_autograd_on_the_dense_model(layers):
    reference = dense_normalised_adjacency()
    adjacency = build_adjacency(USERS, ITEMS, N_USERS, N_ITEMS, torch.float64)
    gen = seeded_generator(4)
    ego = torch.randn(N_USERS + N_ITEMS, 6, dtype=torch.float64, generator=gen)
    users = torch.tensor([0, 2, 6, 2, 2])  # repeats and an isolated user included
    pos = torch.tensor([0, 1, 5, 8, 1]) + N_USERS
    neg = torch.tensor([3, 3, 6, 0, 3]) + N_USERS
    reg = 0.3
    leaf = ego.clone().requires_grad_()
    final = dense_final(reference, leaf, layers)
    x = (final[users] * (final[pos] - final[neg])).sum(1)
    ego_sq = leaf[users].square().sum() + leaf[pos].square().sum() + leaf[neg].square().sum()
    loss = torch.nn.functional.softplus(-x).mean() + reg * ego_sq / (2 * len(users))
    loss.backward()
    grad, bpr, l2 = lightgcn_gradient(
        adjacency, ego, users, pos, neg, layers, reg, row_of_nonzero(adjacency)
    )
    assert torch.allclose(grad, leaf.grad)
    assert torch.allclose(bpr + reg * l2, loss)


@pytest.mark.parametrize("layers", [0, 1, 2, 3, 4])
def test_reused_buffers_give_the_gradients_of_fresh_tensors(layers):
    """The training step writes its layers and gradient into workspace buffers (addmm with
    beta=0 into stale, even NaN, memory); nothing of the stale memory may leak, and the result
    must equal fresh tensors step after step. Equal to float32 rounding, not bit for bit: the
    ``out=`` product may take another kernel than the fresh one (seen on AVX2 CPUs, where they
    differ by up to 7.5e-9; on AVX-512 machines they happen to agree bit for bit)."""
    adjacency = build_adjacency(USERS, ITEMS, N_USERS, N_ITEMS)
    nonzero = row_of_nonzero(adjacency)
    gen = seeded_generator(5)
    ego = torch.randn(N_USERS + N_ITEMS, 6, generator=gen)
    workspace = Workspace()
    for name in ("layer0", "layer1", "grad"):
        workspace.take(name, N_USERS + N_ITEMS, 6, ego).fill_(float("nan"))
    for _step in range(3):
        users = torch.randint(N_USERS, (5,), generator=gen)
        pos = torch.randint(N_ITEMS, (5,), generator=gen) + N_USERS
        neg = torch.randint(N_ITEMS, (5,), generator=gen) + N_USERS
        fresh = lightgcn_gradient(adjacency, ego, users, pos, neg, layers, 0.3, nonzero)
        reused = lightgcn_gradient(adjacency, ego, users, pos, neg, layers, 0.3, nonzero, workspace)
        for a, b in zip(fresh, reused, strict=True):
            assert torch.isfinite(b).all()  # no stale NaN got through beta=0
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
        ego = ego - 0.1 * fresh[0]


def test_lightgcn_learns_the_planted_signal_and_is_deterministic():
    params = LightGCNParams(embedding_size=32, batch_size=512, learning_rate=0.02, max_epochs=10)
    a, summary, validator = fit_planted(LightGCN, params, seed=0)
    users = torch.arange(10)
    items = torch.arange(20).expand(10, -1)
    scores = a.score(users, "books", items)
    assert torch.isfinite(scores).all()
    # Determinism needs no long training: two epochs, same seed twice, another seed once.
    short = params.model_copy(update={"max_epochs": 2})
    b1, _, _ = fit_planted(LightGCN, short, seed=0)
    b2, _, _ = fit_planted(LightGCN, short, seed=0)
    c, _, _ = fit_planted(LightGCN, short, seed=1)
    assert torch.equal(b1.score(users, "books", items), b2.score(users, "books", items))
    assert not torch.equal(b1.score(users, "books", items), c.score(users, "books", items))
    assert 1 <= summary.best_epoch <= summary.epochs
    valid = validator(a.score)
    assert min(valid.values()) > 1.5 * RANDOM_NDCG10, valid
    pop, _, _ = fit_planted(Popularity, PopularityParams())
    popular = validator(pop.score)
    assert all(valid[d] > popular[d] for d in valid), (valid, popular)
    assert summary.best_valid == pytest.approx(sum(valid.values()) / len(valid))
    # Full ranking is the same dot product.
    full = a.score_all(users, "books")
    assert torch.allclose(full[:, :20], scores, atol=1e-6)


def test_train_lightgcn_embeddings_reproduces_the_method_scores():
    params = LightGCNParams(embedding_size=16, batch_size=512, learning_rate=0.01, max_epochs=4)
    method, _, validator = fit_planted(LightGCN, params, seed=7)
    data, _ = planted_training_data()
    domain = data.domains[0]  # the method trains domain 0 with seeded_generator(seed, 0)

    def validate(user_emb: torch.Tensor, item_emb: torch.Tensor) -> float:
        def score(users, _domain, items):
            return torch.bmm(item_emb[items], user_emb[users].unsqueeze(2)).squeeze(2)

        return validator(score, [domain])[domain]

    logs = []
    user_emb, item_emb, summary = train_lightgcn_embeddings(
        data.users[domain],
        data.items[domain],
        data.n_users,
        data.n_items[domain],
        params,
        seeded_generator(7, 0),
        torch.device("cpu"),
        validate,
        logs.append,
        stage="probe",
    )
    assert user_emb.shape == (data.n_users, 16) and item_emb.shape == (data.n_items[domain], 16)
    assert summary.epochs == len(logs) and {e.stage for e in logs} == {"probe"}
    users = torch.arange(50)
    items = torch.randint(data.n_items[domain], (50, 30), generator=seeded_generator(1))
    dots = torch.bmm(item_emb[items], user_emb[users].unsqueeze(2)).squeeze(2)
    assert torch.allclose(dots, method.score(users, domain, items), atol=1e-6)


def test_train_lightgcn_embeddings_on_a_union_graph_and_on_no_pairs():
    """UCLR's use: all domains in one global item space; and a domain without pairs."""
    data, _ = planted_training_data()
    offsets = data.item_offsets()
    users = torch.cat([data.users[d] for d in data.domains])
    items = torch.cat([data.items[d] + offsets[d] for d in data.domains])
    n_items = sum(data.n_items.values())
    params = LightGCNParams(embedding_size=8, batch_size=2048, max_epochs=2, patience=1)
    seen = []

    def validate(user_emb, item_emb):
        seen.append((user_emb.shape, item_emb.shape))
        return float(len(seen))  # improves every epoch: the last epoch is kept

    user_emb, item_emb, summary = train_lightgcn_embeddings(
        users, items, data.n_users, n_items, params, seeded_generator(0), torch.device("cpu"),
        validate, lambda _e: None, stage="uclr_pge",
    )  # fmt: skip
    assert seen == [((data.n_users, 8), (n_items, 8))] * 2
    assert summary.best_epoch == 2 and torch.isfinite(item_emb).all()
    empty = torch.zeros(0, dtype=torch.int64)
    user_emb, item_emb, summary = train_lightgcn_embeddings(
        empty, empty, 5, 4, params, seeded_generator(0), torch.device("cpu"),
        lambda u, i: 0.0, lambda _e: None, stage="empty",
    )  # fmt: skip
    assert summary.epochs == 0 and user_emb.shape == (5, 8) and torch.isfinite(user_emb).all()
