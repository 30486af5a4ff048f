"""User-facing error types: the CLI prints these as one line instead of a traceback."""

from __future__ import annotations

__all__ = ["HarnessError"]


class HarnessError(RuntimeError):
    """An expected failure caused by input or environment, with a message saying how to fix it."""
