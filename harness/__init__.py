"""Declarative, reproducible evaluation harness for cross-domain recommendation."""

__version__ = "0.1.0"
