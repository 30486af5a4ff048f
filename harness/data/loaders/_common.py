"""Helpers shared by every loader: config base, missing-file errors and the Dataset builder.

Loaders only parse their source format into one long polars frame; :func:`build_dataset` does
the rest (dedupe, user filtering, sorted vocabularies, dense indices) in one vectorised place so
every source obeys the same invariants and yields the same fingerprint for the same content.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from harness.data.dataset import Dataset, DomainData, HeldOut
from harness.errors import HarnessError

__all__ = [
    "BadRowsOption",
    "Column",
    "DataError",
    "DataFileMissing",
    "KeepUsers",
    "LoaderConfig",
    "ReadResult",
    "bad_rows_record",
    "build_dataset",
    "check_files",
    "check_text_file",
    "file_record",
    "filter_users",
    "first_duplicate",
    "header_fields",
    "read_delimited",
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
    domains: list[str] | None = Field(
        None,
        description="domains to load, by the loader's domain names (default: every domain the "
        "source has); methods are evaluated on these",
    )

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


# --- validated reading of delimited text files ---------------------------------------------

OnBadRows = Literal["error", "skip"]


class DataError(HarnessError):
    """A data file is malformed: the message names the file, the line and the problem."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"bad data in {where}: {problem}")

    def __reduce__(self):  # keep the fields when pickled across processes
        return (type(self), (self.path, self.line, self.problem))


class BadRowsOption(BaseModel):
    """``on_bad_rows``: "error" (default) stops at the first malformed row with its file and
    line; "skip" drops malformed rows and records how many (per file and rule) in the dataset's
    provenance (``source["bad_rows"]``) and in ``harness data stats``."""

    on_bad_rows: OnBadRows = Field(
        "error",
        description="a malformed row: 'error' stops with its file and line (exit 3); 'skip' "
        "drops it and counts it per file and rule in the dataset's provenance, so in its "
        "fingerprint, `harness data stats` and the report's Table 1",
    )


@dataclass(frozen=True)
class Column:
    """One field of a delimited row: ``kind`` "id" (non-empty text), "float" (finite number),
    "int" (integer) or "any" (kept as text, may be empty)."""

    name: str
    kind: Literal["id", "float", "int", "any"] = "id"


@dataclass
class ReadResult:
    """Rows of one file (typed columns plus ``_line``) and what reading them rejected."""

    frame: pl.DataFrame
    rows_read: int  # data rows (header and blank lines excluded), malformed ones included
    rejected: dict[str, int]  # rule -> rows skipped (only with on_bad_rows = "skip")

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


_DELIMITERS = {"\t": "<TAB>", ",": "','", ";": "';'", "|": "'|'", " ": "' '"}
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1e\x7f]"
# A byte that never separates fields: each line is read whole, then split by our separator.
_LINE_SEPARATOR = "\x1f"


def _binary_offset(path: Path) -> int | None:
    """Offset of the first NUL (or 0x1f) byte, scanning the whole file at C speed."""
    with open(path, "rb") as handle:
        offset = 0
        while chunk := handle.read(1 << 24):
            # NUL marks a binary file; 0x1f would also split our whole-line read
            found = min(
                (i for i in (chunk.find(b"\x00"), chunk.find(b"\x1f")) if i >= 0), default=-1
            )
            if found >= 0:
                return offset + found
            offset += len(chunk)
    return None


def _line_of_offset(path: Path, offset: int) -> int:
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def check_text_file(path: Path) -> None:
    """Raise :class:`DataError` for an empty (0 bytes) or binary (NUL bytes) file."""
    if path.stat().st_size == 0:
        raise DataError(path, 1, "empty file (0 bytes)")
    if (offset := _binary_offset(path)) is not None:
        raise DataError(
            path,
            _line_of_offset(path, offset),
            "binary data (NUL or control byte); expected a text file",
        )


def header_fields(path: Path, separator: str) -> tuple[int, list[str]]:
    """(line number, field names) of the first non-blank line of a text file."""
    check_text_file(path)
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                names = [f.strip().strip('"') for f in line.rstrip("\r\n").split(separator)]
                return number, names
    raise DataError(path, 1, "no data rows (only blank lines)")


