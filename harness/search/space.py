"""Search spaces of ``[methods.NAME.search]``: parsing, checking against the method's typed
parameters (one-line :class:`SpecIssue` errors) and the trial budget.

A space per parameter is a list of values (a grid axis; categorical for random / TPE),
``{choices = [...]}`` (the same), or ``{low, high, log}`` (a range; integer or float by the
parameter's type; random and TPE only).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from harness.spec.schema import MethodSpec, SearchSpec, Spec
from methods.base import MethodParams
from methods.registry import UnknownMethod, get_method

__all__ = [
    "Dimension",
    "budget_of",
    "cells_per_dataset",
    "dimensions",
    "searched_methods",
    "validate_search",
]

_RANGE_KEYS = {"low", "high", "log"}


@dataclass(frozen=True)
class Dimension:
    name: str
    values: tuple = ()  # a list space (grid axis / categorical)
    low: float | None = None  # a range space
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None


class SpaceError(ValueError):
    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc


def searched_methods(spec: Spec) -> dict[str, MethodSpec]:
    return {name: m for name, m in spec.methods.items() if m.search is not None}


def _numeric_kind(annotation: Any) -> str | None:
    """'int' or 'float' when a range makes sense for a parameter of this type."""
    if annotation is bool:
        return None
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = {_numeric_kind(a) for a in typing.get_args(annotation)} - {None}
        return "float" if "float" in kinds else ("int" if "int" in kinds else None)
    return None


def _check_value(cls: Any, base: dict, name: str, value: Any) -> str | None:
    try:
        cls.Params.model_validate({**base, name: value})
    except ValidationError as exc:
        errors = [e for e in exc.errors() if e["loc"] and e["loc"][0] == name] or exc.errors()
        return "; ".join(dict.fromkeys(e["msg"] for e in errors)) + f" (got {value!r})"
    return None


def dimensions(method: MethodSpec) -> list[Dimension]:
    """Parse a method's spaces (declared order); raise :class:`SpaceError` on the first
    malformed one. Types against the method's Params are checked by :func:`validate_search`."""
    cls = get_method(method.kind)
    return [_dimension(cls, name, raw) for name, raw in method.search.spaces().items()]


def _dimension(cls: Any, name: str, raw: Any) -> Dimension:
    loc: tuple = (name,)
    if isinstance(raw, list):
        values = raw
    elif isinstance(raw, dict) and set(raw) == {"choices"}:
        values = raw["choices"]
        loc = (name, "choices")
        if not isinstance(values, list):
            raise SpaceError(loc, "choices must be a list of values")
    elif isinstance(raw, dict) and {"low", "high"} <= set(raw) <= _RANGE_KEYS:
        field = cls.Params.model_fields.get(name)
        kind = _numeric_kind(field.annotation) if field else "float"
        if kind is None:
            raise SpaceError(
                loc, "a range needs a numeric parameter; give a list of values instead"
            )
        low, high, log = raw["low"], raw["high"], raw.get("log", False)
        if not isinstance(log, bool):
            raise SpaceError((name, "log"), f"log must be true or false (got {log!r})")
        for key, v in (("low", low), ("high", high)):
            ok = isinstance(v, int) if kind == "int" else isinstance(v, int | float)
            if isinstance(v, bool) or not ok:
                raise SpaceError((name, key), f"must be an {kind} here (got {v!r})")
        if not low < high:
            raise SpaceError((name, "low"), f"low must be below high (got {low} >= {high})")
        if log and low <= 0:
            raise SpaceError((name, "low"), f"a log range needs low > 0 (got {low})")
        return Dimension(name, (), low, high, log, kind == "int")
    else:
        raise SpaceError(loc, "expected a list of values, {low, high, log} or {choices = [...]}")
    if not values:
        raise SpaceError(loc, "the list of values is empty")
    if len({repr(v) for v in values}) != len(values):
        raise SpaceError(loc, f"values repeat: {values}")
    return Dimension(name, tuple(values))


def budget_of(spec: Spec, method: MethodSpec, dims: list[Dimension]) -> int:
    """Trials per seed: the method's ``trials``, else ``experiment.search_budget``, else (grid)
    the size of the grid."""
    search: SearchSpec = method.search
    if search.trials is not None:
        return search.trials
    if spec.experiment.search_budget is not None:
        return spec.experiment.search_budget
    if search.strategy == "grid" and dims and not any(d.is_range for d in dims):
        return math.prod(len(d.values) for d in dims)
    raise SpaceError(
        ("trials",), f"{search.strategy} search needs trials (or experiment.search_budget)"
    )


