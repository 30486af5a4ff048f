"""Result bundles: one self-describing, deterministic Parquet file per finished cell.

A bundle is ``<cell_id>.parquet``. Its one table holds the cell's rows in long form, told apart
by ``part``: ``metric`` (per-user rows of both rankings), ``curve`` (training curves) and
``value`` (per-user values such as UCLR temperatures); columns a part does not use are null.
The file's key-value metadata (``cdr_harness_bundle``) holds, as JSON, the cell's identity
(everything its id hashes), the cell row (status, timings, epochs, device, notes), the run's
provenance (git SHA and dirty flag, package versions, machine) and a digest of the rows.

Bundles never hold interactions: only metrics over the fixed candidate lists, keyed by dense
user index; the user ids come from the data the importer prepares itself.

The digest is an integrity check (a truncated or edited file is refused), not a signature:
``harness verify`` retrains a cell to check its numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import HarnessError

__all__ = [
    "BUNDLE_FORMAT",
    "Bundle",
    "BundleError",
    "bundle_table",
    "conform",
    "read_bundle",
    "read_bundle_meta",
    "rows_digest",
    "write_bundle",
]

BUNDLE_FORMAT = 1
META_KEY = b"cdr_harness_bundle"

# The long table: column -> polars dtype, in file order.
COLUMNS: dict[str, pl.DataType] = {
    "part": pl.String(),  # metric | curve | value
    "ranking": pl.String(),  # metric: sampled | full
    "stage": pl.String(),  # curve / value
    "domain": pl.String(),
    "name": pl.String(),  # curve / value: what the value is
    "user_idx": pl.Int32(),
    "k": pl.Int32(),
    "epoch": pl.Int32(),
    "hr": pl.Float64(),
    "ndcg": pl.Float64(),
    "mrr": pl.Float64(),
    "rank": pl.Float64(),
    "ties": pl.Int32(),
    "n_train_domain": pl.Int32(),
    "n_train_total": pl.Int32(),
    "value": pl.Float64(),
}
# Columns a dictionary encodes badly: sorted user indices are nearly all +1 steps (delta
# packing), and expected ranks and per-user values are distinct floats whose bytes compress
# better split by position. On the 168 bundles published before the change: 37.2 -> 23.3 MiB,
# same rows and digests (benchmarks/bundle_size.py).
_PLAIN_ENCODED = {
    "user_idx": "DELTA_BINARY_PACKED",
    "rank": "BYTE_STREAM_SPLIT",
    "value": "BYTE_STREAM_SPLIT",
}
SORT = ["part", "ranking", "stage", "domain", "name", "user_idx", "k", "epoch"]
METRIC_COLUMNS = [
    "ranking",
    "domain",
    "user_idx",
    "k",
    "hr",
    "ndcg",
    "mrr",
    "rank",
    "ties",
    "n_train_domain",
    "n_train_total",
]
CURVE_COLUMNS = ["stage", "domain", "epoch", "name", "value"]
VALUE_COLUMNS = ["stage", "domain", "name", "user_idx", "value"]


class BundleError(HarnessError):
    """A bundle that cannot be read or does not check out; the message names the file."""


@dataclass(frozen=True)
class Bundle:
    """A bundle's content: ``meta`` (identity, cell, run, digest) and the three row sets."""

    path: Path
    meta: dict[str, Any]
    metrics: pl.DataFrame
    curves: pl.DataFrame
    values: pl.DataFrame

    @property
    def cell_id(self) -> str:
        return self.meta["cell"]["cell_id"]

    @property
    def identity(self) -> dict[str, Any]:
        return self.meta["identity"]


def bundle_table(metrics: pl.DataFrame, curves: pl.DataFrame, values: pl.DataFrame) -> pl.DataFrame:
    """The long, sorted table of a bundle from the store's three row sets."""
    parts = [
        metrics.select(METRIC_COLUMNS).with_columns(part=pl.lit("metric")),
        curves.select(CURVE_COLUMNS).with_columns(part=pl.lit("curve")),
        values.select(VALUE_COLUMNS).with_columns(part=pl.lit("value")),
    ]
    frame = pl.concat(
        [conform(p) for p in parts if len(p)] or [conform(pl.DataFrame())], how="vertical"
    )
    return frame.sort(SORT, nulls_last=False)


