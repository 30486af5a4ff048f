"""BPRMF: analytic gradients + row-wise Adam equal autograd + SparseAdam; it learns; seeded."""

import pytest
import torch

from methods.bprmf import BPRMF, BPRMFParams, MFTables, bpr_step
from methods.popularity import Popularity, PopularityParams
from methods.training import seeded_generator
from tests.conftest import RANDOM_NDCG10, fit_planted


def test_analytic_step_matches_autograd_with_sparse_adam():
    torch.set_default_dtype(torch.float64)
    try:
        params = BPRMFParams(embedding_size=8, learning_rate=0.05, reg=0.1)
        tables = MFTables(20, 30, params, seeded_generator(1))
        users_ref = torch.nn.Parameter(tables.users.clone())
        items_ref = torch.nn.Parameter(tables.items.clone())
        opt = torch.optim.SparseAdam([users_ref, items_ref], lr=0.05)
        gen = torch.Generator().manual_seed(0)
        for _ in range(5):
            u = torch.randint(20, (16,), generator=gen)
            i = torch.randint(30, (16,), generator=gen)
            j = torch.randint(30, (16,), generator=gen)  # repeats inside a batch included
            bpr_step(tables, u, i, j, reg=0.1)
            eu = torch.nn.functional.embedding(u, users_ref, sparse=True)
            ei = torch.nn.functional.embedding(i, items_ref, sparse=True)
            ej = torch.nn.functional.embedding(j, items_ref, sparse=True)
            loss = torch.nn.functional.softplus(-(eu * (ei - ej)).sum(1)).mean()
            loss = loss + 0.1 / 2 * (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / 16
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert torch.allclose(tables.users, users_ref.detach(), atol=1e-10)
        assert torch.allclose(tables.items, items_ref.detach(), atol=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


def test_bprmf_learns_the_planted_signal_and_is_deterministic():
    params = BPRMFParams(embedding_size=32, batch_size=256, learning_rate=0.01, max_epochs=40)
    a, summary, validator = fit_planted(BPRMF, params, seed=0)
    b, _, _ = fit_planted(BPRMF, params, seed=0)
    c, _, _ = fit_planted(BPRMF, params, seed=1)
    users = torch.arange(10)
    items = torch.arange(20).expand(10, -1)
    assert torch.equal(a.score(users, "books", items), b.score(users, "books", items))
    assert not torch.equal(a.score(users, "books", items), c.score(users, "books", items))
    assert 1 <= summary.best_epoch <= summary.epochs
    valid = validator(a.score)
    assert min(valid.values()) > 1.5 * RANDOM_NDCG10, valid
    pop, _, _ = fit_planted(Popularity, PopularityParams())
    popular = validator(pop.score)
    assert all(valid[d] > popular[d] for d in valid), (valid, popular)
    assert summary.best_valid == pytest.approx(sum(valid.values()) / len(valid))


def test_popularity_scores_training_counts():
    method, _, validator = fit_planted(Popularity, PopularityParams())
    scores = method.score(torch.tensor([0, 1]), "books", torch.tensor([[0, 1], [2, 3]]))
    assert scores.shape == (2, 2) and (scores >= 0).all()
    assert min(validator(method.score).values()) > RANDOM_NDCG10