def _field(i: int, strip_quotes: bool) -> pl.Expr:
    value = pl.col("_fields").list.get(i, null_on_oob=True).str.strip_chars()
    return value.str.strip_chars('"').str.strip_chars() if strip_quotes else value


def _rule_of(
    columns: Sequence[Column], sep: str, strip_quotes: bool = False
) -> tuple[pl.Expr, list[str]]:
    """Expression naming the first problem of a row (null when the row is fine)."""
    n = len(columns)
    layout = sep.join(c.name for c in columns).replace("\t", "<TAB>")
    fields = pl.col("_fields")
    n_fields = fields.list.len()
    other = [d for d in _DELIMITERS if d != sep]
    wrong_sep = pl.any_horizontal(*(pl.col("_raw").str.contains(d, literal=True) for d in other))
    chain = pl.when(pl.col("_raw").str.contains("\ufffd", literal=True)).then(
        pl.lit("not UTF-8 text (binary data?)")
    )
    chain = chain.when(pl.col("_raw").str.contains(_CONTROL)).then(
        pl.lit("control characters (binary data?)")
    )
    chain = chain.when((n_fields == 1) & wrong_sep & pl.lit(n > 1)).then(
        pl.lit(f"1 field: wrong delimiter? expected {_DELIMITERS.get(sep, repr(sep))}-separated")
    )
    chain = chain.when(n_fields < n).then(pl.lit(f"too few fields: expected {n} ({layout})"))
    chain = chain.when(n_fields > n).then(pl.lit(f"too many fields: expected {n} ({layout})"))
    rules = []
    for i, column in enumerate(columns):
        value = _field(i, strip_quotes)
        if column.kind == "any":
            continue
        if column.kind == "id":
            rule = f"empty {column.name}"
            chain = chain.when(value.str.len_chars() == 0).then(pl.lit(rule))
        elif column.kind == "float":
            number = value.cast(pl.Float64, strict=False)
            rule = f"{column.name} is not a number"
            chain = chain.when(number.is_null() | ~number.is_finite()).then(pl.lit(rule))
        else:
            rule = f"{column.name} is not an integer"
            chain = chain.when(value.cast(pl.Int64, strict=False).is_null()).then(pl.lit(rule))
        rules.append(rule)
    return chain.otherwise(pl.lit(None, dtype=pl.String)), rules


def _explain_row(raw: str, rule: str, columns: Sequence[Column], sep: str) -> str:
    """The rule plus the offending value, for the one-line error."""
    fields = raw.split(sep)
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    for i, column in enumerate(columns):
        if rule.startswith((f"empty {column.name}", f"{column.name} is not")):
            value = fields[i].strip() if i < len(fields) else ""
            return f"{rule} ({value!r}) in {shown!r}"
    if rule.startswith("too "):
        return f"{rule}, got {len(fields)} in {shown!r}"
    return f"{rule} in {shown!r}"


def _fast_read(
    path: Path, columns: Sequence[Column], separator: str, skip: int, strip_quotes: bool
) -> pl.DataFrame | None:
    """The happy path: polars' CSV parser with the strict schema. None when anything is off
    (a parse error, a missing field, a blank line, an empty id, control characters, a
    non-finite number); the caller then reads line by line to find and name the problem."""
    if any(c.kind == "any" for c in columns):
        return None
    types = {"float": pl.Float64, "int": pl.Int64}
    schema = {c.name: types.get(c.kind, pl.String) for c in columns}
    try:
        frame = (
            pl.scan_csv(
                path,
                has_header=False,
                separator=separator,
                quote_char='"' if strip_quotes else None,
                schema=schema,
                skip_rows=skip,
            )
            .with_row_index("_line", offset=skip + 1)
            .with_columns(pl.col(c.name).str.strip_chars() for c in columns if c.kind == "id")
            .collect(engine="streaming")
        )
    except (pl.exceptions.PolarsError, UnicodeError, OSError):
        return None
    if frame.height == 0 or any(frame[c.name].null_count() for c in columns):
        return None
    checks = [pl.col(c.name).is_finite().all() for c in columns if c.kind == "float"]
    for c in columns:
        if c.kind == "id":
            checks.append((pl.col(c.name).str.len_chars() > 0).all())
            checks.append(pl.col(c.name).str.contains(_CONTROL).not_().all())
    ok = frame.select(pl.all_horizontal(checks).alias("ok")) if checks else None
    if ok is not None and not ok["ok"][0]:
        return None
    return frame.with_columns(pl.col("_line").cast(pl.Int64))


