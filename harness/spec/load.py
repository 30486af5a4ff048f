"""Load and validate a spec file into typed objects, or fail with precise, one-line errors.

Every problem becomes a :class:`SpecIssue` naming the file, the TOML line (when the key exists
in the file), the dotted key path and a fix. All issues are collected before raising, so one
``harness validate`` shows everything that is wrong.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.spec.schema import Spec
from methods.base import MethodParams
from methods.registry import UnknownMethod, get_method

__all__ = ["LoadedSpec", "SpecError", "SpecIssue", "load_spec"]


@dataclass(frozen=True)
class SpecIssue:
    file: str
    loc: tuple[str | int, ...]
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = ".".join(str(p) for p in self.loc) or "<top level>"
        return f"{where}: {key}: {self.message}"


class SpecError(ValueError):
    def __init__(self, issues: list[SpecIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec with every method's typed parameters and every dataset's loader config."""

    path: Path
    spec: Spec
    method_params: dict[str, MethodParams]
    loader_configs: dict[str, BaseModel]
    text: str = field(repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def spec_hash(self) -> str:
        data = self.spec.model_dump(mode="json")
        if data["experiment"].get("search_budget") is None:  # specs without a search keep
            data["experiment"].pop("search_budget", None)  # the hash they had before it
        for method in data["methods"].values():
            if method.get("search") is None:
                method.pop("search", None)
        canonical = json.dumps(data, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def method_label(self, name: str) -> str:
        return self.spec.methods[name].label or name

    def datasets_of(self, method: str) -> list[str]:
        wanted = self.spec.methods[method].datasets
        return list(self.spec.datasets) if wanted is None else wanted


def load_spec(path: str | Path, check_files: bool = True) -> LoadedSpec:
    """Parse, validate and cross-check a spec; raise :class:`SpecError` listing every issue."""
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise SpecError([SpecIssue(shown, (), f"spec file not found (looked at {path.resolve()})")])
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise SpecError([SpecIssue(shown, (), f"invalid TOML: {exc}", line)]) from None
    locate = _KeyLocator(text)
    issues: list[SpecIssue] = []

    def add(loc: tuple, message: str) -> None:
        issues.append(SpecIssue(shown, tuple(loc), message, locate(loc)))

    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        for loc, message in _explain(exc, Spec, raw):
            add(loc, message)
        raise SpecError(issues) from None

    method_params = _validate_methods(spec, add)
    from harness.search.space import validate_search  # local: the search imports the spec

    validate_search(spec, method_params, add)
    loader_configs = _validate_datasets(spec, path.parent, add, check_files)
    _cross_check(spec, loader_configs, add)
    if issues:
        raise SpecError(issues)
    return LoadedSpec(path, spec, method_params, loader_configs, text)


def _validate_methods(spec: Spec, add) -> dict[str, MethodParams]:
    out = {}
    for name, method in spec.methods.items():
        try:
            cls = get_method(method.kind)
        except UnknownMethod as exc:
            add(("methods", name, "kind"), str(exc))
            continue
        try:
            out[name] = cls.Params.model_validate(method.params)
        except ValidationError as exc:
            for loc, message in _explain(exc, cls.Params, method.params):
                add(("methods", name, "params", *loc), message)
    return out


def _validate_datasets(spec: Spec, base_dir: Path, add, check_files: bool) -> dict[str, BaseModel]:
    from harness.data.loaders import get_loader  # local: loaders pull in heavier modules

    out = {}
    for name, dataset in spec.datasets.items():
        try:
            loader = get_loader(dataset.loader)
        except KeyError as exc:
            add(("datasets", name, "loader"), str(exc.args[0]))
            continue
        options = dataset.options()
        try:
            config = loader.config_model.model_validate(options)
        except ValidationError as exc:
            for loc, message in _explain(exc, loader.config_model, options):
                add(("datasets", name, *loc), message)
            continue
        out[name] = config
        if check_files:
            for file, hint in config.required_files(base_dir):
                if not Path(file).exists():
                    add(
                        ("datasets", name, "path"),
                        f"missing data file: looked at {Path(file).resolve()}; {hint}",
                    )
    return out


def _cross_check(spec: Spec, loader_configs: dict[str, BaseModel], add) -> None:
    protocol = spec.protocol
    list_length = protocol.negatives + 1
    for k in protocol.ks:
        if k > list_length:
            add(
                ("protocol", "ks"),
                f"K={k} exceeds the candidate list length {list_length} "
                f"(1 positive + {protocol.negatives} negatives)",
            )
    if protocol.validation_k > list_length:
        add(
            ("protocol", "validation_k"),
            f"{protocol.validation_k} exceeds the list length {list_length}",
        )
    ref = spec.experiment.reference_method
    if ref is not None and ref not in spec.methods:
        add(("experiment", "reference_method"), _unknown("method", ref, list(spec.methods)))
    for name, method in spec.methods.items():
        for dataset in method.datasets or []:
            if dataset not in spec.datasets:
                add(
                    ("methods", name, "datasets"), _unknown("dataset", dataset, list(spec.datasets))
                )
        if not method.domains:
            continue
        for dataset in method.datasets or list(spec.datasets):
            config = loader_configs.get(dataset)
            declared = getattr(config, "domains", None)
            if declared is None:
                continue  # domains known only after loading; the runner checks them then
            for domain in method.domains:
                if domain not in declared:
                    add(
                        ("methods", name, "domains"),
                        f"dataset {dataset!r} has no domain {domain!r}; "
                        + _unknown("domain", domain, list(declared)),
                    )


def _unknown(what: str, value: str, known: list[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} {value!r}; {hint}declared: {', '.join(map(str, known)) or 'none'}"


def _explain(exc: ValidationError, model: type[BaseModel], data: Any) -> list[tuple[tuple, str]]:
    """Turn pydantic errors into (loc, message) pairs with 'did you mean' hints."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            out.append((loc, f"unknown key {loc[-1]!r}; {hint}allowed: {', '.join(allowed)}"))
        elif err["type"] == "missing":
            out.append((loc, "required key is missing"))
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            out.append((loc, f"{err['msg']}{shown}"))
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model reached by following ``loc`` through nested models and dicts."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            current = info.annotation if info else None
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
        for arg in typing.get_args(current) or ():  # Optional[Model] and similar unions
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


class _KeyLocator:
    """Finds the line of a dotted key path in TOML text (tables, dotted and quoted keys)."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(
        r"^\s*((?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')"
        r"(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'))*)\s*="
    )

    def __init__(self, text: str):
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            if header := self._HEADER.match(line):
                table = self._split(header.group(1))
                self.lines.setdefault(table, number)
            elif key := self._KEY.match(line):
                self.lines.setdefault(table + self._split(key.group(1)), number)

    @staticmethod
    def _split(dotted: str) -> tuple[str, ...]:
        parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_\-]+)", dotted)
        return tuple(next(p for p in groups if p) for groups in parts)

    def __call__(self, loc: tuple) -> int | None:
        path = tuple(str(p) for p in loc if not isinstance(p, int))
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None
