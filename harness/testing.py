"""The method contract as one call, for the harness's own tests and for plugin packages.

Every method on a leaderboard must honour the same rules, whoever wrote it; a plugin's test
suite checks them on its method in one line::

    from harness.testing import check_method_contract
    from my_package import MyMethod

    def test_my_method_honours_the_contract():
        check_method_contract(MyMethod)

:func:`check_method_contract` trains the method through a real cell (the same code path as
``harness run``) on a tiny synthetic two-domain dataset in which ten users have no interaction
at all in domain ``d1``, and checks that

1. the training data it was handed holds no validation or test pair, and it left that data
   (the split, shared by every cell of a run) unmodified;
2. the cell yields exactly one per-user row per test case, cut-off K and ranking (sampled and
   full), with metric values in range;
3. training twice with the same seed gives identical per-user rows;
4. ``score`` and ``score_all`` return finite values of the right shape for users absent from a
   domain (they exist only in the other one);
5. ``score_all`` agrees with ``score`` on the same items (the full ranking and the sampled
   candidates rank one model).

A violation raises :class:`ContractViolation` (an ``AssertionError``, so pytest reports it as a
failed test) naming the rule. The method need not be installed: its class is used directly.
Training uses ``Method.quick_params()`` unless ``params`` are given, so keep those fast.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import polars as pl
import torch

from harness.data.dataset import Dataset, DomainData
from harness.protocol.candidates import build_candidates
from harness.protocol.split import leave_one_out
from harness.runner.cells import CellTask
from harness.runner.prepare import PreparedData
from harness.runner.work import CellResult, resolve_device, run_cell
from methods.base import FitContext, Method, MethodParams, TrainingData
from methods.registry import invalid_method_reason, resolving

__all__ = [
    "ABSENT_DOMAIN",
    "ABSENT_USERS",
    "ContractViolation",
    "check_method_contract",
    "contract_data",
    "contract_task",
]

ABSENT_DOMAIN = "d1"
ABSENT_USERS = range(10)  # users with no interaction at all in ABSENT_DOMAIN
_KS = [10, 20]
_FAMILIES = ("single-domain", "cross-domain", "ours")


class ContractViolation(AssertionError):
    """A method broke a rule of the method contract (the message names the rule)."""


def _random_dataset(n_users: int, items: tuple[int, ...], seed: int) -> Dataset:
    """Random interactions with varied activity (1 to 29 per user and domain), timestamped."""
    rng = np.random.default_rng(seed)
    domains = {}
    for d, n_items in enumerate(items):
        counts = rng.integers(1, 30, size=n_users)
        users = np.repeat(np.arange(n_users), counts)
        # distinct items per user: the first `count` of a random permutation of each row
        order = np.argsort(rng.random((n_users, n_items)), axis=1)
        chosen = order[np.arange(n_items)[None, :] < counts[:, None]]
        name = f"d{d}"
        domains[name] = DomainData(
            name,
            np.array([f"i{j}" for j in range(n_items)], dtype=object),
            users.astype(np.int64),
            chosen.astype(np.int64),
            rng.permutation(len(users)).astype(np.int64),
        )
    return Dataset(
        "contract",
        np.array([f"u{u}" for u in range(n_users)], dtype=object),
        domains,
        {"loader": "harness.testing", "seed": seed},
    )


def _without_users(ds: Dataset, domain: str, users: range) -> Dataset:
    """Drop every interaction of ``users`` in ``domain``: they exist only in other domains."""
    d = ds.domains[domain]
    keep = ~np.isin(d.users, list(users))
    ts = None if d.timestamps is None else d.timestamps[keep]
    domains = dict(ds.domains)
    domains[domain] = DomainData(d.name, d.item_ids, d.users[keep], d.items[keep], ts)
    return Dataset(ds.name, ds.user_ids, domains, {**ds.source, "absent": list(users)})


@functools.cache
def contract_data() -> PreparedData:
    """The prepared contract dataset: 80 users, domains d0 (300 items) and d1 (150 items),
    leave-one-out split, 1 + 99 sampled test candidates (built once per process)."""
    ds = _without_users(_random_dataset(80, (300, 150), seed=5), ABSENT_DOMAIN, ABSENT_USERS)
    ds.validate()
    split = leave_one_out(ds, 0)
    cands = build_candidates(ds, split, 99, 0)
    counts = {
        d: np.bincount(split.domains[d].train_users, minlength=ds.n_users) for d in ds.domains
    }
    return PreparedData(
        "contract", ds, ds.fingerprint(), split, cands, "contract", cands.content_hash(), counts
    )


def contract_task(
    method_cls: type[Method],
    params: MethodParams | None = None,
    seed: int = 0,
    device: str = "cpu",
    prepared: PreparedData | None = None,
) -> CellTask:
    """A cell of ``method_cls`` on the contract data (the cell id is only a label here)."""
    prepared = prepared or contract_data()
    return CellTask(
        cell_id=f"contract-{method_cls.kind}-{seed}",
        dataset=prepared.name,
        method=method_cls.kind,
        kind=method_cls.kind,
        params=params if params is not None else method_cls.quick_params(),
        seed=seed,
        domains=prepared.dataset.domain_names,
        prepared=prepared,
        ks=list(_KS),
        ties="expected",
        validation_k=10,
        full_ranking=True,
        device=device,
    )


def _fail(method_cls: type[Method], rule: str, detail: str) -> ContractViolation:
    return ContractViolation(f"{method_cls.__qualname__} ({method_cls.kind!r}) {rule}: {detail}")


def _check_declaration(method_cls: type[Method]) -> None:
    reason = invalid_method_reason(method_cls)
    if reason is not None:
        raise ContractViolation(reason)
    if method_cls.family not in _FAMILIES:
        raise _fail(method_cls, "declares no valid family", f"{method_cls.family!r}")
    if not isinstance(method_cls.version, str) or not method_cls.version:
        raise _fail(method_cls, "declares no version", "set `version` to a non-empty string")


def _run(method_cls: type[Method], task: CellTask) -> tuple[CellResult, list]:
    """Run one cell of ``method_cls`` through the harness; return it with what fit received
    ((training data, fitted instance) per fit)."""
    fits: list[tuple[TrainingData, Method]] = []

    class Observed(method_cls):  # type: ignore[misc, valid-type]
        def fit(self, data: TrainingData, ctx: FitContext):
            fits.append((data, self))
            return super().fit(data, ctx)

    Observed.__name__, Observed.__qualname__ = method_cls.__name__, method_cls.__qualname__
    with resolving(Observed):
        result = run_cell(task)
    if result.status != "done":
        raise _fail(method_cls, "failed to train and evaluate", f"{result.error}")
    if not fits:
        raise _fail(method_cls, "was never fitted", "run_cell did not call fit")
    return result, fits


def _check_no_held_out_data(method_cls, data: TrainingData, prepared: PreparedData) -> None:
    for name, part in prepared.split.domains.items():
        n_items = prepared.dataset.domains[name].n_items
        train = np.unique(data.users[name].cpu().numpy() * n_items + data.items[name].cpu().numpy())
        held = np.concatenate([part.test_users, part.valid_users]) * n_items + np.concatenate(
            [part.test_items, part.valid_items]
        )
        if np.isin(held, train).any():
            raise _fail(method_cls, "saw held-out data", f"a held-out pair of {name} in training")


def _split_copy(prepared: PreparedData) -> dict[str, dict[str, np.ndarray]]:
    return {
        name: {key: np.array(value, copy=True) for key, value in vars(part).items()}
        for name, part in prepared.split.domains.items()
    }


def _check_split_unchanged(method_cls, before: dict, prepared: PreparedData) -> None:
    for name, part in prepared.split.domains.items():
        for key, value in vars(part).items():
            if not np.array_equal(before[name][key], value):
                for other, part_before in before.items():  # later checks need the data intact
                    for field, saved in part_before.items():
                        np.copyto(getattr(prepared.split.domains[other], field), saved)
                raise _fail(
                    method_cls,
                    "modified the data it was handed",
                    f"{name} {key} changed (it shares memory with the split every cell uses; "
                    f"copy a tensor before editing it in place)",
                )


def _check_rows(method_cls, result: CellResult, prepared: PreparedData, task: CellTask) -> None:
    metrics = result.metrics
    assert metrics is not None
    expected = pl.DataFrame(
        [
            {"ranking": ranking, "domain": domain, "user_idx": int(user), "k": k}
            for domain in task.domains
            for user in prepared.candidates.test[domain].users
            for ranking in ("sampled", "full")
            for k in task.ks
        ],
        schema={"ranking": pl.String, "domain": pl.String, "user_idx": pl.Int32, "k": pl.Int32},
    ).sort(["ranking", "domain", "user_idx", "k"])
    got = metrics.select(["ranking", "domain", "user_idx", "k"]).sort(
        ["ranking", "domain", "user_idx", "k"]
    )
    if not got.equals(expected):
        raise _fail(
            method_cls,
            "did not give one row per test case",
            f"{len(got)} rows, expected {len(expected)} (test cases x K x rankings)",
        )
    for column in ("hr", "ndcg", "mrr"):
        if not metrics[column].is_between(0, 1).all():
            raise _fail(method_cls, "produced metrics out of range", f"{column} outside [0, 1]")
    if not (metrics["rank"] >= 1).all():
        raise _fail(method_cls, "produced metrics out of range", "a rank below 1 (NaN scores?)")


def _check_scores(method_cls, method: Method, prepared: PreparedData, device: torch.device) -> None:
    n_items = prepared.dataset.domains[ABSENT_DOMAIN].n_items
    absent = torch.as_tensor(list(ABSENT_USERS), device=device)
    items = torch.arange(min(50, n_items), device=device).expand(len(absent), -1)
    with torch.no_grad():
        scores = method.score(absent, ABSENT_DOMAIN, items)
        full = method.score_all(absent, ABSENT_DOMAIN)
    if tuple(scores.shape) != tuple(items.shape) or not torch.isfinite(scores).all():
        raise _fail(
            method_cls,
            "gave no finite scores for users absent from a domain",
            f"score() of users with no {ABSENT_DOMAIN} interaction: shape {tuple(scores.shape)}, "
            f"finite: {bool(torch.isfinite(scores).all())}",
        )
    if tuple(full.shape) != (len(absent), n_items) or not torch.isfinite(full).all():
        raise _fail(
            method_cls,
            "gave no finite scores for users absent from a domain",
            f"score_all(): shape {tuple(full.shape)}, expected {(len(absent), n_items)}",
        )
    for domain, data in prepared.dataset.domains.items():
        users = torch.as_tensor(np.unique(data.users)[:16], device=device)
        items = torch.arange(data.n_items, device=device)[: min(64, data.n_items)]
        with torch.no_grad():
            sampled = method.score(users, domain, items.expand(len(users), -1)).float()
            full = method.score_all(users, domain)[:, items].float()
        if not torch.allclose(sampled, full, rtol=1e-4, atol=1e-4):
            gap = float((sampled - full).abs().max())
            raise _fail(
                method_cls,
                "ranks differently in score() and score_all()",
                f"domain {domain}: largest difference {gap:.3g} on the same users and items",
            )


def check_method_contract(
    method_cls: type[Method], params: MethodParams | None = None, *, device: str = "cpu"
) -> CellResult:
    """Check every rule of the method contract (module docstring) on ``method_cls``, trained
    with ``params`` (default: its ``quick_params()``) on ``device``; returns the first cell's
    result. Raises :class:`ContractViolation` naming the first rule broken."""
    _check_declaration(method_cls)
    prepared = contract_data()
    task = contract_task(method_cls, params, seed=0, device=device, prepared=prepared)
    before = _split_copy(prepared)
    result, fits = _run(method_cls, task)
    _check_split_unchanged(method_cls, before, prepared)
    _check_no_held_out_data(method_cls, fits[0][0], prepared)
    _check_rows(method_cls, result, prepared, task)
    _check_scores(method_cls, fits[0][1], prepared, resolve_device(device))
    again, _ = _run(method_cls, replace(task))
    assert result.metrics is not None and again.metrics is not None
    if not again.metrics.equals(result.metrics):
        differ = (
            result.metrics.join(
                again.metrics, on=["ranking", "domain", "user_idx", "k"], suffix="_again"
            )
            .filter(pl.col("rank") != pl.col("rank_again"))
            .height
        )
        raise _fail(
            method_cls,
            "is not deterministic under one seed",
            f"{differ} per-user ranks differ between two trainings with seed {task.seed} "
            f"(seed every random draw from ctx.seed)",
        )
    return result
