"""Leave-one-out split and fixed candidate lists (methods.md §10.1-10.2)."""

import numpy as np
import pytest

from harness.data.dataset import Dataset, DomainData, HeldOut
from harness.protocol.candidates import NotEnoughItems, build_candidates
from harness.protocol.split import leave_one_out
from tests.conftest import make_dataset


def test_split_holds_out_last_by_time_and_follows_the_small_user_rule(tiny_dataset):
    split = leave_one_out(tiny_dataset, seed=0)
    for name, domain in tiny_dataset.domains.items():
        part = split.domains[name]
        counts = np.bincount(domain.users, minlength=tiny_dataset.n_users)
        # every user with >= 1 interaction has a test item; validation only with >= 3
        assert set(part.test_users) == set(np.flatnonzero(counts >= 1))
        assert set(part.valid_users) == set(np.flatnonzero(counts >= 3))
        # the test item is the user's latest interaction, validation the second latest
        for u in part.test_users[:20]:
            mine = domain.users == u
            order = np.argsort(domain.timestamps[mine])
            items = domain.items[mine][order]
            assert part.test_items[np.searchsorted(part.test_users, u)] == items[-1]
            if counts[u] >= 3:
                assert part.valid_items[np.searchsorted(part.valid_users, u)] == items[-2]
        total = len(part.train_users) + len(part.valid_users) + len(part.test_users)
        assert total == len(domain.users)
        # users with exactly one interaction have no training data at all
        single = np.flatnonzero(counts == 1)
        assert not np.isin(part.train_users, single).any()


def test_split_without_timestamps_is_seeded():
    ds = make_dataset(with_time=False)
    a, b, c = leave_one_out(ds, 0), leave_one_out(ds, 0), leave_one_out(ds, 1)
    assert np.array_equal(a.domains["d0"].test_items, b.domains["d0"].test_items)
    assert not np.array_equal(a.domains["d0"].test_items, c.domains["d0"].test_items)


def test_candidates_exclude_every_positive_and_are_distinct(tiny_dataset):
    split = leave_one_out(tiny_dataset, 0)
    cands = build_candidates(tiny_dataset, split, n_negatives=99, seed=0)
    for name, domain in tiny_dataset.domains.items():
        for part in (cands.valid[name], cands.test[name]):
            assert part.negatives.shape == (part.n_cases, 99)
            for u, pos, negs in zip(part.users, part.positives, part.negatives, strict=True):
                assert len(set(negs.tolist())) == 99
                positives = set(domain.items[domain.users == u].tolist())
                assert pos in positives
                assert not positives & set(negs.tolist())
                assert negs.min() >= 0 and negs.max() < domain.n_items


def test_candidates_are_identical_across_rebuilds_and_change_with_seed(tiny_dataset):
    split = leave_one_out(tiny_dataset, 0)
    a = build_candidates(tiny_dataset, split, 99, seed=0)
    b = build_candidates(tiny_dataset, leave_one_out(tiny_dataset, 0), 99, seed=0)
    c = build_candidates(tiny_dataset, split, 99, seed=1)
    assert a.content_hash() == b.content_hash()
    assert np.array_equal(a.test["d0"].negatives, b.test["d0"].negatives)
    assert a.content_hash() != c.content_hash()


def test_negatives_are_uniform_over_unseen_items():
    # one user who saw items 0..9 of 30: each of the 20 others is drawn 5 times in 100 lists of 5
    n_items = 30
    users = np.repeat(np.arange(2000), 10)
    items = np.tile(np.arange(10), 2000)
    ds = Dataset(
        "u",
        np.arange(2000).astype(str).astype(object),
        {
            "d": DomainData(
                "d",
                np.arange(n_items).astype(str).astype(object),
                users,
                items,
                np.tile(np.arange(10), 2000),
            )
        },
    )
    split = leave_one_out(ds, 0)
    cands = build_candidates(ds, split, n_negatives=5, seed=3)
    counts = np.bincount(cands.test["d"].negatives.ravel(), minlength=n_items)
    assert counts[:10].sum() == 0
    expected = 2000 * 5 / 20
    assert np.all(np.abs(counts[10:] - expected) < 5 * np.sqrt(expected))


def test_too_small_domain_gives_a_clear_error():
    ds = make_dataset(n_users=5, items=(40,))
    with pytest.raises(NotEnoughItems, match=r"lower protocol\.negatives"):
        build_candidates(ds, leave_one_out(ds, 0), n_negatives=99, seed=0)


def test_split_rule_states_the_pre_split_rule_for_fixed_test_data():
    """Pre-split data records the rule actually applied (fixed test item from the source's
    file, validation from training) and never the generic leave-one-out sentence."""
    from pathlib import Path

    from harness.data.loaders import load_dataset
    from harness.protocol.split import SPLIT_RULE, split_rule

    fixtures = Path(__file__).parent / "fixtures"
    pairs = load_dataset(
        {"loader": "amazon_pairs", "path": "amazon_pairs", "pair": "alpha_beta"}, fixtures
    )
    rule = leave_one_out(pairs, 0).rule
    assert rule == split_rule(pairs) != SPLIT_RULE
    assert "fixed by the source's test file (test.txt)" in rule
    assert "seeded permutation (the source has no timestamps)" in rule
    assert "last interaction -> test" not in rule
    assert leave_one_out(make_dataset(), 0).rule == SPLIT_RULE
    # mixed: one pre-split domain beside a leave-one-out one names both
    base = make_dataset()
    d0 = base.domains["d0"]
    held = DomainData(
        "d0",
        d0.item_ids,
        d0.users[1:],
        d0.items[1:],
        d0.timestamps[1:],
        fixed_test=HeldOut(users=d0.users[:1], items=d0.items[:1]),
    )
    mixed = Dataset(base.name, base.user_ids, {"d0": held, "d1": base.domains["d1"]}, {})
    text = split_rule(mixed)
    assert text.startswith("domains d0: pre-split source") and "Domains d1: leave-one-out" in text
    assert "by timestamp" in text
