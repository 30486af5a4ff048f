"""Hyperparameter search as ordinary cells.

``plan_cells`` plans every method with its own ``params``; for a method with
``[methods.NAME.search]`` :class:`Search` replaces that cell by one trial cell per proposal
(the method's params with the trial's values: a content-addressed cell like any other, so
resumable, reused and runnable by every executor) plus, unless ``paper = false``, the
method's own params as the "paper settings" cell of every seed.

A selection (:class:`SearchGroup`) is made per seed by default, or once per method with
``select_on = [seeds]``: the trials run on those seeds only, each configuration is scored by its
mean validation score over them, and the chosen values then run on the experiment's other seeds
as "final" cells (the selected trial cells themselves on the searched seeds). The score is the
stored validation score (``cells.best_valid``: NDCG@validation_k; ties to the earlier trial) of
trials with status ``done``; failed and pruned trials count against the budget but are never
selected, and nothing is selected until every trial of the budget has finished. Only the
selected cell of each seed enters ``plan_cells`` under the method's name, so every table and
test of the report uses it and the test metrics of the other trials never reach a table. Until
then the method's row in ``plan_cells`` points at a placeholder id (status pending).

TPE proposals depend on earlier validation scores: :meth:`Search.propose` replays a seeded
sampler over the stored trials in order and returns the trials known so far; the runner calls
it again after each round has run. The random start-up trials come in one go (while no pruning
rule could depend on them), so ``--workers`` trains them side by side. With a pruner, each
trial carries thresholds from the curves of the finished trials of earlier rounds
(:mod:`harness.search.pruning`), fixed when it is proposed and part of its cell id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from harness.runner.cells import CellTask, identity_hash
from harness.search.pruning import VALID_KEY, PruneRule, build_rule, validation_series
from harness.search.space import budget_of, dimensions, searched_methods
from harness.search.strategies import (
    FAILED,
    Outcome,
    Pruned,
    grid_points,
    random_points,
    tpe_points,
)
from harness.spec.load import LoadedSpec
from methods.registry import get_method

__all__ = ["PENDING_PREFIX", "Search", "SearchGroup", "SeedSearch", "Trial"]

PENDING_PREFIX = "search-pending-"
FINISHED = ("done", "failed", "pruned")  # a trial in one of these counts against the budget


@dataclass
class Trial:
    trial: int  # 1.. within its selection; 0 is the paper-settings cell
    role: str  # trial | paper | final (the selected values on a seed that was not searched)
    round: int
    values: dict
    task: CellTask
    status: str | None = None
    valid: float | None = None
    pruned: dict | None = None  # where its pruning rule stopped it (cell notes)

    @property
    def score(self) -> float | None:
        """Its validation score if it can be selected: done with a finite score."""
        if self.status != "done" or self.valid is None or not math.isfinite(self.valid):
            return None
        return float(self.valid)


@dataclass
class SeedSearch:
    """One (dataset, method, seed): its paper cell, the trials run on this seed (none on a seed
    that only runs a selection made on other seeds) and what it plans."""

    dataset: str
    method: str
    seed: int
    strategy: str
    budget: int
    base: CellTask
    trials: list[Trial] = field(default_factory=list)
    paper: Trial | None = None
    group: SearchGroup | None = field(default=None, repr=False)

    @property
    def finished(self) -> list[Trial]:
        return [t for t in self.trials if t.status in FINISHED]

    @property
    def complete(self) -> bool:
        return self.group is not None and self.group.complete

    @property
    def selected(self) -> Trial | None:
        """The selected trial on this seed (a final cell on a seed that was not searched),
        once the whole budget has run."""
        return self.group.selected_for(self.seed) if self.group is not None else None

    def plan_task(self) -> CellTask:
        chosen = self.selected
        if chosen is not None:
            return chosen.task
        group = self.group
        if group is not None and group.complete and group.best is None:
            # nothing selectable: the plan shows the first failure (this seed's if it has one)
            mine = [t for t in self.trials if t.status in ("failed", "pruned")]
            bad = mine or [t for t in group.searched_trials() if t.status in ("failed", "pruned")]
            if bad:
                return bad[0].task
        key = f"{self.dataset}/{self.method}/{self.seed}/{self.base.cell_id}"
        placeholder = PENDING_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:12]
        return dataclasses.replace(self.base, cell_id=placeholder)


@dataclass
class SearchGroup:
    """One selection: a method's trials on a dataset over the seeds it searches (its one seed
    without ``select_on``), and every seed it plans."""

    dataset: str
    method: str
    strategy: str
    budget: int
    searched: tuple[int, ...]
    select_on: bool  # made by the spec's select_on (one selection for every seed)
    seeds: dict[int, SeedSearch] = field(default_factory=dict)
    points: list[tuple[dict, int]] = field(default_factory=list)  # (values, round) so far
    finals: dict[int, Trial] = field(default_factory=dict)

    def point(self, index: int) -> list[Trial]:
        """The cells of one proposed configuration, one per searched seed."""
        return [self.seeds[s].trials[index] for s in self.searched]

    def searched_trials(self) -> list[Trial]:
        return [t for s in self.searched for t in self.seeds[s].trials]

    def status(self, index: int) -> str | None:
        """A configuration's outcome: done (every seed), failed, pruned, or None (running)."""
        states = [t.status for t in self.point(index)]
        if any(s not in FINISHED for s in states):
            return None
        if "failed" in states:
            return "failed"
        return "pruned" if "pruned" in states else "done"

    def score(self, index: int) -> float | None:
        """Mean validation score over the searched seeds, if every one can be selected."""
        scores = [t.score for t in self.point(index)]
        return float(np.mean(scores)) if scores and None not in scores else None

    @property
    def complete(self) -> bool:
        return len(self.points) == self.budget and all(
            self.status(i) is not None for i in range(len(self.points))
        )

    @property
    def best(self) -> int | None:
        """Index of the selected configuration (best score; ties to the earlier one)."""
        if not self.complete:
            return None
        scored = [(s, -i) for i in range(len(self.points)) if (s := self.score(i)) is not None]
        return -max(scored)[1] if scored else None

    def selected_for(self, seed: int) -> Trial | None:
        best = self.best
        if best is None:
            return None
        if seed in self.searched:
            return self.seeds[seed].trials[best]
        return self.finals.get(seed)

    def counts(self) -> dict[str, int]:
        states = [self.status(i) for i in range(len(self.points))]
        return {name: states.count(name) for name in FINISHED}


