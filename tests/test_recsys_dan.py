"""Recsys-DAN (adapted): sparse history means, within-sub-domain negatives, the factorised
scoring head, the adversarial game's two steps, the cold-start fallback, learning, seeding."""

from __future__ import annotations

import pytest
import torch

from methods._xdomain import EmbeddingTable, UserHistory, init_module_
from methods.base import FitContext
from methods.popularity import Popularity, PopularityParams
from methods.recsys_dan import (
    RecsysDAN,
    RecsysDANParams,
    _DANTarget,
    _Predictor,
    _SourceSampler,
)
from methods.training import seeded_generator
from tests.conftest import RANDOM_NDCG10, fit_planted, planted_training_data

QUICK = {
    "embedding_size": 16,
    "batch_size": 512,
    "learning_rate": 0.02,
    "init_std": 0.1,
    "source_selection": "fixed",
    "source_max_epochs": 2,
    "max_epochs": 2,
    "adapt_learning_rate": 0.02,
}


def test_history_mean_equals_the_dense_mean():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randperm(10 * 25, generator=gen)[:60]  # distinct pairs, as in training data
    users, items = keys // 25, keys % 25
    history = UserHistory(users, items, n_users=12)
    table = torch.randn(25, 4, generator=gen)
    dense = torch.zeros(12, 25).index_put_((users, items), torch.ones(60), accumulate=True)
    expected = dense @ table / dense.sum(1, keepdim=True).clamp(min=1)
    batch = torch.tensor([3, 0, 11, 5, 3, 10])  # 10 and 11 have no history: zero rows
    assert torch.allclose(history.mean(batch, table), expected[batch], atol=1e-6)
    # leaving one item out renormalises over the rest
    drop = torch.tensor([int(items[users == 3][0]), -1, -1, -1, -1, -1])
    dense[3, drop[0]] -= 1
    left = dense[3] @ table / dense[3].sum().clamp(min=1)
    assert torch.allclose(history.mean(batch, table, exclude=drop)[0], left, atol=1e-6)


def _history_step(history: UserHistory, table: EmbeddingTable, batch, items) -> None:
    """One lazy step on a history mean (through the given table) plus gathered item rows."""
    mean = history.mean(batch, table)
    loss = (mean.unsqueeze(1) * table.gather(items)).sum() + mean.square().sum()
    loss.backward()
    table.step()


def test_whole_table_history_step_updates_the_same_rows_as_gathering_unique_rows():
    """The history mean reads the table as one whole-table leaf; its lazy step must equal
    gathering the rows it reads: same gradient sums, the same touched rows (also a row read
    with a zero gradient), untouched rows and their moments left alone."""
    gen = torch.Generator().manual_seed(1)
    keys = torch.randperm(10 * 40, generator=gen)[:90]
    users, items = keys // 40, keys % 40
    history = UserHistory(users, items, n_users=12)
    start = torch.randn(40, 4, generator=gen)
    batch = torch.tensor([3, 0, 11, 3, 5, 0])  # repeats; 11 has no history
    extra = torch.tensor([[1, 39], [39, 2], [7, 7], [1, 1], [2, 30], [5, 6]])
    whole = EmbeddingTable(start, lr=0.1, betas=(0.9, 0.999))
    rows = EmbeddingTable(start, lr=0.1, betas=(0.9, 0.999))
    # the reference: the same mean as a sparse product over gathered unique rows
    for _ in range(3):
        _history_step(history, whole, batch, extra)
        r, c, w = history.segments(torch.unique(batch))
        leaf, inverse = rows.gather_unique(c)
        pattern = torch.sparse_coo_tensor(
            torch.stack([r, inverse]),
            w,
            (len(torch.unique(batch)), len(leaf)),
            check_invariants=False,
        )
        per_user = torch.sparse.mm(pattern, leaf)[torch.unique(batch, return_inverse=True)[1]]
        loss = (per_user.unsqueeze(1) * rows.gather(extra)).sum() + per_user.square().sum()
        loss.backward()
        rows.step()
    assert torch.allclose(whole.state(), rows.state(), atol=1e-6)
    assert torch.allclose(whole.opt.moments, rows.opt.moments, atol=1e-6)
    read = torch.zeros(40, dtype=torch.bool)
    read[history.segments(batch)[1]] = True
    read[extra.reshape(-1)] = True
    assert torch.equal(whole.state()[~read], start[~read])
    assert torch.equal(whole.opt.moments[~read], torch.zeros_like(whole.opt.moments[~read]))
    # a row read with a zero gradient is still a touched row: its moments decay, SparseAdam-like
    zero_grad = EmbeddingTable(start, lr=0.1, betas=(0.9, 0.999))
    zero_grad.opt.moments[:] = 1.0
    (history.mean(batch, zero_grad) * 0.0).sum().backward()
    zero_grad.step()
    touched = torch.zeros(40, dtype=torch.bool)
    touched[history.segments(batch)[1]] = True
    assert torch.all(zero_grad.opt.moments[touched] < 1.0)
    assert torch.all(zero_grad.opt.moments[~touched] == 1.0)