def validate_search(spec: Spec, method_params: dict[str, MethodParams], add) -> None:
    """Check every ``[methods.NAME.search]``: parameters exist, values and bounds fit the
    parameter's type and constraints, the strategy fits the spaces, the budget is known."""
    for name, method in searched_methods(spec).items():
        if name not in method_params:  # its kind or params are already reported
            continue
        where = ("methods", name, "search")
        try:
            cls = get_method(method.kind)
        except UnknownMethod:
            continue
        fields = list(cls.Params.model_fields)
        spaces = method.search.spaces()
        if not spaces:
            add(where, "declare at least one parameter space, e.g. reg = [1e-5, 1e-3]")
            continue
        bad = False
        for param in spaces:
            if param not in fields:
                close = difflib.get_close_matches(param, fields, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                add(
                    (*where, param),
                    f"unknown parameter {param!r} of {method.kind}; {hint}"
                    f"parameters: {', '.join(fields)}",
                )
                bad = True
        if bad:
            continue
        dims = []
        for param, raw in spaces.items():
            try:
                dims.append(_dimension(cls, param, raw))
            except SpaceError as exc:
                add((*where, *exc.loc), str(exc))
                bad = True
        for dim in dims:
            if dim.is_range:
                checks = [("low", dim.low), ("high", dim.high)]
            else:
                checks = list(enumerate(dim.values))
            for key, value in checks:
                problem = _check_value(cls, method.params, dim.name, value)
                if problem:
                    add((*where, dim.name, key), problem)
        if bad:
            continue
        search = method.search
        if search.select_on is not None:
            unknown = sorted(set(search.select_on) - set(spec.experiment.seeds))
            if unknown:
                add(
                    (*where, "select_on"),
                    f"seed(s) {unknown} are not among experiment.seeds "
                    f"{spec.experiment.seeds}; a selection runs on seeds the experiment has",
                )
        if search.prunes and search.strategy != "tpe":
            add(
                (*where, "pruner"),
                "pruning compares a trial with the finished trials of earlier rounds; it "
                "needs strategy 'tpe'",
            )
        if method.search.strategy == "grid":
            ranged = [d.name for d in dims if d.is_range]
            if ranged:
                add(
                    (*where, ranged[0]),
                    "grid search needs a list of values; a range needs strategy 'random' or 'tpe'",
                )
                continue
        try:
            budget = budget_of(spec, method, dims)
        except SpaceError as exc:
            add((*where, *exc.loc), str(exc))
            continue
        if method.search.strategy == "grid":
            size = math.prod(len(d.values) for d in dims)
            if budget != size:
                source = "trials" if method.search.trials else "experiment.search_budget"
                add(
                    (*where, "trials") if method.search.trials else where,
                    f"the grid has {size} points but {source} = {budget}; a grid runs every "
                    f"point (set trials = {size} or change the values)",
                )


def describe(spec: Spec) -> str:
    """One line on the searches of a valid spec (for ``harness validate``), or ''."""
    methods = searched_methods(spec)
    if not methods:
        return ""
    groups: dict[str, list[str]] = {}  # one description, the methods that share it
    total = 0
    n_datasets = {m: len(spec.methods[m].datasets or spec.datasets) for m in methods}
    for name, method in methods.items():
        search = method.search
        budget = budget_of(spec, method, dimensions(method))
        total += n_datasets[name] * cells_per_dataset(spec, method, budget)
        where = (
            f"on seed(s) {', '.join(map(str, search.select_on))}, then the selection on all"
            if search.select_on
            else "per seed"
        )
        pruned = f", {search.pruner} pruning" if search.prunes else ""
        groups.setdefault(f"{search.strategy}, {budget} trials {where}{pruned}", []).append(name)
    parts = [f"{', '.join(names)} ({text})" for text, names in groups.items()]
    return f"; searches: {'; '.join(parts)} -> {total} trial and paper cells in their place"


def cells_per_dataset(spec: Spec, method: MethodSpec, budget: int) -> int:
    """Cells one dataset's search of ``method`` plans at most: trials on the searched seeds,
    a paper cell per seed, and (select_on) the selected values on every other seed."""
    search: SearchSpec = method.search
    seeds = spec.experiment.seeds
    searched = [s for s in search.select_on if s in seeds] if search.select_on else seeds
    paper = len(seeds) if search.paper else 0
    return budget * len(searched) + paper + (len(seeds) - len(searched))
