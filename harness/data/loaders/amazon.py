"""Loader "amazon": McAuley's 2014 Amazon "ratings only" dumps, one CSV per category.

Each file holds ``user,item,rating,timestamp`` rows (no header; a header line is tolerated).
Preprocessing, in this order (the order changes the result, so it is part of the contract):

1. read with polars (vectorised, streaming); every row must be ``user,item,rating,timestamp``
   with a numeric rating and an integer timestamp (3- or 5-field lines, ``five`` as a rating
   or a missing timestamp are errors naming file and line, or skipped and counted with
   ``on_bad_rows = "skip"``); if ``min_rating`` is set, keep only ratings >= ``min_rating``;
2. per domain, drop about ``item_drop_fraction`` of the items (the paper "randomly deleted 70%
   of the items"): an item goes when a seeded hash of (``item_drop_seed``, domain, item id)
   mapped to [0, 1) is below the fraction (:func:`item_uniforms`), so each item's fate is
   deterministic and independent of every other item and domain (one extra item line in a
   dump changes nothing else); all rows of a dropped item go;
3. dedupe (user, item) pairs per domain, keeping the latest timestamp;
4. keep users per ``keep_users`` (default: users with an interaction in every chosen domain).

Items and users that lose all rows in step 4 leave the vocabularies; there is no iterated
k-core. Every rating is an implicit interaction.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field, field_validator

from harness.data.dataset import Dataset
from harness.data.loaders._common import (
    BadRowsOption,
    Column,
    KeepUsers,
    LoaderConfig,
    ReadResult,
    bad_rows_record,
    build_dataset,
    check_files,
    file_record,
    read_delimited,
    resolve_path,
)

__all__ = ["DEFAULT_FILES", "AmazonConfig", "drop_items", "item_uniforms", "load_amazon"]

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

COLUMNS = (Column("user"), Column("item"), Column("rating", "float"), Column("timestamp", "int"))
_MASK = (1 << 64) - 1


class AmazonConfig(BadRowsOption, LoaderConfig):
    """McAuley's Amazon 2014 "ratings only" CSVs (``user,item,rating,timestamp``), one per
    category, in the folder ``path``. Preprocessing, in this order: ratings >= ``min_rating``,
    the seeded item deletion, one interaction per (user, item) keeping the latest timestamp,
    then the ``keep_users`` filter."""

    loader: Literal["amazon"] = "amazon"
    path: str = Field(description="folder holding the `files`")
    files: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FILES),
        description="domain -> file name in `path`: the 'ratings only' CSV of that category",
    )
    keep_users: KeepUsers = Field(
        "all_domains",
        description="'all_domains' (the paper): only users with an interaction in every chosen "
        "domain; 'any': every user",
    )
    item_drop_fraction: float = Field(
        0.7,
        ge=0.0,
        lt=1.0,
        description="fraction of each domain's items deleted before the user filter (the "
        "paper: 70%); an item's fate is a seeded hash of its id",
    )
    item_drop_seed: int = Field(0, description="seed of the item deletion")
    min_rating: float | None = Field(
        None, description="keep only ratings >= this (default: every rating is an interaction)"
    )
    implicit: Literal[True] = Field(
        True, description="ratings become implicit interactions (the only mode)"
    )

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


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def item_uniforms(items: np.ndarray | pl.Series, seed: int, domain: str) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per item id, from (seed, domain, id) only.

    FNV-1a (64 bit) over the id's UTF-8 bytes, mixed with the seed and the domain's CRC32 by
    splitmix64. Vectorised over the ids' Arrow buffers (one numpy step per byte position, over
    the ids that long), so there is no per-id Python work. The value of one item never
    depends on which other items exist, so adding or removing items changes nothing else.
    """
    key = np.uint64(((seed & _MASK) * 0x9E3779B97F4A7C15 + zlib.crc32(domain.encode())) & _MASK)
    salt = _splitmix64(np.asarray([key], dtype=np.uint64))[0]
    series = items if isinstance(items, pl.Series) else pl.Series(list(items), dtype=pl.String)
    if len(series) == 0:
        return np.empty(0, dtype=np.float64)
    array = pa.array(series.cast(pl.String).to_arrow()).cast(pa.large_string())
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[
        array.offset : array.offset + len(array) + 1
    ]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    )
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")  # longest first: byte j concerns a prefix
    starts = offsets[:-1][order]
    neg_len = -lengths[order]
    h = np.full(len(order), 0xCBF29CE484222325, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max())):
            k = int(np.searchsorted(neg_len, -j, side="left"))  # ids longer than j bytes
            h[:k] = (h[:k] ^ data[starts[:k] + j].astype(np.uint64)) * np.uint64(0x100000001B3)
        mixed = _splitmix64(h ^ salt)
    out = np.empty(len(order), dtype=np.float64)
    out[order] = (mixed >> np.uint64(11)) * (2.0**-53)
    return out


