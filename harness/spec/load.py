"""Load and validate a spec file into typed objects, or fail with precise, one-line errors.

Every problem becomes a :class:`SpecIssue` naming the file, the TOML line (when the key exists
in the file), the dotted key path and a fix. All issues are collected before raising, so one
``harness validate`` shows everything that is wrong.
"""

from __future__ import annotations

import copy
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

__all__ = [
    "DataMissing",
    "LoadedSpec",
    "SpecError",
    "SpecIssue",
    "check_against_data",
    "load_spec",
]


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


class DataMissing(SpecError):
    """The spec is valid but data files it names are not there (exit 3, not 2): each issue
    says which files and the command that fetches them."""


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
        if not data["experiment"].get("results"):  # the same for published results folders
            data["experiment"].pop("results", None)
        if data["experiment"].get("matmul_precision") == "highest":  # and for full fp32
            data["experiment"].pop("matmul_precision", None)
        for method in data["methods"].values():
            for key in ("search", "matmul_precision"):
                if method.get(key) is None:
                    method.pop(key, None)
        for dataset in data["datasets"].values():  # specs with a path keep their hash
            if dataset.get("dataset") is None:
                dataset.pop("dataset", None)
        canonical = json.dumps(data, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def issue(self, loc: tuple, message: str) -> SpecIssue:
        """A :class:`SpecIssue` at ``loc`` with its line in this spec's text (for checks that
        run after loading, e.g. in the runner)."""
        return SpecIssue(str(self.path), tuple(loc), message, _KeyLocator(self.text)(loc))

    def method_label(self, name: str) -> str:
        return self.spec.methods[name].label or name

    def matmul_precision(self, method: str) -> str:
        """The float32 matmul precision ``method``'s cells train and score with."""
        own = self.spec.methods[method].matmul_precision
        return own or self.spec.experiment.matmul_precision

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

    method_params = _validate_methods(spec, add, path.parent)
    from harness.search.space import validate_search  # local: the search imports the spec

    validate_search(spec, method_params, add)
    missing: list[SpecIssue] = []

    def add_missing(loc: tuple, message: str) -> None:
        missing.append(SpecIssue(shown, tuple(loc), message, locate(loc)))

    loader_configs = _validate_datasets(spec, path.parent, add, add_missing, check_files)
    _cross_check(spec, loader_configs, add)
    if check_files:
        for index, folder in enumerate(spec.experiment.results):
            if not (path.parent / folder).is_dir():
                add(
                    ("experiment", "results", index),
                    f"results folder {folder!r} not found (looked at "
                    f"{(path.parent / folder).resolve()}); paths resolve against the spec's folder",
                )
    if issues:
        raise SpecError(issues + missing)
    if missing:
        raise DataMissing(missing)
    return LoadedSpec(path, spec, method_params, loader_configs, text)


def _validate_methods(spec: Spec, add, base_dir: Path) -> dict[str, MethodParams]:
    out = {}
    for name, method in spec.methods.items():
        try:
            cls = get_method(method.kind)
        except UnknownMethod as exc:
            add(("methods", name, "kind"), _published_plugin_hint(spec, base_dir, method.kind)
                or str(exc))  # fmt: skip
            continue
        try:
            out[name] = cls.Params.model_validate(method.params)
        except ValidationError as exc:
            for loc, message in _explain(exc, cls.Params, method.params):
                add(("methods", name, "params", *loc), message)
            continue
        for loc, message in _strict_issues(cls.Params, method.params):
            add(("methods", name, "params", *loc), message)
    return out


def _published_plugin_hint(spec: Spec, base_dir: Path, kind: str) -> str | None:
    """For a kind that is not installed: the install line of the plugin distribution that a
    published bundle of this spec's results folders recorded for it (None: none did)."""
    import pyarrow.parquet as pq

    from harness.store.bundle import META_KEY
    from methods.registry import install_hint

    for folder in spec.experiment.results:
        for path in sorted((base_dir / folder).glob("*.parquet")):
            try:
                meta = json.loads(pq.read_schema(path).metadata[META_KEY])
            except (OSError, KeyError, TypeError, ValueError):
                continue
            cell = meta.get("cell", {})
            if meta.get("identity", {}).get("kind") == kind and cell.get("method_distribution"):
                return install_hint(
                    kind, cell["method_distribution"], cell.get("method_distribution_version")
                )
    return None


def _strict_issues(model: type[BaseModel], data: Any) -> list[tuple[tuple, str]]:
    """Values the lax model accepted only by conversion (``max_epochs = "200"``, ``lr = "1e-3"``,
    ``flag = "yes"``): strict-mode errors. TOML has no tuples, so an array given for a tuple
    field is read as a tuple first (its items are then checked strictly). The validated values
    are those of the lax model, so nothing else changes."""
    data = copy.deepcopy(data)
    for _ in range(8):  # each pass turns the arrays strict mode wanted as tuples into tuples
        try:
            model.model_validate(data, strict=True)
            return []
        except ValidationError as exc:
            failure = exc
        errors = failure.errors()
        tuples = [e for e in errors if e["type"] == "tuple_type" and isinstance(e["input"], list)]
        if not tuples:
            return _explain(failure, model, data)
        for error in tuples:
            _set_at(data, tuple(error["loc"]), tuple(error["input"]))
    return []


def _set_at(data: Any, loc: tuple, value: Any) -> None:
    for part in loc[:-1]:
        data = data[part]
    data[loc[-1]] = value


def _validate_datasets(
    spec: Spec, base_dir: Path, add, add_missing, check_files: bool
) -> dict[str, BaseModel]:
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
            # strict: a quoted number or boolean in a dataset table is an error, as elsewhere
            config = loader.config_model.model_validate(options, strict=True)
        except ValidationError as exc:
            for loc, message in _explain(exc, loader.config_model, options):
                add(("datasets", name, *loc), message)
            continue
        out[name] = config
        if check_files:
            absent = [(f, hint) for f, hint in config.required_files(base_dir) if not f.exists()]
            if absent:
                add_missing(("datasets", name), _missing_message(dataset, absent))
    return out


def _missing_message(dataset: Any, absent: list[tuple[Path, str]]) -> str:
    """One line: which files are missing and how to get them (the fetch command of a
    registered dataset, else the loader's hint)."""
    from harness.data.home import data_home, fetch_command

    first = Path(absent[0][0]).resolve()
    more = f" and {len(absent) - 1} more file(s)" if len(absent) > 1 else ""
    command = fetch_command([f for f, _ in absent])
    if command is not None:
        registered = f"dataset {dataset.dataset!r} " if dataset.dataset else ""
        alternative = ""
        if dataset.dataset:
            from harness.data.registry import get_entry

            alternative = get_entry(dataset.dataset).alternative
        return (
            f"{registered}not in the data home {data_home()} (missing {first}{more}); get it "
            f"with `{command}` (or `harness run --fetch`), or set $HARNESS_DATA to a folder "
            f"that holds it" + (f"; {alternative}" if alternative else "")
        )
    return f"missing data file {first}{more}; {absent[0][1]}"


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
            if dataset not in spec.datasets:
                continue
            declared = _declared_domains(loader_configs.get(dataset))
            if declared is None:
                continue  # domains known only after loading: check_against_data does it
            for domain in method.domains:
                if domain not in declared:
                    add(
                        ("methods", name, "domains"),
                        f"dataset {dataset!r} has no domain {domain!r}; "
                        + _unknown("domain", domain, list(declared)),
                    )


def _declared_domains(config: BaseModel | None) -> list[str] | None:
    """The domains a loader config will produce, when known without loading data."""
    if config is None:
        return None
    if getattr(config, "domains", None) is not None:
        return list(config.domains)  # type: ignore[attr-defined]
    for attr in ("chosen_domains", "resolve"):  # amazon, amazon_pairs / synthetic
        if hasattr(config, attr):
            try:
                found = getattr(config, attr)()
            except (ValueError, KeyError, TypeError):
                return None
            domains = getattr(found, "domains", found)
            return list(domains) if domains is not None else None
    return None


_DATA_CACHE: dict[tuple, Any] = {}


def _load_cached(loader: str, config: BaseModel, base_dir: Path, files: list) -> Any:
    """Load a dataset for validation; repeated validations in one process (tests, tools)
    reuse it while the config and the files (path, size, mtime) are unchanged."""
    from harness.data.loaders import get_loader

    stats = tuple((str(f), Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f, _ in files)
    key = (loader, config.model_dump_json(), str(Path(base_dir).resolve()), stats)
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) >= 8:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[key] = get_loader(loader).load(config, base_dir)
    return _DATA_CACHE[key]


def check_against_data(loaded: LoadedSpec) -> None:
    """Checks that need the data (``harness validate`` runs them when the files exist): every
    method's ``domains`` exist in the loaded dataset, and every domain has enough items the
    busiest user never touched to draw ``protocol.negatives`` (else the run would stop with
    NotEnoughItems). Raises :class:`SpecError`; data files that are malformed raise the
    loader's DataError (exit 3)."""
    import numpy as np

    locate = _KeyLocator(loaded.text)
    shown = str(loaded.path)
    issues: list[SpecIssue] = []

    def add(loc: tuple, message: str) -> None:
        issues.append(SpecIssue(shown, tuple(loc), message, locate(loc)))

    spec = loaded.spec
    negatives = spec.protocol.negatives
    for name, config in loaded.loader_configs.items():
        files = config.required_files(loaded.base_dir)  # type: ignore[attr-defined]
        if not all(Path(f).is_file() for f, _ in files):
            continue  # load_spec reported the missing file (or it was not asked to)
        try:
            dataset = _load_cached(spec.datasets[name].loader, config, loaded.base_dir, files)
        except (FileNotFoundError, ValueError) as exc:  # as the runner reports them
            add(("datasets", name), str(exc))
            continue
        for method, mspec in spec.methods.items():
            if mspec.datasets is not None and name not in mspec.datasets:
                continue
            for domain in mspec.domains or []:
                if domain not in dataset.domains:
                    add(
                        ("methods", method, "domains"),
                        f"dataset {name!r} has no domain {domain!r}; "
                        + _unknown("domain", domain, dataset.domain_names),
                    )
        for domain_name, domain in dataset.domains.items():
            users = domain.users
            items = domain.items
            if domain.fixed_test is not None:
                users = np.concatenate([users, domain.fixed_test.users])
                items = np.concatenate([items, domain.fixed_test.items])
            if len(users) == 0:
                continue
            keys = np.unique(users.astype(np.int64) * max(domain.n_items, 1) + items)
            seen = np.bincount(keys // max(domain.n_items, 1))
            worst = int(seen.argmax())
            available = domain.n_items - int(seen[worst])
            if available < negatives:
                add(
                    ("protocol", "negatives"),
                    f"{negatives} negatives cannot be drawn in dataset {name!r} domain "
                    f"{domain_name!r}: it has {domain.n_items} items and user "
                    f"{dataset.user_ids[worst]!r} interacted with {int(seen[worst])}, leaving "
                    f"{available}; lower protocol.negatives to at most {max(available, 0)}",
                )
    if issues:
        raise SpecError(issues)


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
