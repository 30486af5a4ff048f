"""Helpers shared by every loader: config base, missing-file errors and the Dataset builder.

Loaders only parse their source format into one long polars frame; :func:`build_dataset` does
the rest (dedupe, user filtering, sorted vocabularies, dense indices) in one vectorised place so
every source obeys the same invariants and yields the same fingerprint for the same content.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from harness.data.dataset import Dataset, DomainData, HeldOut

__all__ = [
    "DataFileMissing",
    "KeepUsers",
    "LoaderConfig",
    "build_dataset",
    "check_files",
    "file_record",
    "filter_users",
    "resolve_path",
]

KeepUsers = Literal["any", "all_domains"]


class DataFileMissing(FileNotFoundError):
    """A data file a loader needs is absent; the message says where to obtain it."""

    def __init__(self, path: Path | str, hint: str) -> None:
        self.path = Path(path).absolute()
        self.hint = hint
        super().__init__(f"missing data file {self.path}: {hint}")
        self.filename = str(self.path)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self):  # keep (path, hint) when pickled across processes
        return (type(self), (self.path, self.hint))


class LoaderConfig(BaseModel):
    """Base of every loader config; unknown keys are errors so typos in specs surface early."""

    model_config = ConfigDict(extra="forbid")

    loader: str
    domains: list[str] | None = None  # None: every domain the source has

    def required_files(self, base_dir: Path) -> list[tuple[Path, str]]:
        """Files (with a hint on where to get each) that must exist; checked without loading."""
        return []


def resolve_path(path: str | Path, base_dir: Path) -> Path:
    """Resolve a config path: absolute stays, relative is taken against ``base_dir``."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(base_dir) / candidate


def check_files(required: Iterable[tuple[Path, str]]) -> None:
    """Raise :class:`DataFileMissing` for the first required file that does not exist."""
    for path, hint in required:
        if not Path(path).is_file():
            raise DataFileMissing(path, hint)


def file_record(path: Path, root: Path | None = None) -> dict[str, object]:
    """Provenance entry for a file: name relative to ``root`` (else basename) and size.

    Absolute paths are machine specific, so they must never enter ``Dataset.source``.
    """
    path = Path(path)
    name = path.relative_to(root).as_posix() if root is not None else path.name
    return {"name": name, "bytes": path.stat().st_size}


def filter_users(frame: pl.DataFrame, keep_users: KeepUsers, n_domains: int) -> pl.DataFrame:
    """Apply the ``keep_users`` rule to a long (user, domain, ...) frame.

    "any" keeps the union of users; "all_domains" keeps users with at least one row (training
    or held-out) in each of the ``n_domains`` chosen domains, as the paper's Amazon set does.
    """
    if keep_users == "any":
        return frame
    if keep_users != "all_domains":
        raise ValueError(f"keep_users must be 'any' or 'all_domains', got {keep_users!r}")
    counts = frame.group_by("user").agg(pl.col("domain").n_unique().alias("_n_domains"))
    keep = counts.filter(pl.col("_n_domains") == n_domains).select("user")
    return frame.join(keep, on="user", how="semi")


def build_dataset(
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    name: str,
    source: dict,
    domains: Sequence[str],
    keep_users: KeepUsers = "any",
) -> Dataset:
    """Build a validated :class:`Dataset` from a long interaction frame.

    ``frame`` has columns ``user``, ``item``, ``domain`` (cast to str), optional ``timestamp``
    (int64) and optional ``held_out`` (bool: the row is a pre-split test item, at most one per
    user and domain). Steps: dedupe (user, item) per domain keeping the latest timestamp (a
    held-out duplicate of a training pair wins, the caller reports such overlaps), apply
    ``keep_users``, then index users over all domains and items per domain with sorted
    vocabularies. Rows are ordered by (user, timestamp, item) so the result, and therefore the
    fingerprint, do not depend on file row order. ``domains`` fixes the domain order; a listed
    domain without rows becomes an empty domain.
    """
    if len(set(domains)) != len(domains):
        raise ValueError(f"domains must be distinct, got {list(domains)}")
    lazy = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    names = lazy.collect_schema().names()
    missing = [c for c in ("user", "item", "domain") if c not in names]
    if missing:
        raise ValueError(f"interaction frame lacks columns {missing}; has {names}")
    has_time = "timestamp" in names
    has_held = "held_out" in names
    columns = [
        pl.col("user").cast(pl.String),
        pl.col("item").cast(pl.String),
        pl.col("domain").cast(pl.String),
    ]
    if has_time:
        columns.append(pl.col("timestamp").cast(pl.Int64))
    if has_held:
        columns.append(pl.col("held_out").cast(pl.Boolean))
    lazy = lazy.select(columns).filter(pl.col("domain").is_in(list(domains)))
    if has_time or has_held:
        aggs = []
        if has_time:
            aggs.append(pl.col("timestamp").max())
        if has_held:
            aggs.append(pl.col("held_out").any())
        lazy = lazy.group_by(["domain", "user", "item"]).agg(aggs)
    else:
        lazy = lazy.unique(["domain", "user", "item"])
    table = lazy.collect(engine="streaming")
    for column in ("user", "item") + (("timestamp",) if has_time else ()):
        if table[column].null_count():
            raise ValueError(f"interaction frame has missing values in column {column!r}")

    table = filter_users(table, keep_users, len(domains))
    user_ids = np.asarray(table["user"].unique().sort().to_list(), dtype=object)
    table = table.with_columns(
        (pl.col("user").rank("dense") - 1).cast(pl.Int64).alias("_u"),
        (pl.col("item").rank("dense").over("domain") - 1).cast(pl.Int64).alias("_i"),
    )
    sort_cols = ["_u", "timestamp", "_i"] if has_time else ["_u", "_i"]
    table = table.sort(sort_cols)
    parts = {key[0]: part for key, part in table.partition_by("domain", as_dict=True).items()}

    out: dict[str, DomainData] = {}
    for domain in domains:
        part = parts.get(domain)
        if part is None:
            part = table.clear()
        item_ids = np.asarray(
            part.select(pl.col("item").unique().sort())["item"].to_list(), dtype=object
        )
        train, test = (part, None)
        if has_held:
            train = part.filter(~pl.col("held_out"))
            test = part.filter(pl.col("held_out"))
        fixed_test = None
        if test is not None and test.height:
            test_users = test["_u"].to_numpy().astype(np.int64)
            if len(np.unique(test_users)) != len(test_users):
                raise ValueError(f"domain {domain!r}: more than one held-out item per user")
            fixed_test = HeldOut(users=test_users, items=test["_i"].to_numpy().astype(np.int64))
        out[domain] = DomainData(
            name=domain,
            item_ids=item_ids,
            users=train["_u"].to_numpy().astype(np.int64),
            items=train["_i"].to_numpy().astype(np.int64),
            timestamps=train["timestamp"].to_numpy().astype(np.int64) if has_time else None,
            fixed_test=fixed_test,
        )
    dataset = Dataset(name=name, user_ids=user_ids, domains=out, source=source)
    dataset.validate()
    return dataset
