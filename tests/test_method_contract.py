"""The contract every built-in method must honour, checked through a real cell by the same
helper plugin packages call (harness.testing.check_method_contract): training data without
held-out pairs, left unmodified; one per-user row per test case; seeded determinism; finite
raw scores for users absent from a domain; score_all consistent with score."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from harness.runner.cells import CellTask
from harness.runner.prepare import PreparedData
from harness.runner.work import LeakageError, training_data
from harness.testing import (
    ABSENT_DOMAIN,
    ABSENT_USERS,
    ContractViolation,
    check_method_contract,
    contract_data,
    contract_task,
)
from methods.base import FitSummary
from methods.popularity import Popularity
from methods.registry import available, get_method, method_origin

BUILT_IN_KINDS = [kind for kind in available() if method_origin(kind).source == "built-in"]


def test_every_built_in_is_checked():
    assert {"bprmf", "popularity", "uclr"} <= set(BUILT_IN_KINDS)


@pytest.mark.parametrize("kind", BUILT_IN_KINDS)
def test_method_honours_the_contract(kind):
    result = check_method_contract(get_method(kind))
    assert result.status == "done"


# --- the helper itself catches each kind of violation ------------------------------------------
class _NaNForAbsentUsers(Popularity):
    """NaN for users who never appear in a domain, as a per-domain user table without their
    rows would give (rule 4; no validation or test case has such a user, so only the contract
    check sees it)."""

    kind = "contract_nan"

    def score(self, users, domain, items):
        out = super().score(users, domain, items).clone()
        absent = torch.isin(users, torch.as_tensor(list(ABSENT_USERS)))
        if domain == ABSENT_DOMAIN:
            out[absent] = float("nan")
        return out


class _Shuffling(Popularity):
    """Shuffles its training tensors in place (rule 1: the split is shared)."""

    kind = "contract_inplace"

    def fit(self, data, ctx):
        for name in data.domains:
            data.items[name][:] = data.items[name].flip(0)
        return super().fit(data, ctx)


class _Unseeded(Popularity):
    """Breaks ties with noise from an unseeded generator (rule 3)."""

    kind = "contract_unseeded"

    def fit(self, data, ctx):
        summary = super().fit(data, ctx)
        entropy = int.from_bytes(os.urandom(4), "little")  # the harness seeds every global RNG
        generator = torch.Generator().manual_seed(entropy)
        for counts in self.counts.values():
            counts += torch.rand(counts.shape, generator=generator)
        return summary


class _Inconsistent(Popularity):
    """Ranks the full catalogue by another rule than the candidates (rule 5)."""

    kind = "contract_inconsistent"

    def score_all(self, users, domain):
        return -super().score_all(users, domain)


class _Failing(Popularity):
    kind = "contract_failing"

    def fit(self, data, ctx) -> FitSummary:
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("method_cls", "rule"),
    [
        (_NaNForAbsentUsers, "no finite scores for users absent"),
        (_Shuffling, "modified the data it was handed"),
        (_Unseeded, "not deterministic"),
        (_Inconsistent, "differently in score() and score_all()"),
        (_Failing, "failed to train and evaluate"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.kind,
)
def test_the_contract_check_names_the_broken_rule(method_cls, rule):
    with pytest.raises(ContractViolation, match=rule.replace("(", r"\(").replace(")", r"\)")):
        check_method_contract(method_cls)


def test_the_harness_refuses_training_data_that_contains_a_test_pair():
    prepared = contract_data()
    task = contract_task(get_method("popularity"))
    part = prepared.split.domains["d0"]
    leaked = type(part)(
        train_users=np.append(part.train_users, part.test_users[0]),
        train_items=np.append(part.train_items, part.test_items[0]),
        valid_users=part.valid_users,
        valid_items=part.valid_items,
        test_users=part.test_users,
        test_items=part.test_items,
    )
    split = type(prepared.split)(domains={**prepared.split.domains, "d0": leaked}, seed=0)
    bad = PreparedData(**{**prepared.__dict__, "split": split})
    with pytest.raises(LeakageError):
        training_data(CellTask(**{**task.__dict__, "prepared": bad}), torch.device("cpu"))