def _outcome_of(trials: list[tuple[str, float | None, dict | None] | None]) -> Outcome:
    """What TPE learns about one configuration from its cells on the searched seeds."""
    if any(t is None or t[0] not in FINISHED for t in trials):
        return None
    if any(status == "failed" for status, _v, _n in trials):
        return FAILED
    pruned = [notes.get("pruned") or {} for status, _v, notes in trials if status == "pruned"]
    if pruned:
        first = pruned[0]
        return Pruned(int(first.get("validations", 0)), float(first.get("best", 0.0)))
    values = [v for _s, v, _n in trials]
    if any(v is None or not math.isfinite(v) for v in values):
        return FAILED
    return float(np.mean(values))


class Search:
    """The searched methods of a spec over the cells ``plan_cells`` planned for it."""

    def __init__(self, loaded: LoadedSpec, tasks: list[CellTask]):
        self.loaded = loaded
        self.tasks = list(tasks)
        self.methods = searched_methods(loaded.spec)
        self.plain = [t for t in tasks if t.method not in self.methods]
        self.base = [t for t in tasks if t.method in self.methods]
        self.groups: list[SearchGroup] = []

    @property
    def active(self) -> bool:
        return bool(self.methods)

    @property
    def seeds(self) -> list[SeedSearch]:
        """Every (dataset, method, seed) of every search, in plan order."""
        return [s for g in self.groups for s in g.seeds.values()]

    def _outcomes(self, store, ids: list[str]) -> dict[str, tuple[str, float | None, dict | None]]:
        if store is None or store.con is None or not ids:
            return {}
        rows = store.con.execute(
            "SELECT cell_id, status, best_valid, notes FROM cells "
            "WHERE cell_id IN (SELECT unnest(?))",
            [ids],
        ).fetchall()
        out = {}
        for cid, status, valid, notes in rows:
            parsed = None
            if status == "pruned" and notes:
                try:
                    parsed = json.loads(notes)
                except json.JSONDecodeError:
                    parsed = {}
            out[cid] = (status, valid, parsed)
        return out

    def _curves(self, store, ids: list[str]) -> dict[str, dict]:
        """Validation series of finished cells (the pruning reference)."""
        if store is None or store.con is None or not ids:
            return {}
        rows = store.con.execute(
            "SELECT cell_id, stage, domain, epoch, value FROM curves "
            "WHERE name = ? AND cell_id IN (SELECT unnest(?))",
            [VALID_KEY, ids],
        ).fetchall()
        grouped: dict[str, list] = {cid: [] for cid in ids}
        for cid, stage, domain, epoch, value in rows:
            grouped[cid].append((stage, domain, epoch, value))
        return {cid: validation_series(r) for cid, r in grouped.items() if r}

    def _trial_task(self, base: CellTask, values: dict, prune: PruneRule | None = None) -> CellTask:
        method = self.loaded.spec.methods[base.method]
        params = get_method(base.kind).Params.model_validate({**method.params, **values})
        trial = dataclasses.replace(base, params=params, prune=prune)
        return dataclasses.replace(trial, cell_id=identity_hash(trial.identity()))

    def propose(self, store) -> list[CellTask]:
        """Every cell known now: the plain cells, then per searched method and seed its paper
        cell, its trials proposed so far (TPE: up to the first round not yet run) and, once a
        selection made on other seeds exists, its final cell."""
        spec = self.loaded.spec
        self.groups = []
        cache: dict[str, tuple[str, float | None, dict | None]] = {}

        def outcome_of(task: CellTask) -> tuple[str, float | None, dict | None] | None:
            if task.cell_id not in cache:
                cache.update(self._outcomes(store, [task.cell_id]))
            return cache.get(task.cell_id)

        by_method: dict[tuple[str, str], list[CellTask]] = {}
        for base in self.base:
            by_method.setdefault((base.dataset, base.method), []).append(base)
        for (dataset, name), bases in by_method.items():
            method = spec.methods[name]
            search = method.search
            dims = dimensions(method)
            budget = budget_of(spec, method, dims)
            of_seed = {b.seed: b for b in bases}
            if search.select_on:
                plans = [(tuple(search.select_on), True, [b.seed for b in bases])]
            else:
                plans = [((b.seed,), False, [b.seed]) for b in bases]
            for searched, select_on, seeds in plans:
                group = SearchGroup(dataset, name, search.strategy, budget, searched, select_on)
                for seed in seeds:
                    group.seeds[seed] = SeedSearch(
                        dataset, name, seed, search.strategy, budget, of_seed[seed], group=group
                    )
                self._propose_group(group, of_seed, store, outcome_of, dims)
                self.groups.append(group)
        ids = [t.task.cell_id for s in self.seeds for t in self._all(s)]
        cache.update(self._outcomes(store, [i for i in ids if i not in cache]))
        for s in self.seeds:
            for t in self._all(s):
                self._fill(t, cache.get(t.task.cell_id))
        for group in self.groups:  # a selection made on other seeds runs on the rest
            best = group.best
            if best is None or not group.select_on:
                continue
            chosen = group.seeds[group.searched[0]].trials[best]
            for seed, state in group.seeds.items():
                if seed in group.searched:
                    continue
                task = self._trial_task(state.base, chosen.values)
                final = Trial(chosen.trial, "final", chosen.round, chosen.values, task)
                self._fill(final, outcome_of(task))
                group.finals[seed] = final
        out = list(self.plain)
        for s in self.seeds:
            out += [t.task for t in self._all(s)]
        return out

    @staticmethod
    def _fill(trial: Trial, got: tuple[str, float | None, dict | None] | None) -> None:
        if got is not None:
            trial.status, trial.valid = got[0], got[1]
            trial.pruned = (got[2] or {}).get("pruned") if got[0] == "pruned" else None

    def _all(self, state: SeedSearch) -> list[Trial]:
        final = state.group.finals.get(state.seed) if state.group else None
        return [*([state.paper] if state.paper else []), *state.trials, *([final] if final else [])]

    def _propose_group(self, group: SearchGroup, of_seed, store, outcome_of, dims) -> None:
        """Fill ``group`` with the configurations proposed so far and their cells."""
        search = self.loaded.spec.methods[group.method].search
        asked: list[tuple[dict, int]] = []  # configurations in the order TPE proposed them
        rules: dict[tuple[int, int], PruneRule | None] = {}

        def rule_for(seed: int, round_no: int) -> PruneRule | None:
            """Thresholds of a round-``round_no`` trial on ``seed``: the finished trials of
            every earlier round on that seed (only TPE has rounds that wait for results)."""
            if not search.prunes or search.strategy != "tpe":
                return None
            if (seed, round_no) not in rules:
                earlier = [
                    self._trial_task(of_seed[seed], v, rule_for(seed, r))
                    for v, r in asked
                    if r < round_no
                ]
                done = [t.cell_id for t in earlier if (outcome_of(t) or ("",))[0] == "done"]
                rules[(seed, round_no)] = build_rule(
                    search.pruner,
                    search.prune_percentile,
                    search.prune_warmup,
                    search.prune_min_trials,
                    self._curves(store, done),
                )
            return rules[(seed, round_no)]

        if search.strategy == "grid":
            points = [(p, 1) for p in grid_points(dims)]
        elif search.strategy == "random":
            points = [(p, 1) for p in random_points(dims, group.budget, search.seed)]
        else:

            def outcome(point: dict, round_no: int) -> Outcome:
                asked.append((point, round_no))
                cells = [
                    outcome_of(self._trial_task(of_seed[s], point, rule_for(s, round_no)))
                    for s in group.searched
                ]
                return _outcome_of(cells)

            sampler_seed = (search.seed * 1_000_003 + group.searched[0]) % 2**31
            # start-up trials run side by side while no pruning rule can depend on them (a
            # trial with fewer than prune_min_trials earlier trials has no rule either way)
            ahead = search.prune_min_trials if search.prunes else group.budget
            points = tpe_points(
                dims,
                group.budget,
                sampler_seed,
                outcome,
                search.round_size,
                search.startup_trials,
                ahead=ahead,
            )
        group.points = list(points)
        for seed in group.searched:
            state = group.seeds[seed]
            for number, (values, round_no) in enumerate(points, start=1):
                task = self._trial_task(state.base, values, rule_for(seed, round_no))
                state.trials.append(Trial(number, "trial", round_no, values, task))
        if search.paper:
            for state in group.seeds.values():
                state.paper = Trial(0, "paper", 0, {}, state.base)

    def plan_tasks(self) -> list[CellTask]:
        """What ``plan_cells`` holds: plain cells and, per searched method and seed, the
        selected trial (or a pending placeholder), in the order of ``plan_cells``."""
        chosen = {(s.dataset, s.method, s.seed): s.plan_task() for s in self.seeds}
        return [chosen.get((t.dataset, t.method, t.seed), t) for t in self.tasks]

    def save(self, store, experiment: str) -> None:
        """Replace the experiment's rows of ``search_trials`` and ``search_selections`` (one
        selection row per seed; with ``select_on`` every seed's row holds the one selection)."""
        trials, selections = [], []
        now = datetime.now()
        for s in self.seeds:
            group = s.group
            for t in self._all(s):
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
                        "prune": (
                            json.dumps(t.task.prune.identity(), sort_keys=True)
                            if t.task.prune is not None
                            else None
                        ),
                    }
                )
            chosen = s.selected
            best = group.best if group is not None else None
            counts = group.counts()
            selections.append(
                {
                    "experiment": experiment,
                    "dataset": s.dataset,
                    "method": s.method,
                    "seed": s.seed,
                    "strategy": s.strategy,
                    "budget": s.budget,
                    "trials_proposed": len(group.points),
                    "trials_done": counts["done"],
                    "trials_failed": counts["failed"],
                    "trials_pruned": counts["pruned"],
                    "complete": group.complete,
                    "select_on": json.dumps(list(group.searched)) if group.select_on else None,
                    "trial": chosen.trial if chosen else None,
                    "cell_id": chosen.task.cell_id if chosen else None,
                    "chosen": json.dumps(chosen.values, sort_keys=True) if chosen else None,
                    "validation": chosen.score if chosen else None,
                    "select_score": group.score(best) if best is not None else None,
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