def read_delimited(
    path: Path,
    columns: Sequence[Column],
    *,
    separator: str,
    on_bad_rows: OnBadRows = "error",
    header: Literal["auto", "always", "never"] = "auto",
    strip_quotes: bool = False,
) -> ReadResult:
    """Read a delimited text file strictly, vectorised with polars.

    Accepted forms: LF or CRLF line ends; blank lines (ignored); a header line (``header``
    "auto": the first non-blank line is a header when it contains no digit); surrounding
    double quotes on fields when ``strip_quotes``; any UTF-8 text and any length in id fields
    (ids stay strings). Everything else is a malformed row: a wrong number of fields (or a
    wrong delimiter), an empty id, a rating that is not a finite number, a timestamp that is
    not an integer, invalid UTF-8 or control characters. With ``on_bad_rows="error"`` the first
    one raises :class:`DataError` naming file and line; with "skip" malformed rows are dropped
    and counted per rule. An empty file, a binary file (NUL bytes) or a file without data rows
    is always an error. Numeric columns come back as Float64 / Int64, ids as stripped strings.
    """
    path = Path(path)
    check_text_file(path)
    lines = (
        pl.scan_csv(
            path,
            has_header=False,
            separator=_LINE_SEPARATOR,
            quote_char=None,
            schema={"_raw": pl.String},
            truncate_ragged_lines=True,
            encoding="utf8-lossy",
        )
        .with_row_index("_line", offset=1)
        .filter(pl.col("_raw").is_not_null() & (pl.col("_raw").str.strip_chars() != ""))
    )
    first = lines.head(1).collect()
    if first.height == 0:
        raise DataError(path, 1, "no data rows (only blank lines)")
    skip_line = 0
    if header == "always" or (
        header == "auto" and not any(ch.isdigit() for ch in first["_raw"][0])
    ):
        skip_line = int(first["_line"][0])
    lines = lines.filter(pl.col("_line") != skip_line)
    fast = _fast_read(path, columns, separator, skip_line, strip_quotes)
    if fast is not None:
        return ReadResult(fast, rows_read=fast.height, rejected={})
    rule, _ = _rule_of(columns, separator, strip_quotes)
    select = [pl.col("_line"), rule.alias("_rule")]
    for i, column in enumerate(columns):
        value = _field(i, strip_quotes)
        if column.kind == "float":
            value = value.cast(pl.Float64, strict=False)
        elif column.kind == "int":
            value = value.cast(pl.Int64, strict=False)
        select.append(value.alias(column.name))
    # Only typed columns are materialised (not the raw lines): large dumps stay affordable.
    table = (
        lines.with_columns(_fields=pl.col("_raw").str.split(separator))
        .select(select)
        .collect(engine="streaming")
    )
    if table.height == 0:
        raise DataError(path, skip_line + 1, "no data rows (header only)")
    bad = table.filter(pl.col("_rule").is_not_null())
    rejected: dict[str, int] = {}
    if bad.height:
        if on_bad_rows != "skip":
            line = int(bad["_line"][0])
            raw = lines.filter(pl.col("_line") == line).collect()["_raw"][0]
            raise DataError(path, line, _explain_row(raw, bad["_rule"][0], columns, separator))
        counts = bad.group_by("_rule").len().sort("_rule")
        rejected = dict(zip(counts["_rule"].to_list(), counts["len"].to_list(), strict=True))
        table = table.filter(pl.col("_rule").is_null())
    return ReadResult(
        table.drop("_rule"), rows_read=table.height + sum(rejected.values()), rejected=rejected
    )


def first_duplicate(frame: pl.DataFrame, keys: Sequence[str]) -> dict | None:
    """The first row (with ``_line``) whose ``keys`` repeat an earlier row, or None."""
    dup = frame.filter(pl.struct(list(keys)).is_first_distinct().not_())
    return dup.row(0, named=True) if dup.height else None


def bad_rows_record(results: dict[str, ReadResult]) -> dict[str, dict[str, int]]:
    """Provenance of skipped rows: file name -> rule -> count (files without any omitted)."""
    return {name: dict(r.rejected) for name, r in results.items() if r.rejected}
