"""Loader "amazon_pairs": the DisenCDR two-domain Amazon pairs (pre-split, implicit).

Pair ``X_Y`` keeps domain X in folder ``X_Y/`` and domain Y in ``Y_X/``; user ids are shared
within the pair, item ids are per domain. ``train.txt`` rows become the training interactions;
the evaluation file becomes ``DomainData.fixed_test`` so every method is scored on the
release's own split. ``test_file`` chooses it: ``"test"`` (default) is ``test.txt``, the file
DisenCDR evaluates on: ``test_original.txt`` without the test items that never occur in training
(cold items every model scores near zero); ``"test_original"`` keeps one item per user, cold
ones included (their count is recorded in ``source`` as ``cold_test_cases``). The files carry
no time, so timestamps are None. A test pair that also occurs in train is removed
from train (it would leak the answer); the count is recorded in ``source``. Rows must be
``user<TAB>item<TAB>number`` (duplicate training rows count once); a test file with two items
for one user is an error naming its line.
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
    LoaderConfig,
    ReadResult,
    bad_rows_record,
    build_dataset,
    check_files,
    file_record,
    first_duplicate,
    read_delimited,
    resolve_path,
)

__all__ = ["AmazonPairsConfig", "load_amazon_pairs"]

TEST_FILES = {"test": "test.txt", "test_original": "test_original.txt"}

HINT = (
    "the Amazon pairs come from the DisenCDR release (Cao et al., SIGIR 2022, "
    "github.com/cjx96/DisenCDR, its dataset folder); pair {pair} needs folders {x}_{y}/ and "
    "{y}_{x}/ each with train.txt and {test} ('user<TAB>item<TAB>1', no header)"
)


class AmazonPairsConfig(BadRowsOption, LoaderConfig):
    """The DisenCDR pairs: pair X_Y keeps domain X in ``X_Y/`` and domain Y in ``Y_X/``, each
    with ``train.txt`` and the test file; the release's test item is kept as the test case
    (pre-split), and users are shared within the pair."""

    loader: Literal["amazon_pairs"] = "amazon_pairs"
    path: str = Field(description="the amazon-pairs folder (one X_Y/ and Y_X/ folder per pair)")
    pair: str = Field(description='the pair X_Y, e.g. "cloth_sport": domains X and Y, users shared')
    test_file: Literal["test", "test_original"] = Field(
        "test",
        description="'test': test.txt, the file DisenCDR evaluates on (test items seen in "
        "training); 'test_original': one test item per user, cold items included",
    )

    @field_validator("pair")
    @classmethod
    def _two_words(cls, pair: str) -> str:
        parts = pair.split("_")
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise ValueError(f"pair must look like 'cloth_sport' (two words), got {pair!r}")
        return pair

    def pair_domains(self) -> tuple[str, str]:
        x, y = self.pair.split("_")
        return x, y

    def chosen_domains(self) -> list[str]:
        both = list(self.pair_domains())
        if self.domains is None:
            return both
        unknown = [d for d in self.domains if d not in both]
        if unknown:
            raise ValueError(f"domains {unknown} are not in pair {self.pair!r} ({both})")
        return list(self.domains)

    def folder(self, domain: str) -> str:
        x, y = self.pair_domains()
        return f"{x}_{y}" if domain == x else f"{y}_{x}"

    def required_files(self, base_dir: Path) -> list[tuple[Path, str]]:
        root = resolve_path(self.path, base_dir)
        x, y = self.pair_domains()
        hint = HINT.format(pair=self.pair, x=x, y=y, test=self.test_name)
        return [
            (root / self.folder(d) / f, hint)
            for d in self.chosen_domains()
            for f in ("train.txt", self.test_name)
        ]

    @property
    def test_name(self) -> str:
        return TEST_FILES[self.test_file]


COLUMNS = (Column("user"), Column("item"), Column("label", "float"))


def _read(path: Path, on_bad_rows: str) -> ReadResult:
    return read_delimited(path, COLUMNS, separator="\t", on_bad_rows=on_bad_rows)


def _check_one_test_item(path: Path, test: pl.DataFrame) -> None:
    """A pre-split test file holds one item per user; a second one is an error at its line."""
    dup = first_duplicate(test, ["user"])
    if dup is not None:
        raise DataError(
            path,
            int(dup["_line"]),
            f"user {dup['user']!r} has a second test item ({dup['item']!r}); "
            "a test file holds one held-out item per user",
        )


def load_amazon_pairs(config: AmazonPairsConfig, base_dir: Path) -> Dataset:
    """Load one DisenCDR pair with the release's test item per user as a fixed held-out."""
    check_files(config.required_files(base_dir))
    root = resolve_path(config.path, base_dir)
    domains = config.chosen_domains()
    frames = []
    overlaps: dict[str, int] = {}
    cold: dict[str, int] = {}
    files = []
    funnel: dict[str, dict] = {}
    results: dict[str, ReadResult] = {}
    for domain in domains:
        folder = root / config.folder(domain)
        train_read = _read(folder / "train.txt", config.on_bad_rows)
        test_read = _read(folder / config.test_name, config.on_bad_rows)
        _check_one_test_item(folder / config.test_name, test_read.frame)
        for name, read in (("train.txt", train_read), (config.test_name, test_read)):
            results[file_record(folder / name, root)["name"]] = read
        rejected: dict[str, int] = {}
        for read in (train_read, test_read):
            for rule, n in read.rejected.items():
                rejected[f"malformed: {rule}"] = rejected.get(f"malformed: {rule}", 0) + n
        funnel[domain] = {
            "rows_read": train_read.rows_read + test_read.rows_read,
            "rows_rejected": rejected,
        }
        train = train_read.frame.select("user", "item").unique(maintain_order=True)
        test = test_read.frame.select("user", "item")
        cold[domain] = test.join(train, on="item", how="anti").height
        clash = train.join(test, on=["user", "item"], how="semi")
        overlaps[domain] = clash.height
        train = train.join(test, on=["user", "item"], how="anti")
        frames.append(
            pl.concat(
                [
                    train.with_columns(held_out=pl.lit(False)),
                    test.with_columns(held_out=pl.lit(True)),
                ]
            ).with_columns(domain=pl.lit(domain))
        )
        files += [file_record(folder / name, root) for name in ("train.txt", config.test_name)]
    source = {
        "loader": "amazon_pairs",
        "pair": config.pair,
        "files": files,
        "domains": domains,
        "fixed_test": config.test_name,
        "test_pairs_dropped_from_train": overlaps,
        "cold_test_cases": cold,
        "implicit": True,
    }
    if config.on_bad_rows != "error":  # default options keep the source (and fingerprint)
        source["on_bad_rows"] = config.on_bad_rows
        source["bad_rows"] = bad_rows_record(results)
    dataset = build_dataset(
        pl.concat(frames),
        name=f"amazon_pairs-{config.pair}",
        source=source,
        domains=domains,
    )
    return dataclasses.replace(dataset, funnel=funnel)
