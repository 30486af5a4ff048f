"""One registry of methods by ``kind``; the spec validator and the runner both read it.

Methods come from two places, loaded together:

* **built-ins**: modules of the ``methods`` and ``uclr`` packages, whose classes use
  :func:`register`;
* **plugins**: installed distributions that declare entry points in the group
  ``cdr_harness.methods`` (see docs/plugins.md). An entry's value is a :class:`Method`
  subclass (``pkg.module:MyMethod``) or a module whose classes use :func:`register`.

Why entry points: a researcher's method then lives in its own package and needs no fork, and the
registry knows which distribution (and version) each method came from, which every cell records.
A plugin that fails to import is kept in :func:`broken_plugins` and named where it matters; it
never breaks the other methods. Two methods claiming one ``kind`` make that kind unusable (the
same id could mean either implementation) with one error naming both origins.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import pkgutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from pydantic.fields import FieldInfo

from methods.base import Method, MethodParams

__all__ = [
    "ENTRY_POINT_GROUP",
    "BrokenPlugin",
    "MethodConflict",
    "MethodOrigin",
    "ParameterInfo",
    "UnknownMethod",
    "available",
    "broken_plugins",
    "conflicts",
    "describe_parameters",
    "get_method",
    "install_hint",
    "invalid_method_reason",
    "method_origin",
    "refresh",
    "register",
    "resolving",
]

ENTRY_POINT_GROUP = "cdr_harness.methods"
# Packages whose modules define methods; importing a module registers its classes. A new
# built-in method is one module in ``methods/`` (or in the ``uclr`` package) plus its tests;
# modules whose name starts with "_" and the shared infrastructure below are not scanned.
_METHOD_PACKAGES = ("methods", "uclr")
_INFRASTRUCTURE = {"base", "registry", "training", "scoring", "graph"}


class UnknownMethod(KeyError):
    """A ``kind`` that does not resolve to exactly one method class."""

    def __str__(self) -> str:
        return str(self.args[0])


class MethodConflict(UnknownMethod):
    """Two methods (built-in or from plugins) claim one ``kind``."""


@dataclass(frozen=True)
class MethodOrigin:
    """Where a method class came from; plugin cells record ``distribution`` and ``version``."""

    source: Literal["built-in", "plugin", "local"]
    module: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None  # "name = value", as declared by the distribution

    def __str__(self) -> str:
        if self.source == "plugin":
            return f"{self.distribution} {self.version}"
        if self.source == "local":
            return f"registered in-process by module {self.module}"
        return "built-in"

    def detailed(self) -> str:
        """The origin with the entry point or class module, for error messages."""
        if self.source == "plugin":
            return f"distribution {self} (entry point {self.entry_point})"
        return f"{self} ({self.module})"


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that could not be loaded, with the error it raised."""

    distribution: str
    version: str
    entry_point: str
    error: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (entry point {self.entry_point}): {self.error}"


@dataclass(frozen=True)
class _Loaded:
    methods: dict[str, type[Method]]
    origins: dict[str, MethodOrigin]
    conflicts: dict[str, list[MethodOrigin]]
    broken: list[BrokenPlugin]
    declared: int  # len(_DECLARED) when built: a later register() triggers a rebuild