def test_source_negatives_stay_in_the_positive_sub_domain_and_are_not_positives():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randperm(20 * 70, generator=gen)[:300]  # 20 users, items 0-29 | 30-69
    users, items = keys // 70, keys % 70
    sampler = _SourceSampler(users, items, [(0, 30), (30, 40)])
    neg = sampler.sample(users, items, 3, gen)
    first = (items < 30).unsqueeze(1)
    assert ((neg < 30) == first).all()
    assert (neg < 70).all() and (neg >= 0).all()
    positives = set((users * 100 + items).tolist())
    assert not set((users.unsqueeze(1) * 100 + neg).flatten().tolist()) & positives


def test_factorised_candidate_scoring_equals_the_training_head():
    gen = torch.Generator().manual_seed(0)
    head = init_module_(_Predictor(8), gen)
    u, reps = torch.randn(5, 8, generator=gen), torch.randn(30, 8, generator=gen)
    items = torch.randint(30, (5, 7), generator=gen)
    with torch.no_grad():
        expected = head(u.unsqueeze(1), reps[items])
        assert torch.allclose(head.candidate_logits(u, reps, items), expected, atol=1e-5)


def _adapted_target(target: str = "books", **overrides) -> _DANTarget:
    """A target model after a short source pretraining, ready for adaptation."""
    data, validator = planted_training_data()
    params = RecsysDANParams(**{**QUICK, **overrides})
    method = RecsysDAN(params, data.n_users, data.n_items)
    ctx = FitContext(seed=0, device=torch.device("cpu"), validate=validator)
    model = _DANTarget(data, target, params, seeded_generator(0, 0), ctx.device)
    method._pretrain_source(model, seeded_generator(0, 1), ctx)
    model.freeze_source_and_start_adaptation()
    return model


def test_discriminator_step_lowers_its_loss_and_adversarial_step_raises_its_confusion():
    model = _adapted_target(target_supervision=False, adapt_learning_rate=0.01)
    gen = torch.Generator().manual_seed(3)
    pick = torch.randint(len(model.src_users), (512,), generator=gen)
    source = model.source_representations(model.src_users[pick], model.src_items[pick])
    pick = torch.randint(len(model.tgt_users), (512,), generator=gen)
    users, pos = model.tgt_users[pick], model.tgt_items[pick]

    def frozen_target():
        with torch.no_grad():
            return model.target_representations(users, pos, train=False)

    before = model.discriminator_step(source, model.target_representations(users, pos))
    model.q_target.discard()
    with torch.no_grad():
        after = model.discriminator_loss(source, frozen_target())
    assert after < before
    source_weights = {k: v.clone() for k, v in model.user_source.state_dict().items()}
    out = model.encoder_step(model.target_representations(users, pos), pos.unsqueeze(1))
    assert set(out) == {"adv_loss"}  # unsupervised setting: only the inverted-label loss
    with torch.no_grad():
        confused = model.discriminator_loss(source, frozen_target())
        fooled = model.adversarial_loss(frozen_target())
    assert confused > after  # the same discriminator now separates the domains worse
    assert fooled < out["adv_loss"]
    for key, value in model.user_source.state_dict().items():
        assert torch.equal(value, source_weights[key])  # the source side stays frozen


