"""Registry of dataset loaders: name -> config model + load function.

Specs name a loader in their ``loader`` field; :func:`parse_loader_config` picks the config
model, and ``required_files`` lets spec validation check files exist without loading.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.data.dataset import Dataset
from harness.data.loaders._common import DataFileMissing, LoaderConfig
from harness.data.loaders.amazon import AmazonConfig, load_amazon
from harness.data.loaders.amazon_pairs import AmazonPairsConfig, load_amazon_pairs
from harness.data.loaders.douban import DoubanConfig, load_douban
from harness.data.loaders.generic import InteractionsConfig, load_interactions
from harness.data.loaders.synthetic import SyntheticConfig, load_synthetic

__all__ = [
    "LOADERS",
    "DataFileMissing",
    "LoaderConfig",
    "LoaderSpec",
    "UnknownLoader",
    "get_loader",
    "load_dataset",
    "parse_loader_config",
]


class UnknownLoader(KeyError):
    """KeyError whose message prints plainly (KeyError would show its repr)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class LoaderSpec:
    """One registered loader."""

    name: str
    config_model: type[BaseModel]
    load: Callable[[Any, Path], Dataset]
    description: str


LOADERS: dict[str, LoaderSpec] = {
    spec.name: spec
    for spec in (
        LoaderSpec(
            "douban",
            DoubanConfig,
            load_douban,
            "Douban books/movies/music TSVs from the GA-DTCDR release; ratings as implicit.",
        ),
        LoaderSpec(
            "amazon",
            AmazonConfig,
            load_amazon,
            "Raw Amazon 2014 ratings-only CSVs; seeded 70% item drop, users in all domains.",
        ),
        LoaderSpec(
            "amazon_pairs",
            AmazonPairsConfig,
            load_amazon_pairs,
            "DisenCDR two-domain Amazon pairs with the release's fixed leave-one-out test item.",
        ),
        LoaderSpec(
            "interactions",
            InteractionsConfig,
            load_interactions,
            "One CSV/TSV/Parquet file with user, item, domain[, timestamp] columns.",
        ),
        LoaderSpec(
            "synthetic",
            SyntheticConfig,
            load_synthetic,
            "Seeded synthetic cross-domain data with a planted shared preference signal.",
        ),
    )
}


def get_loader(name: str) -> LoaderSpec:
    """The loader registered as ``name``; KeyError suggests close names for typos."""
    try:
        return LOADERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(LOADERS), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(LOADERS)
        raise UnknownLoader(f"unknown loader {name!r}{hint} (known: {known})") from None


def parse_loader_config(raw: Mapping[str, Any] | LoaderConfig) -> LoaderConfig:
    """Validate a raw mapping (with a ``loader`` key) against that loader's config model."""
    if isinstance(raw, LoaderConfig):
        return raw
    if "loader" not in raw:
        raise KeyError(f"dataset config needs a 'loader' key (one of {', '.join(LOADERS)})")
    return get_loader(str(raw["loader"])).config_model.model_validate(dict(raw))


def load_dataset(raw: Mapping[str, Any] | LoaderConfig, base_dir: Path) -> Dataset:
    """Parse the config and load the dataset; relative paths resolve against ``base_dir``."""
    config = parse_loader_config(raw)
    return get_loader(config.loader).load(config, Path(base_dir))
