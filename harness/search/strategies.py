"""Trial proposals: grid and random up front; TPE (Optuna) in rounds, replayed from stored results.

Every proposal is a pure function of the spaces, the budget, a seed and (TPE) the validation
scores of earlier trials (and where a pruned one stopped), so rerunning a spec proposes the same
trials and reuses their cells.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.search.space import Dimension

__all__ = ["FAILED", "Pruned", "grid_points", "random_points", "tpe_points"]

FAILED = "failed"  # a trial whose cell failed (or has no finite validation score)


@dataclass(frozen=True)
class Pruned:
    """A trial its pruning rule stopped: TPE learns it as Optuna's PRUNED trial with its best
    value so far reported at ``step`` (validations run), ranked below every finished trial."""

    step: int
    value: float


Outcome = float | str | Pruned | None  # validation score, FAILED, Pruned, or None while not run


def _tidy(value: float, integer: bool) -> float | int:
    """Round a sampled number: integers exactly, floats to 6 significant digits (stable cell
    ids and readable parameters)."""
    if integer:
        return round(value)
    return float(f"{value:.6g}")


def grid_points(dims: list[Dimension]) -> list[dict]:
    """Every point of the declared product, first parameter slowest."""
    names = [d.name for d in dims]
    return [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(d.values for d in dims))
    ]


def random_points(dims: list[Dimension], n: int, seed: int) -> list[dict]:
    """``n`` independent draws: lists uniformly, ranges uniformly (or log-uniformly)."""
    rng = np.random.default_rng([seed, 0x5EA2C4])
    out = []
    for _ in range(n):
        point = {}
        for d in dims:
            if not d.is_range:
                point[d.name] = d.values[int(rng.integers(len(d.values)))]
                continue
            lo, hi = (math.log(d.low), math.log(d.high)) if d.log else (d.low, d.high)
            if d.integer and not d.log:
                point[d.name] = int(rng.integers(int(d.low), int(d.high) + 1))
                continue
            x = float(rng.uniform(lo, hi))
            x = math.exp(x) if d.log else x
            point[d.name] = min(max(_tidy(x, d.integer), d.low), d.high)
        out.append(point)
    return out


def _plain(d: Dimension) -> bool:
    """Whether every choice is a value Optuna stores as it is (None, bool, int, float, str)."""
    return all(v is None or isinstance(v, bool | int | float | str) for v in d.values)


def _distributions(dims: list[Dimension]) -> dict:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out = {}
    for d in dims:
        if not d.is_range:
            # Optuna keeps a choice's index internally either way; values it cannot store
            # (lists such as NeuMF's tower widths) are handed over as their index
            choices = list(d.values) if _plain(d) else list(range(len(d.values)))
            out[d.name] = CategoricalDistribution(choices)
        elif d.integer:
            out[d.name] = IntDistribution(int(d.low), int(d.high), log=d.log)
        else:
            out[d.name] = FloatDistribution(float(d.low), float(d.high), log=d.log)
    return out


def tpe_points(
    dims: list[Dimension],
    budget: int,
    seed: int,
    outcome: Callable[[dict, int], Outcome],
    round_size: int = 1,
    startup_trials: int | None = None,
    ahead: int = 0,
) -> list[tuple[dict, int]]:
    """(point, round) of every trial that can be proposed now.

    A seeded Optuna TPE sampler is replayed over the stored trials in order: each round asks
    ``round_size`` points, ``outcome(point, round)`` gives their stored validation score (or
    FAILED, or :class:`Pruned`), called for every point of a round before the next is asked;
    the first round with a trial that has not run yet is the last one returned, so the next
    call, after those trials finished, proposes the following round. Same stored results, same
    proposals.

    ``ahead``: the first ``ahead`` trials (at most the random start-up ones) are returned even
    while earlier ones have not run, so several workers can train them side by side. Their
    points are the same either way: the start-up sampler draws from its own seeded stream,
    whatever has been told, and the results are told in the order asked before the first
    model-based round."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = startup_trials if startup_trials is not None else max(1, budget // 3)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dists = _distributions(dims)
    tidy = {d.name: d for d in dims}
    free = min(ahead, startup)  # leading trials whose points depend on no result
    out: list[tuple[dict, int]] = []
    untold: list[tuple[optuna.trial.Trial, Outcome]] = []
    round_no = 0
    while len(out) < budget:
        round_no += 1
        asked = []
        for _ in range(min(round_size, budget - len(out))):
            trial = study.ask(dists)
            point = {}
            for name, value in trial.params.items():
                d = tidy[name]
                if d.is_range:
                    point[name] = min(max(_tidy(value, d.integer), d.low), d.high)
                else:
                    point[name] = value if _plain(d) else d.values[value]
            asked.append((trial, point))
            out.append((point, round_no))
        untold += [(trial, outcome(point, round_no)) for trial, point in asked]
        if any(result is None for _, result in untold):
            if len(out) + min(round_size, budget - len(out)) <= free:
                continue  # the next round's points do not depend on the missing results
            return out
        for trial, result in untold:
            if isinstance(result, Pruned):
                trial.report(result.value, result.step)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif result == FAILED:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, float(result))
        untold.clear()
    return out
