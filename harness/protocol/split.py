"""Leave-one-out split per (user, domain), vectorised over all interactions (methods.md §10.1).

Rule, recorded in every run:
- >= 3 interactions: the last (by timestamp) is test, the one before is validation, rest train;
- exactly 2: the last is test, the other trains, no validation case;
- exactly 1: test only (the user is cold in that domain's training data).
Without timestamps the order is a seeded random permutation. Timestamp ties are broken by the
same seeded permutation, so the split never depends on file order.
Pre-split sources (``DomainData.fixed_test``) keep their test item; validation is then the last
training interaction (>= 2 training interactions required, so nobody is left with none); in a
seeded random order when the source has no timestamps. :func:`split_rule` states which rule a
dataset got; it is stored with the candidate lists (the candidate-set id does not hash it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.dataset import Dataset, DomainData

__all__ = [
    "SPLIT_RULE",
    "SPLIT_RULE_FIXED_TEST",
    "DomainSplit",
    "Split",
    "leave_one_out",
    "split_rule",
]

SPLIT_RULE = (
    "leave-one-out per (user, domain): last interaction -> test, second-to-last -> validation "
    "when the user has >= 3; users with 2 get 1 train + 1 test, users with 1 get test only; "
    "order by timestamp, ties and missing timestamps broken by a seeded permutation"
)

# Pre-split sources (DomainData.fixed_test): what _split_domain actually does with them.
SPLIT_RULE_FIXED_TEST = (
    "pre-split source: the test item of each (user, domain) is fixed by the source's test file"
    "{file}; validation = {which} when the user has >= 2 "
    "training interactions, the rest train; users with 1 training interaction have no "
    "validation case"
)


def split_rule(dataset: Dataset) -> str:
    """The split rule applied to ``dataset``, as recorded with its candidate lists: the
    leave-one-out rule, the pre-split rule (fixed test item from the source file) or both,
    each naming its domains, when a dataset mixes them."""
    fixed = [n for n, d in dataset.domains.items() if d.fixed_test is not None]
    if not fixed:
        return SPLIT_RULE
    test_file = dataset.source.get("fixed_test")
    timed = all(dataset.domains[n].timestamps is not None for n in fixed)
    pre = SPLIT_RULE_FIXED_TEST.format(
        file=f" ({test_file})" if test_file else "",
        which="the user's last training interaction by timestamp (ties by a seeded permutation)"
        if timed
        else "one of the user's training interactions chosen by a seeded permutation (the "
        "source has no timestamps)",
    )
    rest = [n for n in dataset.domain_names if n not in fixed]
    if not rest:
        return pre
    return f"domains {', '.join(fixed)}: {pre}. Domains {', '.join(rest)}: {SPLIT_RULE}"


@dataclass(frozen=True)
class DomainSplit:
    """Index arrays (int64) of one domain's split. Held-out arrays are sorted by user."""

    train_users: np.ndarray
    train_items: np.ndarray
    valid_users: np.ndarray
    valid_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray

    def positives(self, n_items: int) -> np.ndarray:
        """Sorted unique keys ``user * n_items + item`` of every known interaction."""
        keys = [
            self.train_users * n_items + self.train_items,
            self.valid_users * n_items + self.valid_items,
            self.test_users * n_items + self.test_items,
        ]
        return np.unique(np.concatenate(keys))


@dataclass(frozen=True)
class Split:
    domains: dict[str, DomainSplit]
    seed: int
    rule: str = SPLIT_RULE


def leave_one_out(dataset: Dataset, seed: int) -> Split:
    """Split every domain; deterministic in (dataset, seed)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in dataset.domain_names:
        # One child generator per domain keeps a domain's split independent of the others.
        child = np.random.default_rng(rng.integers(2**63))
        out[name] = _split_domain(dataset.domains[name], child)
    return Split(domains=out, seed=seed, rule=split_rule(dataset))


def _order_within_user(
    users: np.ndarray, timestamps: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (order, position_from_end, count) with rows sorted by user then time."""
    tie_break = rng.permutation(len(users))
    keys = (tie_break,) if timestamps is None else (tie_break, timestamps)
    order = np.lexsort((*keys, users))
    sorted_users = users[order]
    counts = np.bincount(sorted_users, minlength=int(users.max(initial=-1)) + 1)
    ends = np.cumsum(counts)[sorted_users]  # exclusive end of each row's user group
    from_end = ends - np.arange(len(users)) - 1  # 0 = last interaction of that user
    return order, from_end, counts[sorted_users]


def _split_domain(domain: DomainData, rng: np.random.Generator) -> DomainSplit:
    users = domain.users.astype(np.int64)
    items = domain.items.astype(np.int64)
    order, from_end, count = _order_within_user(users, domain.timestamps, rng)
    users, items = users[order], items[order]
    if domain.fixed_test is None:
        is_test = from_end == 0
        is_valid = (from_end == 1) & (count >= 3)
        test_users, test_items = users[is_test], items[is_test]
    else:
        is_test = np.zeros(len(users), dtype=bool)
        is_valid = (from_end == 0) & (count >= 2)
        test_order = np.argsort(domain.fixed_test.users, kind="stable")
        test_users = domain.fixed_test.users[test_order].astype(np.int64)
        test_items = domain.fixed_test.items[test_order].astype(np.int64)
    is_train = ~(is_test | is_valid)
    return DomainSplit(
        train_users=users[is_train],
        train_items=items[is_train],
        valid_users=users[is_valid],
        valid_items=items[is_valid],
        test_users=test_users,
        test_items=test_items,
    )