def test_dan_learns_the_planted_signal():
    params = RecsysDANParams(
        **{**QUICK, "embedding_size": 32, "source_max_epochs": 20, "max_epochs": 12}
    )
    method, summary, validator = fit_planted(RecsysDAN, params)
    valid = validator(method.score)
    assert min(valid.values()) > 1.5 * RANDOM_NDCG10, valid
    pop, _, _ = fit_planted(Popularity, PopularityParams())
    popular = validator(pop.score)
    assert all(valid[d] > popular[d] for d in valid), (valid, popular)
    assert summary.best_valid == pytest.approx(sum(valid.values()) / len(valid))


def test_dan_is_deterministic_and_cold_target_users_use_the_source_fallback():
    # Determinism is promised per thread count; with 2 intra-op threads two fits of one seed
    # were seen to differ in CI (a parallel CPU reduction), so the check runs single-threaded,
    # as published cells are trained.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        params = RecsysDANParams(**QUICK)
        a, _, _ = fit_planted(RecsysDAN, params, seed=0)
        b, _, _ = fit_planted(RecsysDAN, params, seed=0)
        c, _, _ = fit_planted(RecsysDAN, params, seed=1)
    finally:
        torch.set_num_threads(before)
    users, items = torch.arange(30), torch.arange(40).expand(30, -1)
    for domain in ("books", "electronics"):
        sa = a.score(users, domain, items)
        assert torch.isfinite(sa).all()
        assert torch.equal(sa, b.score(users, domain, items))
        assert not torch.equal(sa, c.score(users, domain, items))

    data, _ = planted_training_data()
    for domain in data.domains:
        model = a._models[domain]
        counts = data.counts_per_user(domain)
        cold = torch.nonzero(counts == 0).squeeze(1)[:8]
        warm = torch.nonzero(counts > 0).squeeze(1)[:8]
        assert len(cold) and len(warm)
        cand = torch.arange(40).expand(len(cold), -1)
        with torch.no_grad():
            reps = model.item_vectors()
            fallback = model.predictor.candidate_logits(model.source_users(cold), reps, cand)
            no_history = model.predictor.candidate_logits(model.target_users(cold), reps, cand)
            own = model.predictor.candidate_logits(model.target_users(warm), reps, cand)
        scores = a.score(cold, domain, cand)
        assert torch.isfinite(scores).all()
        assert torch.allclose(scores, fallback, atol=1e-5)
        assert not torch.allclose(scores, no_history, atol=1e-5)
        assert torch.allclose(a.score(warm, domain, cand), own, atol=1e-5)
        assert torch.isfinite(a.score_all(cold, domain)).all()


@pytest.mark.parametrize(
    "switches",
    [
        {"embedding_optimizer": "adam", "loss": "bpr", "history_excludes_positive": True},
        {"source_selection": "valid", "source_weighting": "inverse_size", "disc_steps": 2},
    ],
)
def test_switches_run_and_give_finite_scores(switches):
    params = RecsysDANParams(**{**QUICK, "source_max_epochs": 1, "max_epochs": 1, **switches})
    method, summary, _ = fit_planted(RecsysDAN, params)
    users = torch.arange(50)
    assert torch.isfinite(method.score(users, "movies", torch.arange(40).expand(50, -1))).all()
    assert summary.epochs >= 1
