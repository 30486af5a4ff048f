"""Hyperparameter search as ordinary cells.

``plan_cells`` plans every method with its own ``params``; for a method with
``[methods.NAME.search]`` :class:`Search` replaces that cell by one trial cell per proposal
(the method's params with the trial's values: a content-addressed cell like any other, so
resumable, reused and runnable by every executor) plus, unless ``paper = false``, the
method's own params as the "paper settings" cell. Per seed, the trial with the highest stored
validation score (``cells.best_valid``: NDCG@validation_k; ties to the earlier trial) is
selected once every trial of the budget has finished; only the selected cell enters
``plan_cells`` under the method's name, so every table and test of the report uses it and the
test metrics of the other trials never reach a table. Until then the method's row in
``plan_cells`` points at a placeholder id (status pending).

TPE proposals depend on earlier validation scores: :meth:`Search.propose` replays a seeded
sampler over the stored trials in order and returns the trials known so far; the runner calls
it again after each round has run (:meth:`Search.next_round`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from harness.runner.cells import CellTask, identity_hash
from harness.search.space import budget_of, dimensions, searched_methods
from harness.search.strategies import FAILED, grid_points, random_points, tpe_points
from harness.spec.load import LoadedSpec
from methods.registry import get_method

__all__ = ["PENDING_PREFIX", "Search", "SeedSearch", "Trial"]

PENDING_PREFIX = "search-pending-"


@dataclass
class Trial:
    trial: int  # 1.. within (dataset, method, seed); 0 is the paper-settings cell
    role: str  # trial | paper
    round: int
    values: dict
    task: CellTask
    status: str | None = None
    valid: float | None = None


@dataclass
class SeedSearch:
    dataset: str
    method: str
    seed: int
    strategy: str
    budget: int
    base: CellTask
    trials: list[Trial] = field(default_factory=list)
    paper: Trial | None = None

    @property
    def finished(self) -> list[Trial]:
        return [t for t in self.trials if t.status in ("done", "failed")]

    @property
    def complete(self) -> bool:
        return len(self.trials) == self.budget and len(self.finished) == self.budget

    @property
    def selected(self) -> Trial | None:
        """The trial with the best validation score, once the whole budget has run."""
        if not self.complete:
            return None
        scored = [t for t in self.trials if _score(t) is not None]
        return max(scored, key=lambda t: (_score(t), -t.trial)) if scored else None

    def plan_task(self) -> CellTask:
        chosen = self.selected
        if chosen is not None:
            return chosen.task
        failed = [t for t in self.trials if t.status == "failed"]
        if self.complete and failed:  # nothing selectable: the plan shows the first failure
            return failed[0].task
        key = f"{self.dataset}/{self.method}/{self.seed}/{self.base.cell_id}"
        placeholder = PENDING_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:12]
        return dataclasses.replace(self.base, cell_id=placeholder)


def _score(t: Trial) -> float | None:
    if t.status != "done" or t.valid is None or not math.isfinite(t.valid):
        return None
    return t.valid


class Search:
    """The searched methods of a spec over the cells ``plan_cells`` planned for it."""

    def __init__(self, loaded: LoadedSpec, tasks: list[CellTask]):
        self.loaded = loaded
        self.tasks = list(tasks)
        self.methods = searched_methods(loaded.spec)
        self.plain = [t for t in tasks if t.method not in self.methods]
        self.base = [t for t in tasks if t.method in self.methods]
        self.seeds: list[SeedSearch] = []

    @property
    def active(self) -> bool:
        return bool(self.methods)

    def _outcomes(self, store, ids: list[str]) -> dict[str, tuple[str, float | None]]:
        if store is None or store.con is None or not ids:
            return {}
        rows = store.con.execute(
            "SELECT cell_id, status, best_valid FROM cells WHERE cell_id IN (SELECT unnest(?))",
            [ids],
        ).fetchall()
        return {cid: (status, valid) for cid, status, valid in rows}

    def _trial_task(self, base: CellTask, values: dict) -> CellTask:
        method = self.loaded.spec.methods[base.method]
        params = get_method(base.kind).Params.model_validate({**method.params, **values})
        trial = dataclasses.replace(base, params=params)
        return dataclasses.replace(trial, cell_id=identity_hash(trial.identity()))

    def propose(self, store) -> list[CellTask]:
        """Every cell known now: the plain cells, then per searched method and seed its paper
        cell and its trials proposed so far (TPE: up to the first round not yet run)."""
        spec = self.loaded.spec
        self.seeds = []
        cache: dict[str, tuple[str, float | None]] = {}

        def outcome_of(task: CellTask) -> tuple[str, float | None] | None:
            if task.cell_id not in cache:
                cache.update(self._outcomes(store, [task.cell_id]))
            return cache.get(task.cell_id)

        for base in self.base:
            method = spec.methods[base.method]
            search = method.search
            dims = dimensions(method)
            budget = budget_of(spec, method, dims)
            state = SeedSearch(base.dataset, base.method, base.seed, search.strategy, budget, base)
            if search.strategy == "grid":
                points = [(p, 1) for p in grid_points(dims)]
            elif search.strategy == "random":
                points = [(p, 1) for p in random_points(dims, budget, search.seed)]
            else:

                def outcome(point: dict, base: CellTask = base):
                    got = outcome_of(self._trial_task(base, point))
                    if got is None or got[0] not in ("done", "failed"):
                        return None
                    status, valid = got
                    ok = status == "done" and valid is not None and math.isfinite(valid)
                    return float(valid) if ok else FAILED

                sampler_seed = (search.seed * 1_000_003 + base.seed) % 2**31
                points = tpe_points(
                    dims, budget, sampler_seed, outcome, search.round_size, search.startup_trials
                )
            ids = []
            for number, (values, round_no) in enumerate(points, start=1):
                task = self._trial_task(base, values)
                state.trials.append(Trial(number, "trial", round_no, values, task))
                ids.append(task.cell_id)
            if search.paper:
                state.paper = Trial(0, "paper", 0, {}, base)
                ids.append(base.cell_id)
            cache.update(self._outcomes(store, [i for i in ids if i not in cache]))
            for t in [*state.trials, *([state.paper] if state.paper else [])]:
                got = cache.get(t.task.cell_id)
                if got is not None:
                    t.status, t.valid = got
            self.seeds.append(state)
        out = list(self.plain)
        for state in self.seeds:
            if state.paper is not None:
                out.append(state.paper.task)
            out += [t.task for t in state.trials]
        return out

    def plan_tasks(self) -> list[CellTask]:
        """What ``plan_cells`` holds: plain cells and, per searched method and seed, the
        selected trial (or a pending placeholder), in the order of ``plan_cells``."""
        chosen = {(s.dataset, s.method, s.seed): s.plan_task() for s in self.seeds}
        return [chosen.get((t.dataset, t.method, t.seed), t) for t in self.tasks]

    def save(self, store, experiment: str) -> None:
        """Replace the experiment's rows of ``search_trials`` and ``search_selections``."""
        trials, selections = [], []
        now = datetime.now()
        for s in self.seeds:
            for t in [*([s.paper] if s.paper else []), *s.trials]:
                trials.append(
                    {
                        "experiment": experiment,
                        "dataset": s.dataset,
                        "method": s.method,
                        "seed": s.seed,
                        "trial": t.trial,
                        "role": t.role,
                        "strategy": s.strategy,
                        "round": t.round,
                        "cell_id": t.task.cell_id,
                        "search_values": json.dumps(t.values, sort_keys=True),
                        "params": json.dumps(t.task.params.model_dump(mode="json")),
                    }
                )
            chosen = s.selected
            selections.append(
                {
                    "experiment": experiment,
                    "dataset": s.dataset,
                    "method": s.method,
                    "seed": s.seed,
                    "strategy": s.strategy,
                    "budget": s.budget,
                    "trials_proposed": len(s.trials),
                    "trials_done": sum(t.status == "done" for t in s.trials),
                    "trials_failed": sum(t.status == "failed" for t in s.trials),
                    "complete": s.complete,
                    "trial": chosen.trial if chosen else None,
                    "cell_id": chosen.task.cell_id if chosen else None,
                    "chosen": json.dumps(chosen.values, sort_keys=True) if chosen else None,
                    "validation": chosen.valid if chosen else None,
                    "selected_at": now,
                }
            )
        con = store.con
        con.execute("BEGIN TRANSACTION")
        try:
            for table, rows in (("search_trials", trials), ("search_selections", selections)):
                con.execute(f"DELETE FROM {table} WHERE experiment = ?", [experiment])
                if rows:
                    frame = pl.DataFrame(rows, infer_schema_length=None)
                    con.register("search_df", frame)
                    columns = ", ".join(frame.columns)
                    con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM search_df")
                    con.unregister("search_df")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