def conform(frame: pl.DataFrame, columns: dict[str, pl.DataType] = COLUMNS) -> pl.DataFrame:
    """``frame`` with exactly ``columns``, in order and type; absent ones are null."""
    return frame.select(
        [
            (pl.col(c) if c in frame.columns else pl.lit(None)).cast(dtype).alias(c)
            for c, dtype in columns.items()
        ]
    )


def rows_digest(table: pl.DataFrame) -> str:
    """sha256 over the table's values column by column, independent of the Parquet encoder
    and library versions (numbers as fixed-width little-endian bytes, strings joined)."""
    digest = hashlib.sha256()
    digest.update(str(table.height).encode())
    for column, dtype in COLUMNS.items():
        series = table[column].cast(dtype)
        digest.update(column.encode() + b"\x00")
        digest.update(series.is_null().to_numpy().tobytes())
        if dtype == pl.String():
            digest.update("\x1f".join(series.fill_null("").to_list()).encode())
        else:
            width = np.float64 if dtype == pl.Float64() else np.int64
            filled = series.fill_null(0).to_numpy().astype(width)
            digest.update(
                np.ascontiguousarray(filled).astype(filled.dtype.newbyteorder("<")).tobytes()
            )
    return digest.hexdigest()


def write_bundle(path: Path, meta: dict[str, Any], table: pl.DataFrame) -> None:
    """Write ``table`` with ``meta`` (the digest is added here) to ``path``, atomically.

    Deterministic: the same content gives the same bytes (fixed row order, fixed encoder
    settings, no timestamps of the export itself)."""
    meta = {**meta, "format": BUNDLE_FORMAT, "digest": rows_digest(table)}
    arrow = table.to_arrow()
    arrow = arrow.replace_schema_metadata(
        {META_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()}
    )
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(
        arrow,
        tmp,
        compression="zstd",
        compression_level=9,
        use_dictionary=[c for c in COLUMNS if c not in _PLAIN_ENCODED],
        column_encoding=_PLAIN_ENCODED,
        write_statistics=False,
    )
    tmp.replace(path)


def read_bundle_meta(path: Path) -> dict[str, Any] | None:
    """A bundle's metadata alone (the Parquet footer, no rows and no digest check): enough
    for ``harness plan`` to estimate from published cells' timings; None if unreadable."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
        return json.loads(raw) if raw is not None else None
    except (OSError, pa.ArrowException, json.JSONDecodeError):
        return None


def read_bundle(path: Path) -> Bundle:
    """Read and integrity-check one bundle; :class:`BundleError` names the file and reason."""
    path = Path(path)
    try:
        arrow = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise BundleError(f"bundle {path}: not a readable Parquet file ({exc})") from None
    raw = (arrow.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise BundleError(f"bundle {path}: no {META_KEY.decode()} metadata (not a bundle)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle {path}: unreadable metadata ({exc})") from None
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"bundle {path}: format {meta.get('format')!r}, this version reads {BUNDLE_FORMAT}"
        )
    missing = [c for c in COLUMNS if c not in arrow.column_names]
    if missing:
        raise BundleError(f"bundle {path}: columns {missing} are missing")
    table = conform(pl.from_arrow(arrow.replace_schema_metadata(None)))
    if rows_digest(table) != meta.get("digest"):
        raise BundleError(
            f"bundle {path}: its rows do not match the digest it carries (edited or damaged)"
        )
    part = pl.col("part")
    return Bundle(
        path=path,
        meta=meta,
        metrics=table.filter(part == "metric").select(METRIC_COLUMNS),
        curves=table.filter(part == "curve").select(CURVE_COLUMNS),
        values=table.filter(part == "value").select(VALUE_COLUMNS),
    )