# Every class passed to register(), in order; the registry is built from it plus entry points.
_DECLARED: list[type[Method]] = []
_LOADED: _Loaded | None = None
# Kinds temporarily resolved to a given class (see resolving()).
_RESOLVING: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method under its ``kind``.

    Never raises: a second class claiming a kind is reported as a conflict naming both origins
    (a plugin's decorator must not turn into an import error blaming the wrong package)."""
    for i, known in enumerate(_DECLARED):
        if known is cls:
            return cls
        if (known.__module__, known.__qualname__) == (cls.__module__, cls.__qualname__):
            _DECLARED[i] = cls  # the same class re-executed (importlib.reload): the new one wins
            return cls
    _DECLARED.append(cls)
    return cls


def refresh() -> None:
    """Forget loaded plugins: the next look-up enumerates entry points again (after installing
    a plugin in a running process, or in tests that fake entry points)."""
    global _LOADED
    _LOADED = None


def _method_entry_points() -> list[importlib.metadata.EntryPoint]:
    """Installed entry points of the method group, in a stable order (tests replace this)."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted(found, key=lambda ep: (_dist_name(ep), ep.name, ep.value))


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "(unknown distribution)"


def _dist_version(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.version if ep.dist is not None else "?"


def _import_builtins() -> None:
    for package_name in _METHOD_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_") and info.name not in _INFRASTRUCTURE:
                importlib.import_module(f"{package_name}.{info.name}")


def _is_builtin(cls: type) -> bool:
    return cls.__module__.split(".")[0] in _METHOD_PACKAGES


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def invalid_method_reason(cls: Any) -> str | None:
    """Why ``cls`` cannot be registered as a method (None when it can)."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        return f"{cls!r} is not a subclass of methods.base.Method"
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        return f"{cls.__qualname__} sets no `kind` (a non-empty string)"
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, MethodParams)):
        return f"{cls.__qualname__}.Params is not a subclass of methods.base.MethodParams"
    return None


def _load_entry_point(
    ep: importlib.metadata.EntryPoint,
) -> tuple[list[type[Method]], str | None]:
    """(method classes, None) of one entry point, or ([], error) when it cannot be used."""
    before = len(_DECLARED)
    try:
        target = ep.load()
    except Exception as exc:  # any import-time failure of a plugin is that plugin's problem
        # Classes of modules whose import then failed are gone with them (Python drops a
        # failed module from sys.modules); those of modules that did import stay.
        _DECLARED[before:] = [c for c in _DECLARED[before:] if c.__module__ in sys.modules]
        return [], f"{type(exc).__name__}: {exc}"
    if isinstance(target, ModuleType):
        classes = [c for c in _DECLARED if _within(c.__module__, target.__name__)]
        if not classes:
            return [], (
                f"module {target.__name__} registers no method (decorate its classes with "
                f"methods.registry.register, or point the entry point at a class)"
            )
    else:
        classes = [target]
    for cls in classes:
        if (reason := invalid_method_reason(cls)) is not None:
            return [], reason
    return classes, None


def _build() -> _Loaded:
    _import_builtins()
    claims: dict[str, list[tuple[type[Method], MethodOrigin]]] = {}

    def claim(cls: type[Method], origin: MethodOrigin) -> None:
        held = claims.setdefault(cls.kind, [])
        if all(known is not cls for known, _ in held):
            held.append((cls, origin))

    for cls in _DECLARED:  # built-ins first, so a conflict message names the built-in first
        if _is_builtin(cls):
            claim(cls, MethodOrigin("built-in", cls.__module__))
    broken: list[BrokenPlugin] = []
    plugin_classes: list[type[Method]] = []
    for ep in _method_entry_points():
        name, version = _dist_name(ep), _dist_version(ep)
        declared = f"{ep.name} = {ep.value}"
        classes, error = _load_entry_point(ep)
        if error is not None:
            broken.append(BrokenPlugin(name, version, declared, error))
        for cls in classes:
            plugin_classes.append(cls)
            claim(cls, MethodOrigin("plugin", cls.__module__, name, version, declared))
    for cls in _DECLARED:  # registered by code that is neither built in nor a plugin
        unclaimed = all(cls is not p for p in plugin_classes)
        if not _is_builtin(cls) and unclaimed and invalid_method_reason(cls) is None:
            claim(cls, MethodOrigin("local", cls.__module__))
    methods, origins, conflicting = {}, {}, {}
    for kind, held in sorted(claims.items()):
        if len(held) == 1:
            methods[kind], origins[kind] = held[0]
        else:
            conflicting[kind] = [origin for _, origin in held]
    return _Loaded(methods, origins, conflicting, broken, len(_DECLARED))


def _state() -> _Loaded:
    global _LOADED
    if _LOADED is None or _LOADED.declared != len(_DECLARED):
        _LOADED = _build()
    return _LOADED


