"""Loader "interactions": one long CSV/TSV/Parquet file with user, item, domain[, timestamp].

The escape hatch for any source not covered by a dedicated loader: convert it once to this
shape. Ids are read as strings (CSV/TSV are read without type inference so ids like "007"
keep their leading zeros); a timestamp column, when present, must be integer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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

__all__ = ["InteractionsConfig", "load_interactions"]

OUR_COLUMNS = ("user", "item", "domain", "timestamp")
_SUFFIX_FORMAT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

HINT = (
    "the 'interactions' loader reads a file you prepare yourself: one row per interaction with "
    "columns user, item, domain and optionally timestamp (CSV, TSV or Parquet)"
)


class InteractionsConfig(LoaderConfig):
    """``columns`` maps our names (user, item, domain, timestamp) to the file's column names."""

    loader: Literal["interactions"] = "interactions"
    path: str
    format: Literal["auto", "csv", "tsv", "parquet"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    keep_users: KeepUsers = "any"

    @field_validator("columns")
    @classmethod
    def _known_names(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in columns if k not in OUR_COLUMNS]
        if unknown:
            raise ValueError(f"columns keys {unknown} are not among {list(OUR_COLUMNS)}")
        return columns

    def file_format(self) -> str:
        if self.format != "auto":
            return self.format
        suffix = Path(self.path).suffix.lower()
        if suffix not in _SUFFIX_FORMAT:
            raise ValueError(
                f"cannot infer the format of {self.path!r} from its suffix; set format to "
                "csv, tsv or parquet"
            )
        return _SUFFIX_FORMAT[suffix]

    def required_files(self, base_dir: Path) -> list[tuple[Path, str]]:
        return [(resolve_path(self.path, base_dir), HINT)]


def _scan(path: Path, fmt: str) -> pl.LazyFrame:
    if fmt == "parquet":
        return pl.scan_parquet(path)
    return pl.scan_csv(path, separator="\t" if fmt == "tsv" else ",", infer_schema=False)


def _as_int_timestamp(dtype: pl.DataType) -> pl.Expr:
    """Integer timestamps pass through; datetimes become epoch seconds; text is parsed."""
    ts = pl.col("timestamp")
    if dtype.is_temporal():
        return ts.cast(pl.Datetime("us")).dt.epoch("s").cast(pl.Int64)
    if dtype.is_numeric():
        return ts.cast(pl.Int64)
    return ts.cast(pl.String).str.strip_chars().cast(pl.Int64)


def load_interactions(config: InteractionsConfig, base_dir: Path) -> Dataset:
    """Load the long interaction file, renaming columns per ``columns``."""
    check_files(config.required_files(base_dir))
    path = resolve_path(config.path, base_dir)
    lazy = _scan(path, config.file_format())
    available = lazy.collect_schema().names()
    mapping = {name: config.columns.get(name, name) for name in OUR_COLUMNS}
    required = ("user", "item", "domain")
    if "timestamp" in config.columns:
        required += ("timestamp",)
    missing = [
        f"{ours} (file column {mapping[ours]!r})"
        for ours in required
        if mapping[ours] not in available
    ]
    if missing:
        raise ValueError(
            f"{path.name}: missing columns {', '.join(missing)}; available columns: {available}"
        )
    has_time = mapping["timestamp"] in available
    select = [pl.col(mapping[c]).alias(c) for c in required]
    if has_time and "timestamp" not in required:
        select.append(pl.col(mapping["timestamp"]).alias("timestamp"))
    lazy = lazy.select(select).with_columns(pl.col("domain").cast(pl.String))
    if has_time:
        lazy = lazy.with_columns(_as_int_timestamp(lazy.collect_schema()["timestamp"]))
    present = sorted(
        lazy.select(pl.col("domain").unique()).collect(engine="streaming")["domain"].to_list()
    )
    domains = present if config.domains is None else list(config.domains)
    absent = [d for d in domains if d not in present]
    if absent:
        raise ValueError(f"{path.name}: domains {absent} have no rows; file has {present}")
    source = {
        "loader": "interactions",
        "files": [file_record(path)],
        "format": config.file_format(),
        "columns": mapping if has_time else {k: mapping[k] for k in required},
        "domains": domains,
        "keep_users": config.keep_users,
    }
    return build_dataset(
        lazy,
        name=f"interactions-{path.stem}",
        source=source,
        domains=domains,
        keep_users=config.keep_users,
    )
