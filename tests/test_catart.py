"""CAT-ART: the pad replaces exactly the hidden blocks, the InfoNCE is symmetric, the knowledge
switch changes the model, it learns the planted signal, and it is seeded."""

from __future__ import annotations

import pytest
import torch

from methods.base import FitContext
from methods.catart import CATART, CATARTParams, masked_stacks, symmetric_info_nce
from methods.popularity import Popularity, PopularityParams
from tests.conftest import RANDOM_NDCG10, fit_planted, planted_training_data

QUICK = {
    "embedding_size": 16,
    "batch_size": 256,
    "learning_rate": 0.01,
    "mf_max_epochs": 3,
    "cat_max_epochs": 3,
    "max_epochs": 3,
}


def test_pad_replaces_exactly_the_masked_domain_and_domains_without_history():
    gen = torch.Generator().manual_seed(0)
    frozen = torch.randn(6, 3, 4, generator=gen)
    present = torch.tensor(
        [[1, 1, 1], [0, 1, 1], [1, 0, 0], [1, 1, 1], [1, 1, 0], [0, 1, 1]], dtype=torch.bool
    )
    masked = torch.tensor([0, 2, 0, 1, 1, 0])
    pad = torch.full((4,), 7.0)
    orig, hidden = masked_stacks(frozen, present, masked, pad, pad_missing=True)
    is_pad = lambda x: (x == pad).all(-1)  # noqa: E731
    assert torch.equal(is_pad(orig), ~present)
    expected = ~present
    expected[torch.arange(6), masked] = True
    assert torch.equal(is_pad(hidden), expected)
    keep = ~expected
    assert torch.equal(hidden[keep], frozen[keep])
    # without pad_missing only the drawn domain is hidden and orig is the frozen stack
    orig, hidden = masked_stacks(frozen, present, masked, pad, pad_missing=False)
    assert torch.equal(orig, frozen)
    only = torch.zeros(6, 3, dtype=torch.bool)
    only[torch.arange(6), masked] = True
    assert torch.equal(is_pad(hidden), only)
    # the pad receives gradient through every block it fills
    pad = torch.zeros(4, requires_grad=True)
    _, hidden = masked_stacks(frozen, present, masked, pad, pad_missing=True)
    hidden.sum().backward()
    assert torch.equal(pad.grad, torch.full((4,), float(expected.sum())))


def test_info_nce_is_symmetric_and_rewards_matching_rows():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 8, generator=gen), torch.randn(32, 8, generator=gen)
    assert symmetric_info_nce(a, b, 0.1) == pytest.approx(float(symmetric_info_nce(b, a, 0.1)))
    near = a + 0.05 * b
    assert symmetric_info_nce(a, near, 0.1) < symmetric_info_nce(a, b, 0.1)
    # matches the definition: mean of the two cross-entropies over cosine / temperature
    cos = torch.nn.functional.cosine_similarity(a.unsqueeze(1), b.unsqueeze(0), dim=-1) / 0.1
    labels = torch.arange(32)
    ce = torch.nn.functional.cross_entropy
    expected = (ce(cos, labels) + ce(cos.T, labels)) / 2
    assert float(symmetric_info_nce(a, b, 0.1)) == pytest.approx(float(expected), rel=1e-5)


def _fit(params: CATARTParams, seed: int = 0):
    data, validator = planted_training_data()
    logs = []
    method = CATART(params, data.n_users, data.n_items)
    summary = method.fit(
        data,
        FitContext(seed=seed, device=torch.device("cpu"), validate=validator, log=logs.append),
    )
    return method, summary, validator, logs, data


def test_catart_learns_the_planted_signal():
    params = CATARTParams(**{**QUICK, "mf_max_epochs": 20, "cat_max_epochs": 20, "max_epochs": 15})
    method, summary, validator, logs, data = _fit(params)
    valid = validator(method.score)
    assert min(valid.values()) > 1.5 * RANDOM_NDCG10, valid
    pop, _, _ = fit_planted(Popularity, PopularityParams())
    popular = validator(pop.score)
    assert all(valid[d] > popular[d] for d in valid), (valid, popular)
    assert summary.best_valid == pytest.approx(sum(valid.values()) / len(valid))
    # stage 1 learned: the held-out CAT loss improved on its first value
    cat = [log.values["valid_loss"] for log in logs if log.stage == "catart-cat"]
    assert min(cat) < cat[0]
    assert {log.stage for log in logs} == {"catart-mf", "catart-cat", "catart-art"}
    # users without training history in a domain: finite, non-constant scores from transfer
    for domain in data.domains:
        cold = torch.nonzero(data.counts_per_user(domain) == 0).squeeze(1)[:10]
        assert len(cold)
        scores = method.score(cold, domain, torch.arange(40).expand(len(cold), -1))
        assert torch.isfinite(scores).all()
        assert torch.isfinite(method.score_all(cold, domain)).all()


def test_catart_is_deterministic_for_a_seed():
    params = CATARTParams(**QUICK)
    a, *_ = _fit(params, seed=0)
    b, *_ = _fit(params, seed=0)
    c, *_ = _fit(params, seed=1)
    users, items = torch.arange(30), torch.arange(40).expand(30, -1)
    for domain in ("books", "movies"):
        sa = a.score(users, domain, items)
        assert torch.isfinite(sa).all()
        assert torch.equal(sa, b.score(users, domain, items))
        assert not torch.equal(sa, c.score(users, domain, items))


def test_knowledge_variants_run_and_differ():
    users, items = torch.arange(30), torch.arange(40).expand(30, -1)
    scores = {}
    for knowledge in ("both", "d_sp", "d_in"):
        method, summary, *_ = _fit(CATARTParams(**{**QUICK, "knowledge": knowledge}))
        assert summary.epochs >= 1
        scores[knowledge] = method.score(users, "movies", items)
        assert torch.isfinite(scores[knowledge]).all()
    assert not torch.equal(scores["both"], scores["d_sp"])
    assert not torch.equal(scores["both"], scores["d_in"])
    assert not torch.equal(scores["d_sp"], scores["d_in"])


@pytest.mark.parametrize(
    "switches",
    [
        {"embedding_optimizer": "adam", "fix_user": True, "fix_item": True, "cat_loss": "rec"},
        {"pad_missing": False, "pad_init": "standard_normal", "cat_valid_fraction": 0.0},
    ],
)
def test_switches_run_and_give_finite_scores(switches):
    params = CATARTParams(**{**QUICK, "mf_max_epochs": 1, "cat_max_epochs": 2, "max_epochs": 1})
    method, summary, *_ = _fit(params.model_copy(update=switches))
    users = torch.arange(50)
    assert torch.isfinite(method.score(users, "books", torch.arange(40).expand(50, -1))).all()
    assert summary.epochs >= 1
