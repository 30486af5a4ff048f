"""The DuckDB results store: one file holding runs, datasets, candidates, cells and per-user rows.

Only the driver process writes. Each finished cell is committed with all of its rows in a single
transaction, so a crash (even ``kill -9``) leaves either the whole cell or none of it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from harness.errors import HarnessError
from harness.protocol.candidates import CandidateSet, DomainCandidates

__all__ = [
    "SCHEMA_VERSION",
    "Store",
    "StoreCorrupt",
    "StoreLocked",
    "check_store_file",
    "connect_read_only",
    "connect_sandbox",
    "fetch",
]

SCHEMA_VERSION = "1"
DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
DUCKDB_HEADER = 4096 * 3  # the main header and two database headers precede any block


class StoreLocked(HarnessError):
    pass


class StoreCorrupt(HarnessError):
    """The results file exists but is not a readable DuckDB database."""


def _corrupt(path: Path, problem: str) -> StoreCorrupt:
    return StoreCorrupt(
        f"results store {path} {problem}; move it aside (e.g. mv {path} {path}.bad) to "
        f"start a new store there, or use --out DIR for another folder"
    )


def check_store_file(path: str | Path) -> None:
    """Raise :class:`StoreCorrupt` for a file that cannot be a DuckDB store (0 bytes, another
    format, shorter than DuckDB's headers); a missing file is fine (a new store)."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        raise _corrupt(path, "is a folder, not a DuckDB file")
    size = path.stat().st_size
    if size == 0:
        raise _corrupt(path, "is empty (0 bytes), not a DuckDB database")
    with path.open("rb") as handle:
        head = handle.read(16)
    if len(head) < 12 or head[8:12] != DUCKDB_MAGIC:
        raise _corrupt(path, "is not a DuckDB database (no DuckDB header)")
    if size < DUCKDB_HEADER:
        raise _corrupt(path, f"is truncated ({size} bytes, shorter than DuckDB's headers)")


def verify_store(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Raise :class:`StoreCorrupt` if the file behind ``con`` is shorter than the blocks its
    tables use (a truncated copy or a disk that filled up) or its metadata cannot be read.
    Reads metadata only (``pragma_storage_info``): fast even for a large store."""
    try:
        name = con.execute("SELECT current_database()").fetchone()[0]
        sizes = con.execute("PRAGMA database_size").fetchall()
        block_size = next((row[2] for row in sizes if row[0] == name), None)
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() "
            "WHERE database_name = ? AND NOT temporary",
            [name],
        ).fetchall()
        last = -1
        for schema, table in tables:
            qualified = f'"{schema}"."{table}"'.replace("'", "''")
            row = con.execute(
                "SELECT max(greatest(block_id, coalesce(list_max(additional_block_ids), -1))) "
                f"FROM pragma_storage_info('{qualified}') WHERE persistent"
            ).fetchone()
            if row and row[0] is not None:
                last = max(last, int(row[0]))
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _corrupt(path, f"cannot be read ({first})") from None
    if block_size and last >= 0:
        needed = DUCKDB_HEADER + (last + 1) * int(block_size)
        size = path.stat().st_size
        if size < needed:
            raise _corrupt(path, f"is truncated ({size} bytes; its tables use {needed})")


def damaged_store_error(exc: BaseException) -> StoreCorrupt | None:
    """A DuckDB error that says a file is short or corrupt, as a one-line StoreCorrupt naming
    that file; None for any other error."""
    import re

    if not isinstance(exc, duckdb.Error):
        return None
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    signs = ("could not read enough bytes", "corrupt", "checksum", "not a valid duckdb")
    if not any(sign in text.lower() for sign in signs):
        return None
    match = re.search(r'file "([^"]+)"', text)
    where = Path(match.group(1)) if match else Path("the results store")
    return _corrupt(where, f"is truncated or damaged ({first})")


def _is_lock_error(exc: Exception) -> bool:
    """DuckDB's "another process holds the file" error (not e.g. "block ... out of range")."""
    text = str(exc).lower()
    return "could not set lock" in text or "conflicting lock" in text


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """duckdb.connect with damaged files turned into one-line :class:`StoreCorrupt` errors;
    a lock held by another process stays a ``duckdb.IOException`` (callers wait or say so)."""
    check_store_file(path)
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        if isinstance(exc, duckdb.IOException) and _is_lock_error(exc):
            raise
        if isinstance(exc, duckdb.ConnectionException):  # this process has it open otherwise
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _corrupt(path, f"cannot be opened as a DuckDB database ({first})") from None


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    """Run a query and return a polars frame."""
    relation = con.sql(sql, params=params) if params else con.sql(sql)
    if relation is None:  # a statement that returns no rows
        return pl.DataFrame()
    return relation.pl()


def connect_read_only(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection whose views are this version's, as temporary views: a store
    written by an older version (or by a run still in progress elsewhere) gets new views such
    as ``epoch_timings`` without being modified. Falls back to the stored views if the file
    lacks a table they need."""
    path = Path(path)
    con = _connect(path, read_only=True)
    try:
        verify_store(con, path)
    except StoreCorrupt:
        con.close()
        raise
    script = _sql("views.sql").replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW")
    try:
        con.execute(script)
    except duckdb.Error:
        con.close()
        con = _connect(path, read_only=True)
        try:  # a file that opens but cannot be read (truncated after its headers)
            con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
        except duckdb.Error as exc:
            con.close()
            first = str(exc).strip().splitlines()[0]
            raise _corrupt(path, f"cannot be read ({first})") from None
    search = _sql("search_views.sql").replace("OR REPLACE VIEW", "OR REPLACE TEMP VIEW")
    with contextlib.suppress(duckdb.Error):  # a store older than the search tables
        con.execute(search)
    return con


SANDBOX_SETTINGS = (
    "SET enable_external_access = false",  # no files, URLs, ATTACH, COPY, EXPORT, INSTALL/LOAD
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET lock_configuration = true",  # last: no statement can undo the ones above
)


def connect_sandbox(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection for user SQL (``harness sql``): the views of
    :func:`connect_read_only` are created first, then DuckDB's external access is disabled and
    the configuration locked, so a query can read this store and nothing else: no other file
    (``read_csv``, ``read_text``, ``glob``, ``ATTACH``), no writes (``COPY ... TO``,
    ``EXPORT DATABASE``), no extension install or load, no network."""
    con = connect_read_only(path)
    for statement in SANDBOX_SETTINGS:
        con.execute(statement)
    return con


def _now() -> datetime:
    return datetime.now()


def _sql(name: str) -> str:
    return resources.files("harness.store").joinpath(name).read_text()


def _connect_waiting(
    path: Path, read_only: bool, wait_s: float
) -> duckdb.DuckDBPyConnection | None:
    """Connect, retrying every 0.5 s for up to ``wait_s`` while another process holds the
    file (DuckDB admits no reader beside a writer); None if it stays locked."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if read_only:
                return connect_read_only(path)
            return _connect(path, read_only=False)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)


def _verify_before_writing(path: Path) -> None:
    """Check an existing file read-only before DuckDB opens it for writing (which would
    already rewrite a header of a damaged file). Skipped while another process holds it."""
    try:
        con = _connect(path, read_only=True)
    except duckdb.IOException as exc:
        if _is_lock_error(exc):
            return
        raise
    try:
        verify_store(con, path)
    finally:
        con.close()


class Store:
    """Read-write access to one results file (created on first use)."""

    def __init__(self, path: str | Path, read_only: bool = False, wait_s: float = 0.0):
        """Open (or create) the store; ``wait_s`` > 0 retries that long while another process
        has the file open (a reader, or another run committing a cell) before giving up."""
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"no results store at {self.path}; run `harness run` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not read_only and self.path.exists():
            _verify_before_writing(self.path)
        self.con: duckdb.DuckDBPyConnection | None = _connect_waiting(self.path, read_only, wait_s)
        if self.con is None:
            raise StoreLocked(
                f"results store {self.path} is in use by another process "
                f"(another `harness run`?); wait for it or stop it"
            )
        if not read_only:
            try:
                self.con.execute(_sql("schema.sql"))
                self.con.execute(_sql("views.sql"))
                self.con.execute(_sql("search_views.sql"))
                self.con.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION]
                )
            except duckdb.IOException as exc:  # a block past the end of a truncated file
                self.close()
                first = str(exc).strip().splitlines()[0]
                raise _corrupt(self.path, f"cannot be read ({first})") from None

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def release(self) -> None:
        """Close the file until the next :meth:`held` block. DuckDB admits no reader beside a
        writer, so a long run releases the store between commits and ``harness sql`` or a
        report can read it while cells train."""
        self.close()

    @contextlib.contextmanager
    def held(self, wait_s: float = 3600.0) -> Iterator[Store]:
        """Reopen a released store for writing (waiting while a reader has it open), then
        release it again; a no-op while the store is open."""
        if self.con is not None:
            yield self
            return
        self.con = _connect_waiting(self.path, False, wait_s)
        if self.con is None:
            raise StoreLocked(
                f"results store {self.path} stayed locked by another process for "
                f"{wait_s:.0f} s; close the reader and rerun to resume"
            )
        try:
            yield self
        finally:
            self.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, run_id: str, info: dict[str, Any]) -> None:
        columns = ["run_id", "started_at", "status", *info]
        values = [run_id, _now(), "running", *info.values()]
        marks = ", ".join("?" for _ in columns)
        self.con.execute(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({marks})", values)

    def close_orphan_runs(self) -> list[tuple[str, datetime]]:
        """Record runs still marked ``running`` as ``interrupted`` (call while holding the
        writer lock: then no other run is alive, so these were killed or crashed). Their end
        time is their last commit (else their start) and their counts are the cells they
        stored. Returns (run id, started) of each."""
        rows = self.con.execute(
            "SELECT run_id, started_at FROM runs WHERE status = 'running' ORDER BY started_at"
        ).fetchall()
        if rows:
            self.con.execute(
                "UPDATE runs SET status = 'interrupted', "
                "finished_at = coalesce((SELECT max(c.finished_at) FROM cells c "
                "  WHERE c.run_id = runs.run_id), started_at), "
                "cells_done = (SELECT count(*) FROM cells c "
                "  WHERE c.run_id = runs.run_id AND c.status = 'done'), "
                "cells_failed = (SELECT count(*) FROM cells c "
                "  WHERE c.run_id = runs.run_id AND c.status = 'failed') "
                "WHERE status = 'running'"
            )
        return rows

    def finish_run(self, run_id: str, status: str, done: int, failed: int) -> None:
        self.con.execute(
            "UPDATE runs SET finished_at = ?, status = ?, cells_done = ?, cells_failed = ? "
            "WHERE run_id = ?",
            [_now(), status, done, failed, run_id],
        )

    # -- datasets -----------------------------------------------------------------------------
    def save_dataset(
        self,
        fingerprint: str,
        name: str,
        loader: str,
        source: dict,
        user_ids: np.ndarray,
        domains: pl.DataFrame,
    ) -> None:
        known = self.con.execute(
            "SELECT coalesce(checked, true) FROM datasets WHERE dataset_fingerprint = ?",
            [fingerprint],
        ).fetchall()
        if known and known[0][0]:
            return
        users = pl.DataFrame(
            {
                "dataset_fingerprint": fingerprint,
                "user_idx": np.arange(len(user_ids), dtype=np.int32),
                "user_id": [str(u) for u in user_ids],
            }
        )
        domains = domains.with_columns(pl.lit(fingerprint).alias("dataset_fingerprint"))
        with self.transaction():
            if known:  # a data card's rows (harness.store.datacard): the real data replaces
                # them, its candidate counts included (the lists are built from the data)
                for table in ("candidates", "train_counts"):
                    self.con.execute(
                        f"DELETE FROM {table} WHERE candidate_set_id IN (SELECT candidate_set_id "
                        f"FROM candidate_sets WHERE dataset_fingerprint = ?)",
                        [fingerprint],
                    )
                for table in ("candidate_sets", "datasets", "users", "dataset_domains"):
                    self.con.execute(
                        f"DELETE FROM {table} WHERE dataset_fingerprint = ?", [fingerprint]
                    )
            self.con.execute(
                "INSERT INTO datasets (dataset_fingerprint, name, loader, source, n_users, "
                "created_at, checked) VALUES (?, ?, ?, ?, ?, ?, true)",
                [fingerprint, name, loader, json.dumps(source, default=str), len(user_ids), _now()],
            )
            self.con.register("users_df", users)
            self.con.execute(
                "INSERT INTO users SELECT dataset_fingerprint, user_idx, user_id FROM users_df"
            )
            self.con.unregister("users_df")
            self.con.register("domains_df", domains)
            self.con.execute(
                "INSERT INTO dataset_domains SELECT dataset_fingerprint, domain, "
                "n_users, n_items, n_interactions FROM domains_df"
            )
            self.con.unregister("domains_df")

    # -- candidates ---------------------------------------------------------------------------
    def save_candidates(
        self,
        set_id: str,
        cands: CandidateSet,
        meta: dict[str, Any],
        train_counts: dict[str, np.ndarray] | None = None,
    ) -> None:
        frames = []
        for split_name, part in (("valid", cands.valid), ("test", cands.test)):
            for domain, c in part.items():
                if not len(c.users):  # a domain without cases (tiny data): no rows, and a
                    continue  # zero-row [0, n] array has no element type for polars
                frames.append(
                    pl.DataFrame(
                        {
                            "split": split_name,
                            "domain": domain,
                            "user_idx": c.users.astype(np.int32),
                            "positive": c.positives.astype(np.int32),
                            "negatives": c.negatives.astype(np.int32),
                        }
                    ).with_columns(pl.col("negatives").arr.to_list())
                )
        frame = pl.concat(frames) if frames else pl.DataFrame()
        n_valid = sum(c.n_cases for c in cands.valid.values())
        n_test = sum(c.n_cases for c in cands.test.values())
        with self.transaction():
            self.con.execute("DELETE FROM candidates WHERE candidate_set_id = ?", [set_id])
            self.con.execute("DELETE FROM candidate_sets WHERE candidate_set_id = ?", [set_id])
            self.con.execute("DELETE FROM train_counts WHERE candidate_set_id = ?", [set_id])
            if train_counts:
                counts = pl.concat(
                    [
                        pl.DataFrame(
                            {
                                "domain": domain,
                                "user_idx": np.arange(len(c), dtype=np.int32),
                                "n_train": c.astype(np.int32),
                            }
                        )
                        for domain, c in train_counts.items()
                    ]
                )
                self.con.register("counts_df", counts)
                self.con.execute(
                    "INSERT INTO train_counts SELECT ?, domain, user_idx, n_train FROM counts_df",
                    [set_id],
                )
                self.con.unregister("counts_df")
            self.con.execute(
                "INSERT INTO candidate_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    set_id,
                    cands.content_hash(),
                    meta["dataset_fingerprint"],
                    meta["protocol_fingerprint"],
                    json.dumps(meta["protocol"]),
                    meta["split_rule"],
                    cands.seed,
                    cands.n_negatives,
                    n_valid,
                    n_test,
                    _now(),
                ],
            )
            if len(frame):
                self.con.register("cand_df", frame)
                self.con.execute(
                    "INSERT INTO candidates SELECT ?, split, domain, user_idx, positive, "
                    "negatives FROM cand_df",
                    [set_id],
                )
                self.con.unregister("cand_df")

    def load_candidates(self, set_id: str, domains: list[str]) -> CandidateSet | None:
        """The stored set, verified against its content hash; None when absent or when only a
        data card's counts are stored (the lists are then built from the data and replace it)."""
        rows = self.con.execute(
            "SELECT content_hash, split_seed, n_negatives FROM candidate_sets s "
            "JOIN datasets d USING (dataset_fingerprint) "
            "WHERE candidate_set_id = ? AND coalesce(d.checked, true)",
            [set_id],
        ).fetchall()  # fetchall: DuckDB 2 refuses new work while a result is unfinished
        if not rows:
            return None
        content_hash, seed, n_neg = rows[0]
        table = fetch(
            self.con,
            "SELECT split, domain, user_idx, positive, negatives FROM candidates "
            "WHERE candidate_set_id = ? ORDER BY split, domain, user_idx",
            [set_id],
        )
        parts: dict[str, dict[str, DomainCandidates]] = {"valid": {}, "test": {}}
        for split_name in parts:
            for domain in domains:
                sub = table.filter((pl.col("split") == split_name) & (pl.col("domain") == domain))
                negatives = (
                    sub["negatives"].list.to_array(n_neg).to_numpy()
                    if len(sub)
                    else np.zeros((0, n_neg))
                )
                parts[split_name][domain] = DomainCandidates(
                    users=sub["user_idx"].to_numpy().astype(np.int64),
                    positives=sub["positive"].to_numpy().astype(np.int64),
                    negatives=np.asarray(negatives, dtype=np.int64).reshape(-1, n_neg),
                )
        cands = CandidateSet(valid=parts["valid"], test=parts["test"], n_negatives=n_neg, seed=seed)
        if cands.content_hash() != content_hash:
            raise ValueError(
                f"stored candidate set {set_id} fails its content hash; "
                f"delete it (harness sql cannot) or use a fresh store"
            )
        return cands

    # -- plan and cells -----------------------------------------------------------------------
    def replace_plan(self, experiment: str, rows: list[dict[str, Any]]) -> None:
        frame = pl.DataFrame(
            rows,
            schema={
                "experiment": pl.String,
                "dataset": pl.String,
                "method": pl.String,
                "seed": pl.Int32,
                "cell_id": pl.String,
                "kind": pl.String,
                "family": pl.String,
                "display_name": pl.String,
                "domains": pl.String,
            },
        )
        with self.transaction():
            self.con.execute("DELETE FROM plan_cells WHERE experiment = ?", [experiment])
            self.con.register("plan_df", frame)
            self.con.execute(
                "INSERT INTO plan_cells SELECT experiment, dataset, method, seed, "
                "cell_id, kind, family, display_name, domains FROM plan_df"
            )
            self.con.unregister("plan_df")

    def cell_status(self, cell_ids: list[str]) -> dict[str, str]:
        if not cell_ids:
            return {}
        rows = self.con.execute(
            "SELECT cell_id, status FROM cells WHERE cell_id IN (SELECT unnest(?))", [cell_ids]
        ).fetchall()
        return dict(rows)

    def cell_costs(self) -> list[tuple[str, str, str, str, str, float]]:
        """(cell id, dataset fingerprint, kind, params JSON, device, seconds of training +
        inference) of every finished cell: what ``harness plan`` shows and estimates from."""
        return self.con.execute(
            "SELECT cell_id, dataset_fingerprint, kind, params, device, "
            "train_s + coalesce(infer_s, 0) FROM cells "
            "WHERE status = 'done' AND train_s IS NOT NULL"
        ).fetchall()

    def write_cell(
        self,
        cell: dict[str, Any],
        metrics: pl.DataFrame | None,
        curves: pl.DataFrame | None,
        user_values: pl.DataFrame | None = None,
        run: dict[str, Any] | None = None,
    ) -> None:
        """Replace everything stored for ``cell['cell_id']`` in one transaction; ``run`` (an
        imported cell's run provenance) is added to ``runs`` unless that run is known."""
        cell_id = cell["cell_id"]
        with self.transaction():
            if (
                run is not None
                and not self.con.execute(
                    "SELECT 1 FROM runs WHERE run_id = ?", [run["run_id"]]
                ).fetchall()
            ):
                columns = list(run)
                marks = ", ".join("?" for _ in columns)
                self.con.execute(
                    f"INSERT INTO runs ({', '.join(columns)}) VALUES ({marks})",
                    list(run.values()),
                )
            for table in ("user_metrics", "curves", "user_values", "cells"):
                self.con.execute(f"DELETE FROM {table} WHERE cell_id = ?", [cell_id])
            columns = list(cell)
            marks = ", ".join("?" for _ in columns)
            self.con.execute(
                f"INSERT INTO cells ({', '.join(columns)}) VALUES ({marks})", list(cell.values())
            )
            if metrics is not None and len(metrics):
                self.con.register("metrics_df", metrics)
                self.con.execute(
                    "INSERT INTO user_metrics SELECT ?, ranking, domain, user_idx, k, hr, ndcg, "
                    "mrr, rank, ties, n_train_domain, n_train_total FROM metrics_df",
                    [cell_id],
                )
                self.con.unregister("metrics_df")
            if curves is not None and len(curves):
                self.con.register("curves_df", curves)
                self.con.execute(
                    "INSERT INTO curves SELECT ?, stage, domain, epoch, name, value FROM curves_df",
                    [cell_id],
                )
                self.con.unregister("curves_df")
            if user_values is not None and len(user_values):
                self.con.register("values_df", user_values)
                self.con.execute(
                    "INSERT INTO user_values SELECT ?, stage, domain, name, user_idx, value "
                    "FROM values_df",
                    [cell_id],
                )
                self.con.unregister("values_df")

    def cell_content(
        self, cell_id: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """A stored cell's row, its run's row (or None) and its metric, curve and value rows,
        each in a fixed order: what a bundle is made of."""
        cell = self.query("SELECT * FROM cells WHERE cell_id = ?", [cell_id]).to_dicts()
        if not cell:
            raise KeyError(cell_id)
        run = self.query("SELECT * FROM runs WHERE run_id = ?", [cell[0]["run_id"]]).to_dicts()
        metrics = self.query(
            "SELECT * EXCLUDE (cell_id) FROM user_metrics WHERE cell_id = ? "
            "ORDER BY ranking, domain, user_idx, k",
            [cell_id],
        )
        curves = self.query(
            "SELECT * EXCLUDE (cell_id) FROM curves WHERE cell_id = ? "
            "ORDER BY stage, domain, name, epoch",
            [cell_id],
        )
        values = self.query(
            "SELECT * EXCLUDE (cell_id) FROM user_values WHERE cell_id = ? "
            "ORDER BY stage, domain, name, user_idx",
            [cell_id],
        )
        return cell[0], (run[0] if run else None), metrics, curves, values

    # -- helpers ------------------------------------------------------------------------------
    def transaction(self) -> _Transaction:
        return _Transaction(self.con)

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        return fetch(self.con, sql, params)


class _Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")
