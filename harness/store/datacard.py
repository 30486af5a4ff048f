"""Data cards: what a results folder needs to be browsed without the raw data.

A published folder (``leaderboard/douban``) holds one bundle per cell, and under ``data/`` one
card per prepared dataset and protocol (``data/<candidate_set_id>.parquet``): the dataset's
fingerprint, source record and domain sizes, the candidate set's protocol and content hash,
the user ids, and per user and domain the number of training interactions and of held-out
cases. A card holds no interaction and no item: nothing of the data beyond the counts the
report's activity axis needs. It is digest-protected like a bundle.

On a clone without the data, ``harness report``, ``plan``, ``sql`` and ``import`` match a
spec's dataset to a card by its declaration (loader options without ``path``) and protocol
fingerprint, load the card into the store marked *unchecked* (``datasets.checked = false``)
and import the bundles against it: every page and ``harness plan`` say the numbers are not yet
checked against the data. Once the data is present, preparing it replaces the card's rows
with the real ones and the bundles are checked against the data again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from harness.store.bundle import BundleError, conform
from harness.store.store import fetch

__all__ = [
    "CARD_FOLDER",
    "DataCard",
    "card_declaration",
    "find_card",
    "load_card",
    "read_card",
    "write_card",
]

CARD_FORMAT = 1
CARD_FOLDER = "data"
META_KEY = b"cdr_harness_datacard"
COLUMNS: dict[str, pl.DataType] = {
    "part": pl.String(),  # user | train | heldout
    "domain": pl.String(),
    "split": pl.String(),  # heldout: valid | test
    "user_idx": pl.Int32(),
    "user_id": pl.String(),
    "count": pl.Int32(),  # train: training interactions; heldout: cases
}


def card_declaration(config: Any) -> dict[str, Any]:
    """What a spec declares about a dataset, independent of where its files are: the loader
    options without ``path`` (a registered dataset and a path to the same files agree)."""
    return config.model_dump(mode="json", exclude={"path"})


@dataclass(frozen=True)
class DataCard:
    path: Path
    meta: dict[str, Any]
    rows: pl.DataFrame

    @property
    def fingerprint(self) -> str:
        return self.meta["dataset"]["dataset_fingerprint"]

    @property
    def candidate_set(self) -> dict[str, Any]:
        return self.meta["candidate_set"]

    @property
    def domain_names(self) -> list[str]:
        return [d["domain"] for d in self.meta["domains"]]


def _digest(rows: pl.DataFrame) -> str:
    """sha256 over the sorted rows as CSV (the card is small; the CSV text is canonical)."""
    return hashlib.sha256(rows.write_csv().encode()).hexdigest()


def write_card(store: Any, folder: Path, candidate_set_id: str, declaration: dict) -> Path:
    """Write the card of ``candidate_set_id`` (prepared in ``store``) into ``folder/data``."""
    con = store.con
    cset = _one(con, "SELECT * FROM candidate_sets WHERE candidate_set_id = ?", candidate_set_id)
    fingerprint = cset["dataset_fingerprint"]
    dataset = _one(con, "SELECT * FROM datasets WHERE dataset_fingerprint = ?", fingerprint)
    domains = fetch(
        con,
        "SELECT domain, n_users, n_items, n_interactions FROM dataset_domains "
        "WHERE dataset_fingerprint = ? ORDER BY domain",
        [fingerprint],
    )
    users = fetch(
        con,
        "SELECT 'user' AS part, user_idx, user_id FROM users WHERE dataset_fingerprint = ?",
        [fingerprint],
    )
    train = fetch(
        con,
        "SELECT 'train' AS part, domain, user_idx, n_train AS count FROM train_counts "
        "WHERE candidate_set_id = ?",
        [candidate_set_id],
    )
    heldout = fetch(
        con,
        "SELECT 'heldout' AS part, domain, split, user_idx, count(*) AS count FROM candidates "
        "WHERE candidate_set_id = ? GROUP BY ALL",
        [candidate_set_id],
    )
    rows = _conform(pl.concat([_conform(f) for f in (users, train, heldout)]))
    meta = {
        "format": CARD_FORMAT,
        "declaration": declaration,
        "dataset": {k: dataset[k] for k in ("dataset_fingerprint", "name", "loader", "n_users")}
        | {"source": json.loads(dataset["source"])},
        "domains": domains.to_dicts(),
        "candidate_set": {
            k: cset[k]
            for k in (
                "candidate_set_id",
                "content_hash",
                "dataset_fingerprint",
                "protocol_fingerprint",
                "split_rule",
                "split_seed",
                "n_negatives",
                "n_valid_cases",
                "n_test_cases",
            )
        }
        | {"protocol": json.loads(cset["protocol"])},
        "digest": _digest(rows),
    }
    target = folder / CARD_FOLDER / f"{candidate_set_id}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    arrow = rows.to_arrow().replace_schema_metadata(
        {META_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"), default=str).encode()}
    )
    tmp = target.with_name(target.name + ".tmp")
    pq.write_table(arrow, tmp, compression="zstd", compression_level=9, write_statistics=False)
    tmp.replace(target)
    return target


def _one(con: Any, sql: str, key: str) -> dict[str, Any]:
    frame = fetch(con, sql, [key])
    if not len(frame):
        raise BundleError(f"the store holds no row for {key} ({sql.split('FROM')[1].split()[0]})")
    return frame.row(0, named=True)


def _conform(frame: pl.DataFrame) -> pl.DataFrame:
    return conform(frame, COLUMNS).sort(["part", "domain", "split", "user_idx"], nulls_last=False)


def read_card(path: Path) -> DataCard:
    """Read and integrity-check a card; :class:`BundleError` names the file and reason."""
    try:
        arrow = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise BundleError(f"data card {path}: not a readable Parquet file ({exc})") from None
    raw = (arrow.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise BundleError(f"data card {path}: no {META_KEY.decode()} metadata")
    meta = json.loads(raw)
    if meta.get("format") != CARD_FORMAT:
        raise BundleError(f"data card {path}: format {meta.get('format')!r}, expected 1")
    rows = _conform(pl.from_arrow(arrow.replace_schema_metadata(None)))
    if _digest(rows) != meta.get("digest"):
        raise BundleError(f"data card {path}: its rows do not match its digest (edited?)")
    if meta["candidate_set"]["candidate_set_id"] != Path(path).stem:
        raise BundleError(f"data card {path}: named {Path(path).stem} but describes another set")
    return DataCard(Path(path), meta, rows)


def find_card(folders: list[Path], declaration: dict, protocol_fingerprint: str) -> DataCard | None:
    """The card in ``folders`` whose declaration and protocol match (None: no card does)."""
    wanted = json.dumps(declaration, sort_keys=True)
    for folder in folders:
        for path in sorted((Path(folder) / CARD_FOLDER).glob("*.parquet")):
            card = read_card(path)
            if (
                json.dumps(card.meta["declaration"], sort_keys=True) == wanted
                and card.candidate_set["protocol_fingerprint"] == protocol_fingerprint
            ):
                return card
    return None


def load_card(store: Any, card: DataCard) -> None:
    """Put a card's dataset, users, counts and candidate set into ``store``, unchecked. Does
    nothing when the store already holds that dataset (checked or not)."""
    con = store.con
    fingerprint = card.fingerprint
    if con.execute(
        "SELECT 1 FROM datasets WHERE dataset_fingerprint = ?", [fingerprint]
    ).fetchall():
        return
    dataset, cset, rows = card.meta["dataset"], card.candidate_set, card.rows
    part = pl.col("part")
    users = rows.filter(part == "user").select("user_idx", "user_id")
    train = rows.filter(part == "train").select("domain", "user_idx", "count")
    heldout = rows.filter(part == "heldout").select("split", "domain", "user_idx", "count")
    heldout = heldout.select(pl.all().repeat_by("count").explode()).drop("count")
    domains = pl.DataFrame(card.meta["domains"])
    with store.transaction():
        con.execute(
            "INSERT INTO datasets (dataset_fingerprint, name, loader, source, n_users, "
            "created_at, checked) VALUES (?, ?, ?, ?, ?, now(), false)",
            [
                fingerprint,
                dataset["name"],
                dataset["loader"],
                json.dumps(dataset["source"]),
                dataset["n_users"],
            ],
        )
        for name, frame, sql in (
            ("card_users", users, "INSERT INTO users SELECT ?, user_idx, user_id FROM card_users"),
            (
                "card_domains",
                domains,
                "INSERT INTO dataset_domains SELECT ?, domain, n_users, n_items, n_interactions "
                "FROM card_domains",
            ),
        ):
            con.register(name, frame)
            con.execute(sql, [fingerprint])
            con.unregister(name)
        set_id = cset["candidate_set_id"]
        con.execute(
            "INSERT INTO candidate_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [
                set_id,
                cset["content_hash"],
                fingerprint,
                cset["protocol_fingerprint"],
                json.dumps(cset["protocol"]),
                cset["split_rule"],
                cset["split_seed"],
                cset["n_negatives"],
                cset["n_valid_cases"],
                cset["n_test_cases"],
            ],
        )
        con.register("card_train", train)
        con.execute(
            "INSERT INTO train_counts SELECT ?, domain, user_idx, count FROM card_train", [set_id]
        )
        con.unregister("card_train")
        con.register("card_heldout", heldout)
        con.execute(
            "INSERT INTO candidates SELECT ?, split, domain, user_idx, NULL, NULL "
            "FROM card_heldout",
            [set_id],
        )
        con.unregister("card_heldout")
