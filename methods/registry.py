"""One registry of methods by ``kind``; the spec validator and the runner both read it."""

from __future__ import annotations

import difflib
import importlib

from methods.base import Method

__all__ = ["UnknownMethod", "available", "get_method", "register"]

_REGISTRY: dict[str, type[Method]] = {}
# Modules that define methods; importing them registers their classes. A new method is one
# module here (or in the uclr package) plus its tests.
_METHOD_MODULES = ("methods.bprmf", "methods.popularity")


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
    for module in _METHOD_MODULES:
        importlib.import_module(module)


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