def drop_items(items: np.ndarray, fraction: float, seed: int, domain: str) -> np.ndarray:
    """Return the kept subset of ``items`` (sorted): an item is dropped when its seeded hash
    value (:func:`item_uniforms`) is below ``fraction``, so about ``fraction`` of the items go
    and each item's fate depends only on (seed, domain, item id)."""
    items = np.asarray(items, dtype=object)
    if fraction <= 0.0 or len(items) == 0:
        return np.sort(items)
    keep = item_uniforms(items, seed, domain) >= fraction
    return np.sort(items[keep])


def load_amazon(config: AmazonConfig, base_dir: Path) -> Dataset:
    """Load the chosen Amazon categories; see the module docstring for the preprocessing."""
    check_files(config.required_files(base_dir))
    root = resolve_path(config.path, base_dir)
    domains = config.chosen_domains()
    frames = []
    kept_items: dict[str, dict[str, int]] = {}
    funnel: dict[str, dict] = {}
    results: dict[str, ReadResult] = {}
    for domain in domains:
        path = root / config.files[domain]
        read = read_delimited(
            path, COLUMNS, separator=",", on_bad_rows=config.on_bad_rows, strip_quotes=True
        )
        results[file_record(path, root)["name"]] = read
        frame = read.frame
        rejected = {f"malformed: {rule}": n for rule, n in read.rejected.items()}
        if config.min_rating is not None:
            kept_rows = frame.filter(pl.col("rating") >= config.min_rating)
            rejected[f"rating < min_rating {config.min_rating}"] = frame.height - kept_rows.height
            frame = kept_rows
        vocab = frame.select(pl.col("item").unique().sort())["item"]
        fraction = config.item_drop_fraction
        keep = vocab
        if fraction > 0.0 and len(vocab):  # same rule as drop_items, on the polars column
            values = item_uniforms(vocab, config.item_drop_seed, domain)
            keep = vocab.filter(pl.Series(values >= fraction))
        kept_items[domain] = {"before": len(vocab), "kept": len(keep)}
        funnel[domain] = {
            "rows_read": read.rows_read,
            "rows_rejected": rejected,
            "items_before_drop": len(vocab),
            "items_after_drop": len(keep),
        }
        keep_frame = keep.to_frame("item")
        frames.append(
            frame.join(keep_frame, on="item", how="semi").select(
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
        "item_drop": "per-item hash of (seed, domain, item id) < fraction",
        "items_after_drop": kept_items,
        "rows_read": {d: funnel[d]["rows_read"] for d in domains},
    }
    if config.on_bad_rows != "error":
        source["on_bad_rows"] = config.on_bad_rows
        source["bad_rows"] = bad_rows_record(results)
    dataset = build_dataset(
        pl.concat(frames),
        name="amazon-" + "-".join(domains),
        source=source,
        domains=domains,
        keep_users=config.keep_users,
    )
    return dataclasses.replace(dataset, funnel=funnel)
