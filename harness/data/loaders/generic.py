"""Loader "interactions": one long CSV/TSV/Parquet file with user, item, domain[, timestamp].

The escape hatch for any source not covered by a dedicated loader: convert it once to this
shape. Ids are read as strings (CSV/TSV are read without type inference so ids like "007"
keep their leading zeros); a timestamp column, when present, must be integer. CSV/TSV files
need a header line naming the columns; every row must have as many fields as the header and
non-empty user, item and domain (surrounding double quotes are stripped; a quoted separator
inside a field is not supported). Malformed rows are errors naming file and line, or skipped
and counted with ``on_bad_rows = "skip"``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field, field_validator

from harness.data.dataset import Dataset
from harness.data.loaders._common import (
    BadRowsOption,
    Column,
    DataError,
    KeepUsers,
    LoaderConfig,
    ReadResult,
    bad_rows_record,
    build_dataset,
    check_files,
    file_record,
    header_fields,
    read_delimited,
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


class InteractionsConfig(BadRowsOption, LoaderConfig):
    """Any source, converted once to one long file: a row per interaction with user, item,
    domain and, optionally, an integer timestamp (then the split takes the latest as test).
    CSV and TSV need a header line; ``columns`` maps our names to the file's where they
    differ."""

    loader: Literal["interactions"] = "interactions"
    path: str = Field(description="the interactions file (CSV, TSV or Parquet)")
    format: Literal["auto", "csv", "tsv", "parquet"] = Field(
        "auto", description="file format; 'auto' decides by the file suffix"
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="our column name (user, item, domain, timestamp) -> the file's, for "
        "names that differ",
    )
    keep_users: KeepUsers = Field(
        "any",
        description="'any': every user with an interaction in a chosen domain; 'all_domains': "
        "only users with one (training or held out) in every chosen domain",
    )

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


def _read_text(path: Path, fmt: str, mapping: dict[str, str], on_bad_rows: str) -> ReadResult:
    """Read a CSV/TSV strictly: a header line, then rows with as many fields as the header."""
    separator = "\t" if fmt == "tsv" else ","
    _, names = header_fields(path, separator)
    kinds = {mapping[c]: "id" for c in ("user", "item", "domain")}
    kinds[mapping["timestamp"]] = "int"
    columns = [Column(name, kinds.get(name, "any")) for name in names]  # type: ignore[arg-type]
    return read_delimited(
        path,
        columns,
        separator=separator,
        on_bad_rows=on_bad_rows,  # type: ignore[arg-type]
        header="always",
        strip_quotes=True,
    )


def _check_parquet(path: Path, frame: pl.DataFrame) -> None:
    """Parquet has no lines: a missing id or timestamp is reported with its row number."""
    for column in frame.columns:
        nulls = frame[column].is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0]) + 1
            raise DataError(path, None, f"row {row}: missing value in column {column!r}")


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
    fmt = config.file_format()
    mapping = {name: config.columns.get(name, name) for name in OUR_COLUMNS}
    read = None
    if fmt == "parquet":
        lazy = pl.scan_parquet(path)
    else:
        read = _read_text(path, fmt, mapping, config.on_bad_rows)
        lazy = read.frame.drop("_line").lazy()
    available = lazy.collect_schema().names()
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
    if fmt == "parquet":
        try:
            frame = lazy.collect()
        except pl.exceptions.PolarsError as exc:
            raise DataError(path, None, f"unreadable values: {str(exc).splitlines()[0]}") from None
        _check_parquet(path, frame)
        lazy = frame.lazy()
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
    if config.on_bad_rows != "error":
        source["on_bad_rows"] = config.on_bad_rows
        source["bad_rows"] = bad_rows_record({path.name: read} if read is not None else {})
    dataset = build_dataset(
        lazy,
        name=f"interactions-{path.stem}",
        source=source,
        domains=domains,
        keep_users=config.keep_users,
    )
    rows_read = read.rows_read if read is not None else None
    rejected = {f"malformed: {r}": n for r, n in (read.rejected if read else {}).items()}
    funnel = {"(file)": {"rows_read": rows_read, "rows_rejected": rejected}}
    return dataclasses.replace(dataset, funnel=funnel)