def available() -> dict[str, type[Method]]:
    """Every usable method by kind (built-ins and plugins; conflicting kinds are left out)."""
    return {**_state().methods, **_RESOLVING}


def method_origin(kind: str) -> MethodOrigin:
    """Where the method of ``kind`` came from (raises like :func:`get_method`)."""
    cls = get_method(kind)
    if kind in _RESOLVING:
        return MethodOrigin("local", cls.__module__)
    return _state().origins[kind]


def broken_plugins() -> list[BrokenPlugin]:
    """Entry points of the method group that failed to load, with their errors."""
    return list(_state().broken)


def conflicts() -> dict[str, list[MethodOrigin]]:
    """Kinds claimed by more than one method, with every claimant's origin."""
    return dict(_state().conflicts)


def _conflict_message(kind: str, origins: list[MethodOrigin]) -> str:
    names = " and ".join(origin.detailed() for origin in origins)
    return (
        f"method kind {kind!r} is claimed twice: by {names}; uninstall one of these "
        f"distributions or give one method another kind"
    )


def get_method(kind: str) -> type[Method]:
    if kind in _RESOLVING:
        return _RESOLVING[kind]
    state = _state()
    if kind in state.methods:
        return state.methods[kind]
    if kind in state.conflicts:
        raise MethodConflict(_conflict_message(kind, state.conflicts[kind]))
    close = difflib.get_close_matches(kind, list(state.methods), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    broken = (
        f"; plugins that failed to load: {'; '.join(map(str, state.broken))}"
        if state.broken
        else ""
    )
    raise UnknownMethod(
        f"unknown method kind {kind!r}; {hint}known kinds: {', '.join(state.methods)}{broken}"
    )


def install_hint(kind: str, distribution: str | None, version: str | None) -> str:
    """One line on what to install for a stored cell of ``kind`` whose method is missing here;
    ``distribution``/``version`` are what the cell recorded (None for built-ins)."""
    state = _state()
    if kind in state.conflicts:
        return _conflict_message(kind, state.conflicts[kind])
    if distribution is None:
        return (
            f"method kind {kind!r} is not registered here and the cell names no plugin "
            f"distribution (a built-in of another cdr-harness version?)"
        )
    failing = [b for b in state.broken if b.distribution == distribution]
    if failing:
        return (
            f"method kind {kind!r} comes from distribution {distribution!r}, installed here "
            f"but failing to load: {failing[0].error}"
        )
    return (
        f"method kind {kind!r} is not installed: pip install {distribution} (the cell was "
        f"computed with {distribution} {version})"
    )


@contextmanager
def resolving(cls: type[Method]) -> Iterator[None]:
    """Resolve ``cls.kind`` to ``cls`` inside the block, whatever is installed: how the contract
    check (harness.testing) runs a class through a real cell before it is installed."""
    previous = _RESOLVING.get(cls.kind)
    _RESOLVING[cls.kind] = cls
    try:
        yield
    finally:
        if previous is None:
            del _RESOLVING[cls.kind]
        else:
            _RESOLVING[cls.kind] = previous


# -- parameter descriptions (harness methods, docs) --------------------------------------------
@dataclass(frozen=True)
class ParameterInfo:
    name: str
    type: str
    default: str  # repr of the default, or "(required)"
    constraints: str  # e.g. ">= 1", empty when none
    description: str


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
_LENGTHS = (("min_length", "min length"), ("max_length", "max length"))


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _constraints(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for attr, symbol in (*_BOUNDS, *_LENGTHS):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def describe_parameters(cls: type[Method]) -> list[ParameterInfo]:
    """The typed parameters of a method, in declaration order."""
    rows = []
    for name, info in cls.Params.model_fields.items():
        default = (
            "(required)"
            if info.is_required()
            else repr(info.get_default(call_default_factory=True))
        )
        rows.append(
            ParameterInfo(
                name,
                _type_name(info.annotation),
                default,
                _constraints(info),
                info.description or "",
            )
        )
    return rows
