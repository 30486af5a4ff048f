"""Loader "douban": the GA-DTCDR / DTCDR Douban release (books, movies, music TSV files).

Each ``<domain>.tsv`` holds ``user_id<TAB>item_id<TAB>rating`` (a header line is tolerated);
user ids are shared across domains. Every row must have exactly these three fields and a
numeric rating; other rows are errors naming file and line, or skipped and counted with
``on_bad_rows = "skip"`` (see :func:`harness.data.loaders._common.read_delimited`). Every
rating counts as one implicit interaction (the paper sets r = 1), optionally only ratings
>= ``min_rating``. Duplicate rows are one interaction. There are no timestamps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field

from harness.data.dataset import Dataset
from harness.data.loaders._common import (
    BadRowsOption,
    Column,
    KeepUsers,
    LoaderConfig,
    bad_rows_record,
    build_dataset,
    check_files,
    file_record,
    read_delimited,
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
    "Douban ratings come from the GA-DTCDR release (github.com/fengzhu1/GA-DTCDR, its Data "
    "folder; `harness data fetch douban` and `harness data fetch douban-movies` place them "
    "in the data home); expected a TSV 'user_id<TAB>item_id<TAB>rating' without header "
    "named {names}"
)


class DoubanConfig(BadRowsOption, LoaderConfig):
    """Douban ratings, one TSV per domain (``user_id<TAB>item_id<TAB>rating``, a header line
    tolerated) in the folder ``path``; every rating is one implicit interaction and user ids
    are shared across domains. There are no timestamps, so the split order is seeded."""

    loader: Literal["douban"] = "douban"
    path: str = Field(
        description="folder with one TSV per domain (books.tsv, movies.tsv, music.tsv; "
        "book.tsv and movie.tsv are accepted too)"
    )
    keep_users: KeepUsers = Field(
        "any",
        description="'any': every user with an interaction in a chosen domain; 'all_domains': "
        "only users with one (training or held out) in every chosen domain",
    )
    min_rating: int | None = Field(
        None, description="keep only ratings >= this (default: every rating is an interaction)"
    )

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


COLUMNS = (Column("user_id"), Column("item_id"), Column("rating", "float"))


def load_douban(config: DoubanConfig, base_dir: Path) -> Dataset:
    """Load the chosen Douban domains as implicit interactions over one user index."""
    check_files(config.required_files(base_dir))
    files = config.domain_files(base_dir)
    root = resolve_path(config.path, base_dir)
    frames = []
    funnel: dict[str, dict] = {}
    results = {}
    for domain, path in files.items():
        read = read_delimited(path, COLUMNS, separator="\t", on_bad_rows=config.on_bad_rows)
        results[file_record(path, root)["name"]] = read
        frame = read.frame
        rejected = {f"malformed: {rule}": n for rule, n in read.rejected.items()}
        if config.min_rating is not None:
            kept = frame.filter(pl.col("rating") >= config.min_rating)
            rejected[f"rating < min_rating {config.min_rating}"] = frame.height - kept.height
            frame = kept
        funnel[domain] = {"rows_read": read.rows_read, "rows_rejected": rejected}
        frames.append(
            frame.select(
                pl.col("user_id").alias("user"),
                pl.col("item_id").alias("item"),
                pl.lit(domain).alias("domain"),
            )
        )
    source = {
        "loader": "douban",
        "files": [file_record(path, root) for path in files.values()],
        "domains": list(files),
        "keep_users": config.keep_users,
        "min_rating": config.min_rating,
        "implicit": True,
    }
    if config.on_bad_rows != "error":  # default options keep the source (and fingerprint)
        source["on_bad_rows"] = config.on_bad_rows
        source["bad_rows"] = bad_rows_record(results)
    dataset = build_dataset(
        pl.concat(frames),
        name="douban-" + "-".join(files),
        source=source,
        domains=list(files),
        keep_users=config.keep_users,
    )
    return dataclasses.replace(dataset, funnel=funnel)
