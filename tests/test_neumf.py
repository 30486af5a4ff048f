"""NeuMF: it learns; seeded; scores are the network's pre-sigmoid logits; pretraining fuses
GMF and MLP as in NCF."""

from __future__ import annotations

import pytest
import torch

from methods.neumf import (
    NeuMF,
    NeuMFNet,
    NeuMFParams,
    _Optimizer,
    autograd_step,
    fuse_pretrained,
    neumf_step,
)
from methods.popularity import Popularity, PopularityParams
from methods.scoring import DotScorer
from methods.training import seeded_generator
from tests.conftest import RANDOM_NDCG10, fit_planted

SMALL = {
    "gmf_size": 16,
    "mlp_embedding_size": 16,
    "mlp_layers": (16, 8),
    "batch_size": 256,
    "learning_rate": 0.01,
}


def test_neumf_learns_the_planted_signal_and_is_deterministic():
    params = NeuMFParams(**SMALL, max_epochs=6, patience=2)
    a, summary, validator = fit_planted(NeuMF, params, seed=0)
    users = torch.arange(10)
    items = torch.arange(20).expand(10, -1)
    scores = a.score(users, "books", items)
    assert torch.isfinite(scores).all()
    # Determinism needs no long training: two epochs, same seed twice, another seed once.
    short = params.model_copy(update={"max_epochs": 2})
    b1, _, _ = fit_planted(NeuMF, short, seed=0)
    b2, _, _ = fit_planted(NeuMF, short, seed=0)
    c, _, _ = fit_planted(NeuMF, short, seed=1)
    assert torch.equal(b1.score(users, "books", items), b2.score(users, "books", items))
    assert not torch.equal(b1.score(users, "books", items), c.score(users, "books", items))
    assert 1 <= summary.best_epoch <= summary.epochs
    valid = validator(a.score)
    assert min(valid.values()) > 1.5 * RANDOM_NDCG10, valid
    pop, _, _ = fit_planted(Popularity, PopularityParams())
    popular = validator(pop.score)
    assert all(valid[d] > popular[d] for d in valid), (valid, popular)
    assert summary.best_valid == pytest.approx(sum(valid.values()) / len(valid))


def test_scores_are_the_pre_sigmoid_logits_of_the_network():
    params = NeuMFParams(**SMALL, max_epochs=3, patience=3)
    method, _, _ = fit_planted(NeuMF, params, seed=0)
    net = method.nets["movies"]
    users = torch.arange(40)
    n_items = method.n_items["movies"]
    items = torch.randint(n_items, (40, 25), generator=seeded_generator(2))
    scores = method.score(users, "movies", items)
    with torch.no_grad():
        logits = net(users, items)  # straight through the tower, no sigmoid
    assert torch.allclose(scores, logits, atol=1e-5)
    assert scores.min() < 0  # a sigmoid output never is
    full = method.score_all(users[:5], "movies")
    assert full.shape == (5, n_items)
    assert torch.allclose(full.gather(1, items[:5]), scores[:5], atol=1e-5)


def test_fast_scoring_equals_the_forward_pass_for_every_branch():
    gen = seeded_generator(5)
    params = NeuMFParams(gmf_size=6, mlp_embedding_size=5, mlp_layers=(8, 4, 2), init_std=0.5)
    users = torch.randint(30, (12,), generator=gen)
    items = torch.randint(40, (12, 7), generator=gen)
    for branch in ("neumf", "gmf", "mlp"):
        net = NeuMFNet(30, 40, params, branch, gen).eval()
        with torch.no_grad():
            expected = net(users, items)
        assert torch.allclose(net.score(users, items, DotScorer()), expected, atol=1e-6)


def test_fused_pretrained_model_averages_the_two_logits():
    """NCF's fusion: h = [0.5·h_G; 0.5·h_M], b = 0.5·(b_G + b_M) gives the mean logit."""
    gen = seeded_generator(6)
    params = NeuMFParams(gmf_size=4, mlp_embedding_size=3, mlp_layers=(4, 2), init_std=0.5)
    gmf, mlp = NeuMFNet(10, 8, params, "gmf", gen), NeuMFNet(10, 8, params, "mlp", gen)
    with torch.no_grad():
        gmf.predict.bias.fill_(0.3)
        mlp.predict.bias.fill_(-0.7)
    fused = fuse_pretrained(gmf, mlp, params, gen)
    users, items = torch.arange(10), torch.arange(8).expand(10, -1)
    with torch.no_grad():
        expected = 0.5 * (gmf(users, items) + mlp(users, items))
        assert torch.allclose(fused(users, items), expected, atol=1e-6)


@pytest.mark.parametrize("finetune", ["adam", "sgd"])
def test_pretrain_switch_runs(finetune):
    params = NeuMFParams(
        **SMALL, max_epochs=2, patience=1, pretrain=True, finetune_optimizer=finetune
    )
    method, summary, validator = fit_planted(NeuMF, params, seed=0)
    assert {"books/gmf", "books/mlp", "books"} <= set(summary.notes)
    assert all(n.branch == "neumf" for n in method.nets.values())
    valid = validator(method.score)
    assert all(v > RANDOM_NDCG10 for v in valid.values()), valid


def test_dense_embedding_adam_and_dropout_run_and_are_seeded():
    params = NeuMFParams(**SMALL, max_epochs=2, embedding_optimizer="dense", dropout=0.2)
    a, _, validator = fit_planted(NeuMF, params, seed=3)
    b, _, _ = fit_planted(NeuMF, params, seed=3)
    users, items = torch.arange(10), torch.arange(20).expand(10, -1)
    assert torch.equal(a.score(users, "books", items), b.score(users, "books", items))
    assert min(validator(a.score).values()) > RANDOM_NDCG10


@pytest.mark.parametrize("branch", ["neumf", "gmf", "mlp"])
@pytest.mark.parametrize(
    ("optimizer", "embedding_optimizer"),
    [("adam", "rowwise"), ("adam", "dense"), ("sgd", "rowwise")],
)
def test_analytic_step_is_bit_identical_to_autograd(branch, optimizer, embedding_optimizer):
    """The hand-written backward must give exactly autograd's tables, weights and loss, step
    after step (repeated users and items in a batch included)."""
    params = NeuMFParams(**SMALL, embedding_optimizer=embedding_optimizer)
    nets, opts = [], []
    for _ in range(2):
        net = NeuMFNet(40, 70, params, branch, seeded_generator(3))
        nets.append(net)
        opts.append(_Optimizer(net, params, optimizer))
    gen = seeded_generator(4)
    for _step in range(4):
        users = torch.randint(40, (96,), generator=gen)
        items = torch.randint(70, (96,), generator=gen)
        labels = (torch.rand(96, generator=gen) < 0.3).float()
        fast = neumf_step(nets[0], opts[0], users, items, labels, 0.0, gen)
        slow = autograd_step(nets[1], opts[1], users, items, labels, 0.0, gen)
        assert torch.equal(fast, slow)
        assert torch.equal(nets[0].table, nets[1].table)
        for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
            assert torch.equal(a, b)
