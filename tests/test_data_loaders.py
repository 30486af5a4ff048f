"""Loaders: real-data statistics, hand-checkable fixtures, preprocessing rules and errors."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from harness.data.dataset import Dataset
from harness.data.loaders import (
    LOADERS,
    DataFileMissing,
    get_loader,
    load_dataset,
    parse_loader_config,
)
from harness.data.loaders.amazon import AmazonConfig, drop_items, item_uniforms
from harness.data.stats import activity_histogram, dataset_statistics

PINNED_UNIFORM = 0.2166854982522315
FIXTURES = Path(__file__).parent / "fixtures"


def rows(ds: Dataset, domain: str) -> set[tuple[str, str]]:
    """(raw user, raw item) training pairs of one domain."""
    d = ds.domains[domain]
    return set(zip(ds.user_ids[d.users].tolist(), d.item_ids[d.items].tolist(), strict=True))


def users_of(ds: Dataset, domain: str) -> set[str]:
    return set(ds.user_ids[ds.domains[domain].all_users()].tolist())


# --- registry --------------------------------------------------------------------------------


def test_registry_names_match_config_literals():
    assert set(LOADERS) == {"douban", "amazon", "amazon_pairs", "interactions", "synthetic"}
    for name, spec in LOADERS.items():
        assert spec.name == name
        assert spec.config_model.model_fields["loader"].default == name
        assert spec.description


def test_get_loader_suggests_close_name():
    with pytest.raises(KeyError, match="did you mean 'douban'"):
        get_loader("dubon")
    with pytest.raises(KeyError, match="amazon_pairs"):
        get_loader("amazon_pair")


def test_config_rejects_unknown_keys():
    with pytest.raises(ValidationError):
        parse_loader_config({"loader": "douban", "path": "x", "min_ratng": 3})


# --- douban ----------------------------------------------------------------------------------


def test_douban_real_data_matches_readme(douban_home):
    ds = load_dataset(
        {"loader": "douban", "path": "douban", "domains": ["books", "music"]}, douban_home
    )
    assert ds.domain_names == ["books", "music"]
    books, music = ds.domains["books"], ds.domains["music"]
    assert (len(books.all_users()), books.n_items, books.n_interactions) == (2212, 95872, 227251)
    assert (len(music.all_users()), music.n_items, music.n_interactions) == (1672, 5567, 69709)
    both = np.intersect1d(books.all_users(), music.all_users())
    assert len(both) == 1604
    assert ds.n_users == 2212 + 1672 - 1604
    assert books.timestamps is None
    assert ds.source["files"] == [
        {"name": "books.tsv", "bytes": 2878999},
        {"name": "music.tsv", "bytes": 811063},
    ]
    assert "/" not in str(ds.source["files"])  # no machine paths in the fingerprint input
    ds.validate()

    strict = load_dataset(
        {
            "loader": "douban",
            "path": "douban",
            "domains": ["books", "music"],
            "keep_users": "all_domains",
        },
        douban_home,
    )
    assert strict.n_users == 1604
    assert {len(d.all_users()) for d in strict.domains.values()} == {1604}

    stats = dataset_statistics(ds)
    all_row = stats.filter(pl.col("domain") == "all").row(0, named=True)
    assert all_row["users"] == 2280 and all_row["interactions"] == 227251 + 69709


def test_douban_three_domain_fixture_with_singular_alias():
    ds = load_dataset({"loader": "douban", "path": "douban3"}, FIXTURES)
    assert ds.domain_names == ["books", "movies", "music"]
    assert ds.user_ids.tolist() == ["1", "2", "3", "4", "5", "6"]
    assert ds.domains["books"].item_ids.tolist() == [str(i) for i in range(101, 108)]
    assert [len(ds.domains[d].users) for d in ds.domain_names] == [12, 6, 7]
    assert users_of(ds, "movies") == {"1", "2", "3", "6"}
    assert ("3", "105") in rows(ds, "books")
    assert ds.source["files"][1]["name"] == "movie.tsv"
    for domain in ds.domains.values():
        assert domain.users.dtype == np.int64 and domain.items.dtype == np.int64


def test_douban_keep_users_all_domains_and_min_rating():
    ds = load_dataset(
        {"loader": "douban", "path": "douban3", "keep_users": "all_domains"}, FIXTURES
    )
    assert ds.user_ids.tolist() == ["2", "3"]
    assert rows(ds, "books") == {("2", "101"), ("2", "104"), ("3", "105"), ("3", "101")}
    assert ds.domains["books"].item_ids.tolist() == ["101", "104", "105"]

    rated = load_dataset(
        {"loader": "douban", "path": "douban3", "domains": ["books"], "min_rating": 4}, FIXTURES
    )
    assert rated.domain_names == ["books"]
    assert rows(rated, "books") == {
        ("1", "101"),
        ("1", "102"),
        ("2", "104"),
        ("3", "101"),
        ("4", "102"),
        ("5", "107"),
        ("5", "101"),
    }


def test_douban_missing_domain_file_names_path_and_release(tmp_path):
    shutil.copy(FIXTURES / "douban3" / "books.tsv", tmp_path / "books.tsv")
    config = parse_loader_config(
        {"loader": "douban", "path": str(tmp_path), "domains": ["books", "music"]}
    )
    missing = [p for p, _ in config.required_files(Path("/nowhere")) if not p.exists()]
    assert missing == [tmp_path / "music.tsv"]
    with pytest.raises(DataFileMissing) as info:
        get_loader("douban").load(config, Path("/nowhere"))
    message = str(info.value)
    assert message.startswith(f"missing data file {tmp_path / 'music.tsv'}: ")
    assert "GA-DTCDR" in message and "harness data fetch douban" in message
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.path == tmp_path / "music.tsv"


def test_douban_empty_directory_is_a_missing_file(tmp_path):
    with pytest.raises(DataFileMissing, match=r"books\.tsv"):
        load_dataset({"loader": "douban", "path": "."}, tmp_path)


# --- amazon (raw dumps) ----------------------------------------------------------------------


def _raw_amazon_rows() -> dict[str, list[tuple[str, str, float, int]]]:
    out = {}
    for domain, name in AmazonConfig.model_fields["files"].default_factory().items():
        with open(FIXTURES / "amazon_raw" / name) as handle:
            out[domain] = [
                (u, i, float(r), int(t)) for u, i, r, t in csv.reader(handle) if u != "user"
            ]
    return out


def test_amazon_no_drop_keeps_users_in_all_domains_and_latest_duplicate():
    ds = load_dataset(
        {"loader": "amazon", "path": "amazon_raw", "item_drop_fraction": 0.0}, FIXTURES
    )
    assert ds.domain_names == ["books", "movies", "electronics"]
    # C lacks electronics, D lacks movies: only A, B, E are in every domain.
    assert ds.user_ids.tolist() == ["A", "B", "E"]
    assert rows(ds, "books") == {("A", "b1"), ("A", "b2"), ("B", "b3"), ("E", "b5")}
    assert ds.domains["books"].item_ids.tolist() == ["b1", "b2", "b3", "b5"]  # b4 went with D
    books = ds.domains["books"]
    pairs = zip(books.users.tolist(), books.items.tolist(), strict=True)
    stamp = dict(zip(pairs, books.timestamps.tolist(), strict=True))
    assert stamp[(0, 0)] == 120  # (A, b1) rated at 100 and 120: the latest is kept
    assert rows(ds, "electronics") == {("A", "e1"), ("B", "e2"), ("E", "e3")}


def test_amazon_min_rating_and_any_users():
    rated = load_dataset(
        {"loader": "amazon", "path": "amazon_raw", "item_drop_fraction": 0.0, "min_rating": 3},
        FIXTURES,
    )
    assert rated.user_ids.tolist() == ["A", "B"]  # E's only book is rated 1
    loose = load_dataset(
        {"loader": "amazon", "path": "amazon_raw", "item_drop_fraction": 0.0, "keep_users": "any"},
        FIXTURES,
    )
    assert loose.user_ids.tolist() == ["A", "B", "C", "D", "E"]
    assert len(loose.domains["books"].users) == 6  # 7 rows, one duplicate pair


def test_amazon_item_drop_then_all_domain_users():
    fraction, seed = 0.4, 3
    ds = load_dataset(
        {
            "loader": "amazon",
            "path": "amazon_raw",
            "item_drop_fraction": fraction,
            "item_drop_seed": seed,
        },
        FIXTURES,
    )
    raw = _raw_amazon_rows()
    expected: dict[str, set[tuple[str, str]]] = {}
    for domain, domain_rows in raw.items():
        vocab = np.asarray(sorted({i for _, i, _, _ in domain_rows}), dtype=object)
        kept = set(drop_items(vocab, fraction, seed, domain).tolist())
        assert len(kept) == int((item_uniforms(vocab, seed, domain) >= fraction).sum())
        assert ds.source["items_after_drop"][domain] == {"before": len(vocab), "kept": len(kept)}
        expected[domain] = {(u, i) for u, i, _, _ in domain_rows if i in kept}
    common = set.intersection(*({u for u, _ in pairs} for pairs in expected.values()))
    for domain, pairs in expected.items():
        assert rows(ds, domain) == {(u, i) for u, i in pairs if u in common}
    assert set(ds.user_ids.tolist()) == common
    assert ds.source["order"] == ["read+min_rating", "drop_items", "dedupe", "keep_users"]


def test_drop_items_is_seeded_and_per_domain():
    vocab = np.asarray([f"i{k:03d}" for k in range(100)], dtype=object)
    kept = drop_items(vocab, 0.7, 0, "books")
    assert 15 <= len(kept) <= 45 and set(kept) <= set(vocab) and kept.tolist() == sorted(kept)
    assert drop_items(vocab, 0.7, 0, "books").tolist() == kept.tolist()
    assert drop_items(vocab, 0.7, 1, "books").tolist() != kept.tolist()
    assert drop_items(vocab, 0.7, 0, "movies").tolist() != kept.tolist()
    assert len(drop_items(vocab, 0.0, 0, "books")) == 100


def test_drop_items_fraction_is_close_on_a_large_vocabulary():
    vocab = np.asarray([f"B{k:09d}" for k in range(200_000)], dtype=object)
    kept = drop_items(vocab, 0.7, 0, "books")
    assert abs(len(kept) / len(vocab) - 0.3) < 0.005


def test_drop_items_one_item_more_or_less_changes_nothing_else():
    """The per-item hash: adding or removing one item never changes another item's fate
    (the old sorted-vocabulary permutation kept only ~38% of the same items)."""
    rng = np.random.default_rng(0)
    vocab = np.asarray(sorted({f"{rng.integers(10**9):010d}" for _ in range(5000)}), dtype=object)
    kept = set(drop_items(vocab, 0.7, 0, "books").tolist())
    plus = set(drop_items(np.append(vocab, "0000000000X"), 0.7, 0, "books").tolist())
    assert plus - {"0000000000X"} == kept
    for removed in (vocab[0], vocab[len(vocab) // 2], sorted(kept)[0]):
        minus = set(drop_items(vocab[vocab != removed], 0.7, 0, "books").tolist())
        assert minus == kept - {removed}
    # unicode and very long ids hash too, and the value depends on the id alone
    odd = np.asarray(["é" * 3, "x" * 5000, "书"], dtype=object)
    values = item_uniforms(odd, 0, "books")
    assert ((values >= 0) & (values < 1)).all()
    assert item_uniforms(odd[:1], 0, "books")[0] == values[0]
    # pinned values: the hash is part of the preprocessing contract
    assert item_uniforms(np.asarray(["B000001"], dtype=object), 0, "books")[0] == pytest.approx(
        PINNED_UNIFORM, abs=1e-12
    )


def test_amazon_missing_file_hint(tmp_path):
    config = parse_loader_config({"loader": "amazon", "path": "raw", "domains": ["books"]})
    [(path, _hint)] = config.required_files(tmp_path)
    assert path == tmp_path / "raw" / "ratings_Books.csv"
    with pytest.raises(DataFileMissing) as info:
        get_loader("amazon").load(config, tmp_path)
    message = str(info.value)
    assert str(tmp_path / "raw" / "ratings_Books.csv") in message
    assert "jmcauley.ucsd.edu/data/amazon" in message and "ratings only" in message


def test_amazon_rejects_explicit_and_bad_fraction():
    with pytest.raises(ValidationError):
        parse_loader_config({"loader": "amazon", "path": "x", "implicit": False})
    with pytest.raises(ValidationError):
        parse_loader_config({"loader": "amazon", "path": "x", "item_drop_fraction": 1.0})
    with pytest.raises(ValueError, match="no entry in files"):
        parse_loader_config({"loader": "amazon", "path": "x", "domains": ["toys"]}).required_files(
            Path(".")
        )


# --- amazon_pairs ----------------------------------------------------------------------------


def test_amazon_pairs_real_cloth_sport_original_test_file(amazon_pairs_home):
    ds = load_dataset(
        {
            "loader": "amazon_pairs",
            "path": "amazon-pairs",
            "pair": "cloth_sport",
            "test_file": "test_original",
        },
        amazon_pairs_home,
    )
    assert ds.domain_names == ["cloth", "sport"]
    assert ds.n_users == 9928
    for name, train_items, train_rows in (("cloth", 39008, 87829), ("sport", 30796, 92612)):
        domain = ds.domains[name]
        assert domain.timestamps is None
        assert len(domain.users) == train_rows
        assert len(np.unique(domain.items)) == train_items
        test = domain.fixed_test
        assert test is not None
        assert np.array_equal(np.sort(test.users), np.arange(9928))  # one item per user
        assert len(test.items) == 9928
        # the vocabulary covers test-only items too
        assert domain.n_items == len(np.union1d(np.unique(domain.items), test.items))
        assert domain.n_items > train_items
    assert ds.source["test_pairs_dropped_from_train"] == {"cloth": 0, "sport": 0}
    assert ds.source["fixed_test"] == "test_original.txt"
    # the data README: 24.1% / 16.1% of the test items are cold
    assert ds.source["cold_test_cases"] == {"cloth": 2388, "sport": 1602}  # = 9928 - len(test.txt)


def test_amazon_pairs_real_cloth_sport_default_is_disencdr_test_file(amazon_pairs_home):
    ds = load_dataset(
        {"loader": "amazon_pairs", "path": "amazon-pairs", "pair": "cloth_sport"},
        amazon_pairs_home,
    )
    assert ds.source["fixed_test"] == "test.txt"
    assert ds.source["cold_test_cases"] == {"cloth": 0, "sport": 0}
    for name, n_test in (("cloth", 7540), ("sport", 8326)):
        domain = ds.domains[name]
        assert len(domain.fixed_test.users) == n_test
        assert domain.n_items == len(np.unique(domain.items))  # no test-only item


def test_amazon_pairs_fixture_drops_test_pair_from_train():
    ds = load_dataset(
        {
            "loader": "amazon_pairs",
            "path": "amazon_pairs",
            "pair": "alpha_beta",
            "test_file": "test_original",
        },
        FIXTURES,
    )
    assert ds.source["test_pairs_dropped_from_train"] == {"alpha": 1, "beta": 0}
    assert rows(ds, "alpha") == {("0", "10"), ("0", "11"), ("1", "12"), ("2", "10")}
    alpha = ds.domains["alpha"]
    assert alpha.item_ids.tolist() == ["10", "11", "12", "13"]
    held = alpha.fixed_test
    test = dict(zip(ds.user_ids[held.users], alpha.item_ids[held.items], strict=True))
    assert test == {"0": "12", "1": "11", "2": "13"}
    assert alpha.n_interactions == 4 + 3
    assert ds.source["cold_test_cases"] == {"alpha": 1, "beta": 1}


def test_amazon_pairs_fixture_default_test_file_has_no_cold_item():
    ds = load_dataset(
        {"loader": "amazon_pairs", "path": "amazon_pairs", "pair": "alpha_beta"}, FIXTURES
    )
    alpha = ds.domains["alpha"]
    held = alpha.fixed_test
    test = dict(zip(ds.user_ids[held.users], alpha.item_ids[held.items], strict=True))
    assert test == {"0": "12", "1": "11"}  # user 2's cold item 13 is not evaluated
    assert alpha.item_ids.tolist() == ["10", "11", "12"]
    assert ds.source["cold_test_cases"] == {"alpha": 0, "beta": 0}


def test_amazon_pairs_missing_folder_and_bad_pair(tmp_path):
    with pytest.raises(DataFileMissing, match="DisenCDR") as info:
        load_dataset({"loader": "amazon_pairs", "path": ".", "pair": "cloth_sport"}, tmp_path)
    assert str(tmp_path / "cloth_sport" / "train.txt") in str(info.value)
    with pytest.raises(ValidationError):
        parse_loader_config({"loader": "amazon_pairs", "path": ".", "pair": "cloth"})


# --- generic interactions file ---------------------------------------------------------------


def test_interactions_csv_keeps_string_ids_and_latest_timestamp():
    ds = load_dataset({"loader": "interactions", "path": "interactions.csv"}, FIXTURES)
    assert ds.domain_names == ["books", "movies"]
    assert ds.user_ids.tolist() == ["u1", "u2", "u3"]
    books = ds.domains["books"]
    assert books.item_ids.tolist() == ["007", "008"]  # leading zeros survive
    assert len(books.users) == 3
    pairs = zip(books.users.tolist(), books.items.tolist(), strict=True)
    assert dict(zip(pairs, books.timestamps.tolist(), strict=True)) == {
        (0, 0): 30,
        (0, 1): 5,
        (1, 0): 12,
    }
    strict = load_dataset(
        {"loader": "interactions", "path": "interactions.csv", "keep_users": "all_domains"},
        FIXTURES,
    )
    assert strict.user_ids.tolist() == ["u1", "u2"]


def test_interactions_independent_of_row_order(tmp_path):
    lines = (FIXTURES / "interactions.csv").read_text().splitlines()
    (tmp_path / "interactions.csv").write_text("\n".join([lines[0], *lines[:0:-1]]) + "\n")
    a = load_dataset({"loader": "interactions", "path": "interactions.csv"}, FIXTURES)
    b = load_dataset({"loader": "interactions", "path": "interactions.csv"}, tmp_path)
    assert a.fingerprint() == b.fingerprint()


def test_interactions_parquet_with_column_mapping(tmp_path):
    frame = (
        pl.read_csv(FIXTURES / "interactions.csv", infer_schema=False)
        .rename({"user": "uid", "item": "iid", "domain": "category", "timestamp": "ts"})
        .with_columns(pl.col("ts").cast(pl.Int64))
    )
    frame.write_parquet(tmp_path / "log.parquet")
    ds = load_dataset(
        {
            "loader": "interactions",
            "path": "log.parquet",
            "domains": ["movies"],
            "columns": {"user": "uid", "item": "iid", "domain": "category", "timestamp": "ts"},
        },
        tmp_path,
    )
    assert ds.domain_names == ["movies"]
    assert rows(ds, "movies") == {("u2", "m1"), ("u3", "m1"), ("u3", "m2"), ("u1", "m2")}
    assert ds.domains["movies"].timestamps is not None


def test_interactions_missing_column_lists_available():
    with pytest.raises(ValueError, match=r"uid.*available columns: \['user', 'item'"):
        load_dataset(
            {"loader": "interactions", "path": "interactions.csv", "columns": {"user": "uid"}},
            FIXTURES,
        )
    with pytest.raises(ValueError, match="have no rows"):
        load_dataset(
            {"loader": "interactions", "path": "interactions.csv", "domains": ["music"]},
            FIXTURES,
        )


# --- statistics ------------------------------------------------------------------------------


def test_statistics_and_histogram_on_fixture():
    ds = load_dataset({"loader": "douban", "path": "douban3"}, FIXTURES)
    stats = dataset_statistics(ds)
    assert stats["domain"].to_list() == ["books", "movies", "music", "all"]
    books = stats.row(0, named=True)
    # books: users 1..5 with 3, 2, 2, 2, 3 ratings over 7 items
    assert (books["users"], books["items"], books["interactions"]) == (5, 7, 12)
    assert books["density"] == pytest.approx(12 / 35)
    assert (books["act_min"], books["act_median"], books["act_max"]) == (2, 2.0, 3)
    assert books["share_users_2"] == pytest.approx(3 / 5)
    assert books["share_users_le5"] == 1.0
    everything = stats.row(3, named=True)
    assert (everything["users"], everything["items"], everything["interactions"]) == (6, 15, 25)

    hist = activity_histogram(ds, edges=(1, 2, 3))
    assert hist.columns == ["domain", "bucket", "lo", "hi", "n_users"]
    assert hist.filter(pl.col("domain") == "books")["n_users"].to_list() == [0, 3, 2]
    assert hist.filter(pl.col("domain") == "movies")["bucket"].to_list() == ["1", "2", "3+"]
    per_domain = hist.group_by("domain").agg(pl.col("n_users").sum())
    assert dict(per_domain.iter_rows()) == {"books": 5, "movies": 4, "music": 5}


def test_statistics_count_fixed_test_items():
    ds = load_dataset(
        {
            "loader": "amazon_pairs",
            "path": "amazon_pairs",
            "pair": "alpha_beta",
            "test_file": "test_original",
        },
        FIXTURES,
    )
    alpha = dataset_statistics(ds).row(0, named=True)
    assert (alpha["users"], alpha["interactions"]) == (3, 7)
    # Table 1 shows cold-item test cases whenever there are any, and only then
    stats = dataset_statistics(ds)
    assert stats["cold_test_cases"].to_list() == [
        *ds.source["cold_test_cases"].values(),
        sum(ds.source["cold_test_cases"].values()),
    ]
    assert sum(ds.source["cold_test_cases"].values()) > 0
    warm = load_dataset(
        {"loader": "amazon_pairs", "path": "amazon_pairs", "pair": "alpha_beta"}, FIXTURES
    )
    assert "cold_test_cases" not in dataset_statistics(warm).columns
