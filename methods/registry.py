"""One registry of methods by ``kind``; the spec validator and the runner both read it."""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from methods.base import Method

__all__ = ["UnknownMethod", "available", "get_method", "register"]

_REGISTRY: dict[str, type[Method]] = {}
# Packages whose modules define methods; importing a module registers its classes. A new
# method is one module in ``methods/`` (or in the ``uclr`` package) plus its tests; modules
# whose name starts with "_" and the shared infrastructure below are not scanned.
_METHOD_PACKAGES = ("methods", "uclr")
_INFRASTRUCTURE = {"base", "registry", "training", "scoring", "graph"}


class UnknownMethod(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method under its ``kind``."""
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise ValueError(f"method kind {cls.kind!r} registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def _load_all() -> None:
    for package_name in _METHOD_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_") and info.name not in _INFRASTRUCTURE:
                importlib.import_module(f"{package_name}.{info.name}")


def available() -> dict[str, type[Method]]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_method(kind: str) -> type[Method]:
    methods = available()
    if kind in methods:
        return methods[kind]
    close = difflib.get_close_matches(kind, list(methods), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownMethod(f"unknown method kind {kind!r}; {hint}known kinds: {', '.join(methods)}")
