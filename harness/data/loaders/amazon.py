"""Loader "amazon": McAuley's 2014 Amazon "ratings only" dumps, one CSV per category.

Each file holds ``user,item,rating,timestamp`` rows (no header; a header line is tolerated).
Preprocessing, in this order (the order changes the result, so it is part of the contract):

1. read lazily with polars (``scan_csv``, streaming collect) and, if ``min_rating`` is set,
   keep only ratings >= ``min_rating``;
2. per domain, drop ``item_drop_fraction`` of the items (the paper "randomly deleted 70% of
   the items"): the sorted item vocabulary of that domain is permuted by a numpy Generator
   seeded with (``item_drop_seed``, CRC32 of the domain name), so the choice is deterministic
   and independent of which other domains are loaded; all rows of a dropped item go;
3. dedupe (user, item) pairs per domain, keeping the latest timestamp;
4. keep users per ``keep_users`` (default: users with an interaction in every chosen domain).

Items and users that lose all rows in step 4 leave the vocabularies; there is no iterated
k-core. Every rating is an implicit interaction.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from harness.data.dataset import Dataset
from harness.data.loaders._common import (
    KeepUsers,
    LoaderConfig,
    build_dataset,
    check_files,
    file_record,
    resolve_path,
)

__all__ = ["DEFAULT_FILES", "AmazonConfig", "drop_items", "load_amazon"]

DEFAULT_FILES: dict[str, str] = {
    "books": "ratings_Books.csv",
    "movies": "ratings_Movies_and_TV.csv",
    "electronics": "ratings_Electronics.csv",
}

HINT = (
    "download the 'ratings only' CSV for this category from McAuley's Amazon product data "
    "(2014), jmcauley.ucsd.edu/data/amazon/ (per-category 'ratings only' links), and save it "
    "unchanged as {name} (rows 'user,item,rating,timestamp', no header)"
)

_SCHEMA = {"user": pl.String, "item": pl.String, "rating": pl.Float64, "timestamp": pl.Int64}


class AmazonConfig(LoaderConfig):
    """``path``: directory holding the ``files`` (domain -> file name)."""

    loader: Literal["amazon"] = "amazon"
    path: str
    files: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_FILES))
    keep_users: KeepUsers = "all_domains"
    item_drop_fraction: float = Field(0.7, ge=0.0, lt=1.0)
    item_drop_seed: int = 0
    min_rating: float | None = None
    implicit: Literal[True] = True  # the Dataset model is implicit-only

    @field_validator("files")
    @classmethod
    def _non_empty(cls, files: dict[str, str]) -> dict[str, str]:
        if not files:
            raise ValueError("files must map at least one domain to a file name")
        return files

    def chosen_domains(self) -> list[str]:
        if self.domains is None:
            return list(self.files)
        unknown = [d for d in self.domains if d not in self.files]
        if unknown:
            raise ValueError(f"domains {unknown} have no entry in files {sorted(self.files)}")
        return list(self.domains)

    def required_files(self, base_dir: Path) -> list[tuple[Path, str]]:
        root = resolve_path(self.path, base_dir)
        return [
            (root / self.files[d], HINT.format(name=self.files[d])) for d in self.chosen_domains()
        ]


def _has_header(path: Path) -> bool:
    """A header line is present when the first row's timestamp field is not an integer."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        fields = handle.readline().strip().split(",")
    return len(fields) < 4 or not fields[3].strip().lstrip("-").isdigit()


def _scan(path: Path) -> pl.LazyFrame:
    return pl.scan_csv(
        path,
        has_header=False,
        skip_rows=1 if _has_header(path) else 0,
        schema=_SCHEMA,
        quote_char='"',
    )


def drop_items(items: np.ndarray, fraction: float, seed: int, domain: str) -> np.ndarray:
    """Return the kept subset of the sorted vocabulary ``items`` (sorted), dropping a seeded
    ``round(fraction * len(items))`` of them."""
    n_drop = round(fraction * len(items))
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode())])
    order = rng.permutation(len(items))
    return np.sort(items[order[n_drop:]])


def load_amazon(config: AmazonConfig, base_dir: Path) -> Dataset:
    """Load the chosen Amazon categories; see the module docstring for the preprocessing."""
    check_files(config.required_files(base_dir))
    root = resolve_path(config.path, base_dir)
    domains = config.chosen_domains()
    frames = []
    kept_items: dict[str, dict[str, int]] = {}
    for domain in domains:
        lazy = _scan(root / config.files[domain])
        if config.min_rating is not None:
            lazy = lazy.filter(pl.col("rating") >= config.min_rating)
        vocab = lazy.select(pl.col("item").unique()).collect(engine="streaming")["item"].sort()
        vocab_np = np.asarray(vocab.to_list(), dtype=object)
        keep = drop_items(vocab_np, config.item_drop_fraction, config.item_drop_seed, domain)
        kept_items[domain] = {"before": len(vocab_np), "kept": len(keep)}
        keep_frame = pl.DataFrame({"item": pl.Series(keep.tolist(), dtype=pl.String)})
        frames.append(
            lazy.join(keep_frame.lazy(), on="item", how="semi").select(
                "user", "item", pl.lit(domain).alias("domain"), "timestamp"
            )
        )
    source = {
        "loader": "amazon",
        "files": [file_record(root / config.files[d], root) for d in domains],
        "domains": domains,
        "keep_users": config.keep_users,
        "item_drop_fraction": config.item_drop_fraction,
        "item_drop_seed": config.item_drop_seed,
        "min_rating": config.min_rating,
        "implicit": True,
        "order": ["read+min_rating", "drop_items", "dedupe", "keep_users"],
        "items_after_drop": kept_items,
    }
    return build_dataset(
        pl.concat(frames),
        name="amazon-" + "-".join(domains),
        source=source,
        domains=domains,
        keep_users=config.keep_users,
    )
