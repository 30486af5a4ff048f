"""The contract every registered method must honour, checked for each one through a real cell:
training data without held-out pairs, finite raw scores for users cold in a domain, seeded
determinism, and per-user rows for every test case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.dataset import Dataset, DomainData
from harness.protocol.candidates import build_candidates
from harness.protocol.split import leave_one_out
from harness.runner.cells import CellTask
from harness.runner.prepare import PreparedData
from harness.runner.work import LeakageError, run_cell, training_data
from methods.registry import available, get_method
from tests.conftest import make_dataset


def _with_absent_users(ds: Dataset, domain: str, users: range) -> Dataset:
    """Drop every interaction of ``users`` in ``domain``: they exist only in other domains."""
    d = ds.domains[domain]
    keep = ~np.isin(d.users, list(users))
    ts = None if d.timestamps is None else d.timestamps[keep]
    domains = dict(ds.domains)
    domains[domain] = DomainData(d.name, d.item_ids, d.users[keep], d.items[keep], ts)
    return Dataset(ds.name, ds.user_ids, domains, {**ds.source, "absent": list(users)})


def _prepared() -> PreparedData:
    ds = _with_absent_users(make_dataset(n_users=80, items=(300, 150), seed=5), "d1", range(10))
    split = leave_one_out(ds, 0)
    cands = build_candidates(ds, split, 99, 0)
    counts = {
        d: np.bincount(split.domains[d].train_users, minlength=ds.n_users) for d in ds.domains
    }
    return PreparedData(
        "tiny", ds, ds.fingerprint(), split, cands, "set", cands.content_hash(), counts
    )


PREPARED = _prepared()


def _task(kind: str, seed: int = 0) -> CellTask:
    cls = get_method(kind)
    return CellTask(
        cell_id=f"{kind}-{seed}",
        dataset="tiny",
        method=kind,
        kind=kind,
        params=cls.quick_params(),
        seed=seed,
        domains=PREPARED.dataset.domain_names,
        prepared=PREPARED,
        ks=[10, 20],
        ties="expected",
        validation_k=10,
        full_ranking=True,
        device="cpu",
    )


@pytest.mark.parametrize("kind", list(available()))
def test_method_honours_the_contract(kind, monkeypatch):
    cls = get_method(kind)
    seen: dict = {}
    real_fit = cls.fit

    def spying_fit(self, data, ctx):
        seen["data"] = data
        return real_fit(self, data, ctx)

    monkeypatch.setattr(cls, "fit", spying_fit)
    result = run_cell(_task(kind))
    assert result.status == "done", result.error
    # 1. no validation or test pair reached training
    data = seen["data"]
    for name, part in PREPARED.split.domains.items():
        n_items = PREPARED.dataset.domains[name].n_items
        train = set((data.users[name] * n_items + data.items[name]).tolist())
        held = np.concatenate([part.test_users, part.valid_users]) * n_items + np.concatenate(
            [part.test_items, part.valid_items]
        )
        assert not train & set(held.tolist())
    # 2. one row per test case, K and ranking; values are proper probabilities
    cases = sum(c.n_cases for c in PREPARED.candidates.test.values())
    assert len(result.metrics) == cases * 2 * 2
    assert result.metrics["hr"].is_between(0, 1).all()
    # 3. the same seed gives the same per-user results
    again = run_cell(_task(kind))
    assert again.metrics.equals(result.metrics)


@pytest.mark.parametrize("kind", list(available()))
def test_scores_are_finite_for_users_absent_from_a_domain(kind):
    cls = get_method(kind)
    task = _task(kind)
    data = training_data(task, torch.device("cpu"))
    from harness.evaluation.evaluator import CandidateValidator, TensorCandidates
    from methods.base import FitContext

    validator = CandidateValidator(
        {
            d: TensorCandidates.from_numpy(c, torch.device("cpu"))
            for d, c in PREPARED.candidates.valid.items()
        }
    )
    method = cls(task.params, data.n_users, data.n_items)
    method.fit(data, FitContext(seed=0, device=torch.device("cpu"), validate=validator))
    absent = torch.arange(10)  # no interaction at all in d1
    items = torch.arange(50).expand(10, -1)
    scores = method.score(absent, "d1", items)
    assert scores.shape == (10, 50) and torch.isfinite(scores).all()
    assert torch.isfinite(method.score_all(absent, "d1")).all()


def test_the_harness_refuses_training_data_that_contains_a_test_pair():
    task = _task("popularity")
    part = PREPARED.split.domains["d0"]
    leaked = type(part)(
        train_users=np.append(part.train_users, part.test_users[0]),
        train_items=np.append(part.train_items, part.test_items[0]),
        valid_users=part.valid_users,
        valid_items=part.valid_items,
        test_users=part.test_users,
        test_items=part.test_items,
    )
    split = type(PREPARED.split)(domains={**PREPARED.split.domains, "d0": leaked}, seed=0)
    bad = PreparedData(**{**PREPARED.__dict__, "split": split})
    with pytest.raises(LeakageError):
        training_data(CellTask(**{**task.__dict__, "prepared": bad}), torch.device("cpu"))
