"""Recommendation methods behind one interface (``methods.base.Method``) and one registry."""

from methods.base import FitContext, FitSummary, Method, MethodParams, TrainingData
from methods.registry import available, get_method, register

__all__ = [
    "FitContext",
    "FitSummary",
    "Method",
    "MethodParams",
    "TrainingData",
    "available",
    "get_method",
    "register",
]
