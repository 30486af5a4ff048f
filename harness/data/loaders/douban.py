"""Loader "douban": the GA-DTCDR / DTCDR Douban release (books, movies, music TSV files).

Each ``<domain>.tsv`` holds ``user_id<TAB>item_id<TAB>rating`` without a header; user ids are
shared across domains. Every rating counts as one implicit interaction (the paper sets r = 1),
optionally only ratings >= ``min_rating``. There are no timestamps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from harness.data.dataset import Dataset
from harness.data.loaders._common import (
    KeepUsers,
    LoaderConfig,
    build_dataset,
    check_files,
    file_record,
    resolve_path,
)

__all__ = ["DOMAIN_FILES", "DoubanConfig", "load_douban"]

# Canonical domain name -> accepted file names, preferred first.
DOMAIN_FILES: dict[str, tuple[str, ...]] = {
    "books": ("books.tsv", "book.tsv"),
    "movies": ("movies.tsv", "movie.tsv"),
    "music": ("music.tsv",),
}

HINT = (
    "Douban ratings come from the GA-DTCDR release (github.com/fengzhu1/GA-DTCDR; the full "
    "three-domain raw data is linked from its README on ResearchGate: "
    "researchgate.net/publication/350793434, see shared/data/douban/UPSTREAM-README.md); "
    "expected a TSV 'user_id<TAB>item_id<TAB>rating' without header named {names}"
)


class DoubanConfig(LoaderConfig):
    """``path``: directory with the domain TSVs (relative paths resolve against the base dir)."""

    loader: Literal["douban"] = "douban"
    path: str
    keep_users: KeepUsers = "any"
    min_rating: int | None = None

    def domain_files(self, base_dir: Path) -> dict[str, Path]:
        """Domain -> file to read: the chosen domains, or (default) every domain file found.

        A chosen domain without a file maps to its canonical name so the error names it.
        """
        root = resolve_path(self.path, base_dir)
        chosen = self.domains if self.domains is not None else list(DOMAIN_FILES)
        unknown = [d for d in chosen if d not in DOMAIN_FILES]
        if unknown:
            raise ValueError(f"unknown Douban domains {unknown}; choose from {list(DOMAIN_FILES)}")
        found: dict[str, Path] = {}
        for domain in chosen:
            existing = [root / n for n in DOMAIN_FILES[domain] if (root / n).is_file()]
            if existing:
                found[domain] = existing[0]
            elif self.domains is not None:
                found[domain] = root / DOMAIN_FILES[domain][0]
        return found

    def required_files(self, base_dir: Path) -> list[tuple[Path, str]]:
        files = self.domain_files(base_dir)
        if not files:  # default domains and nothing found: point at the first expected file
            root = resolve_path(self.path, base_dir)
            names = ", ".join(n for names in DOMAIN_FILES.values() for n in names)
            return [(root / "books.tsv", HINT.format(names=f"one of {names}"))]
        return [
            (path, HINT.format(names=" or ".join(DOMAIN_FILES[domain])))
            for domain, path in files.items()
        ]


def _read_ratings(path: Path) -> pl.LazyFrame:
    """Read the first three columns as strings; skip a header line if one is present."""
    lazy = pl.scan_csv(path, separator="\t", has_header=False, infer_schema=False, quote_char=None)
    lazy = lazy.select(pl.nth(0, 1, 2))
    lazy = lazy.rename(
        dict(zip(lazy.collect_schema().names(), ["user", "item", "rating"], strict=True))
    )
    rating = pl.col("rating").str.strip_chars().cast(pl.Float64, strict=False)
    first_is_header = (pl.int_range(pl.len()) == 0) & rating.is_null()
    return lazy.filter(~first_is_header).with_columns(
        pl.col("user").str.strip_chars(),
        pl.col("item").str.strip_chars(),
        pl.col("rating").str.strip_chars().cast(pl.Float64),
    )


def load_douban(config: DoubanConfig, base_dir: Path) -> Dataset:
    """Load the chosen Douban domains as implicit interactions over one user index."""
    check_files(config.required_files(base_dir))
    files = config.domain_files(base_dir)
    root = resolve_path(config.path, base_dir)
    frames = []
    for domain, path in files.items():
        lazy = _read_ratings(path)
        if config.min_rating is not None:
            lazy = lazy.filter(pl.col("rating") >= config.min_rating)
        frames.append(lazy.select("user", "item", pl.lit(domain).alias("domain")))
    source = {
        "loader": "douban",
        "files": [file_record(path, root) for path in files.values()],
        "domains": list(files),
        "keep_users": config.keep_users,
        "min_rating": config.min_rating,
        "implicit": True,
    }
    return build_dataset(
        pl.concat(frames),
        name="douban-" + "-".join(files),
        source=source,
        domains=list(files),
        keep_users=config.keep_users,
    )
