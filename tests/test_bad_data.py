"""Malformed data files across the loaders: each is one line naming file, line and problem
with exit 3 (through the CLI), or a documented accepted form with the expected content."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.data.loaders import load_dataset
from harness.data.loaders._common import DataError

GOOD_DOUBAN = "1\t10\t5\n1\t11\t4\n2\t10\t3\n"
GOOD_AMAZON = "A,b1,5.0,100\nA,b2,4.0,110\nB,b1,3.0,120\n"
GOOD_PAIRS = "0\t5\t1\n0\t6\t1\n1\t5\t1\n1\t7\t1\n"
GOOD_PAIRS_TEST = "0\t7\t1\n1\t6\t1\n"
GOOD_INTERACTIONS = "user,item,domain,timestamp\nu1,i1,books,10\nu2,i1,books,11\n"

LOADER_OPTIONS = {
    "douban": 'loader = "douban"\npath = "data"\ndomains = ["books"]\n',
    "amazon": (
        'loader = "amazon"\npath = "data"\nfiles = { books = "ratings.csv" }\n'
        'item_drop_fraction = 0.0\nkeep_users = "any"\n'
    ),
    "amazon_pairs": 'loader = "amazon_pairs"\npath = "data"\npair = "a_b"\n',
    "interactions": 'loader = "interactions"\npath = "data/x.csv"\n',
}
MAIN_FILE = {
    "douban": "data/books.tsv",
    "amazon": "data/ratings.csv",
    "amazon_pairs": "data/a_b/train.txt",
    "interactions": "data/x.csv",
}


def write_case(tmp_path: Path, loader: str, files: dict[str, str | bytes], extra: str = "") -> Path:
    """Write the loader's good files, override ``files``, and a spec; return the spec path."""
    defaults: dict[str, str | bytes] = {
        "douban": {"data/books.tsv": GOOD_DOUBAN},
        "amazon": {"data/ratings.csv": GOOD_AMAZON},
        "amazon_pairs": {
            "data/a_b/train.txt": GOOD_PAIRS,
            "data/a_b/test.txt": GOOD_PAIRS_TEST,
            "data/b_a/train.txt": GOOD_PAIRS,
            "data/b_a/test.txt": GOOD_PAIRS_TEST,
        },
        "interactions": {"data/x.csv": GOOD_INTERACTIONS},
    }[loader]
    for name, content in {**defaults, **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes(content.encode())
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[experiment]\nname = "bad"\nseeds = [0]\n\n[datasets.d]\n'
        + LOADER_OPTIONS[loader]
        + extra
        + "\n[protocol]\nnegatives = 1\nks = [1]\nvalidation_k = 1\n\n"
        '[methods.pop]\nkind = "popularity"\n'
    )
    return spec


def main_file(tmp_path: Path, loader: str, files: dict) -> Path:
    return tmp_path / (next(iter(files)) if files else MAIN_FILE[loader])


# (id, loader, files, expected line, fragment of the problem)
REJECTED = [
    ("douban-empty", "douban", {"data/books.tsv": ""}, 1, "empty file"),
    ("douban-blank-only", "douban", {"data/books.tsv": "\n\n  \n"}, 1, "no data rows"),
    ("douban-header-only", "douban", {"data/books.tsv": "user\titem\trating\n"}, 2, "header"),
    (
        "douban-missing-rating",
        "douban",
        {"data/books.tsv": GOOD_DOUBAN + "1217\t99999999\n"},
        4,
        "too few fields",
    ),
    ("douban-too-many", "douban", {"data/books.tsv": "1\t10\t5\t7\n"}, 1, "too many fields"),
    ("douban-binary", "douban", {"data/books.tsv": b"1\t10\t5\n\x00\x01\x02\xff"}, 2, "binary"),
    ("douban-bad-utf8", "douban", {"data/books.tsv": b"1\t10\t5\n\xff\xfe\t1\t2\n"}, 2, "UTF-8"),
    ("douban-comma", "douban", {"data/books.tsv": "1,10,5\n2,10,4\n"}, 1, "wrong delimiter"),
    ("douban-spaces", "douban", {"data/books.tsv": "1 10 5\n"}, 1, "wrong delimiter"),
    (
        "douban-rating-word",
        "douban",
        {"data/books.tsv": GOOD_DOUBAN + "3\t12\tfive\n"},
        4,
        "rating is not a number",
    ),
    ("douban-rating-nan", "douban", {"data/books.tsv": "1\t10\tnan\n"}, 1, "not a number"),
    ("douban-rating-empty", "douban", {"data/books.tsv": "1\t10\t5\n1\t11\t\n"}, 2, "not a number"),
    ("douban-empty-user", "douban", {"data/books.tsv": "1\t10\t5\n\t11\t4\n"}, 2, "empty user_id"),
    ("douban-control-char", "douban", {"data/books.tsv": "1\t1\x070\t5\n"}, 1, "control"),
    (
        "douban-unit-separator",
        "douban",
        {"data/books.tsv": "1\t10\t5\n2\t10\t5\x1fjunk\n"},
        2,
        "binary",
    ),
    ("douban-bad-after-blank", "douban", {"data/books.tsv": "1\t10\t5\n\n\n2\t10\n"}, 4, "too few"),
    ("amazon-empty", "amazon", {"data/ratings.csv": ""}, 1, "empty file"),
    (
        "amazon-3-fields",
        "amazon",
        {"data/ratings.csv": GOOD_AMAZON + "C,b1,5.0\n"},
        4,
        "too few fields",
    ),
    ("amazon-5-fields", "amazon", {"data/ratings.csv": "A,b1,5.0,100,x\n"}, 1, "too many"),
    (
        "amazon-rating-five",
        "amazon",
        {"data/ratings.csv": GOOD_AMAZON + "C,b1,five,130\n"},
        4,
        "rating is not a number",
    ),
    (
        "amazon-timestamp-word",
        "amazon",
        {"data/ratings.csv": "A,b1,5.0,notanumber\n"},
        1,
        "timestamp is not an integer",
    ),
    (
        "amazon-timestamp-missing",
        "amazon",
        {"data/ratings.csv": "A,b1,5.0,100\nB,b2,3.0,\n"},
        2,
        "timestamp is not an integer",
    ),
    (
        "amazon-timestamp-float",
        "amazon",
        {"data/ratings.csv": "A,b1,5.0,1.5e9\n"},
        1,
        "timestamp is not an integer",
    ),
    (
        "amazon-timestamp-huge",
        "amazon",
        {"data/ratings.csv": "A,b1,5,99999999999999999999\n"},
        1,
        "timestamp is not an integer",
    ),
    (
        "amazon-binary",
        "amazon",
        {"data/ratings.csv": GOOD_AMAZON.encode() + b"\x00\x9c\x12junk"},
        4,
        "binary",
    ),
    ("amazon-tabs", "amazon", {"data/ratings.csv": "A\tb1\t5.0\t100\n"}, 1, "wrong delimiter"),
    (
        "pairs-train-2-fields",
        "amazon_pairs",
        {"data/a_b/train.txt": GOOD_PAIRS + "2\t5\n"},
        5,
        "too few",
    ),
    (
        "pairs-test-two-items",
        "amazon_pairs",
        {"data/b_a/test.txt": "0\t7\t1\n0\t6\t1\n"},
        2,
        "second test item",
    ),
    ("pairs-test-empty", "amazon_pairs", {"data/a_b/test.txt": ""}, 1, "empty file"),
    ("pairs-train-spaces", "amazon_pairs", {"data/a_b/train.txt": "0 5 1\n"}, 1, "delimiter"),
    ("pairs-label-word", "amazon_pairs", {"data/a_b/train.txt": "0\t5\tyes\n"}, 1, "not a number"),
    (
        "interactions-ragged",
        "interactions",
        {"data/x.csv": GOOD_INTERACTIONS + "u3,i2\n"},
        4,
        "too few",
    ),
    (
        "interactions-extra-field",
        "interactions",
        {"data/x.csv": GOOD_INTERACTIONS + "u3,i2,books,12,9\n"},
        4,
        "too many",
    ),
    (
        "interactions-empty-domain",
        "interactions",
        {"data/x.csv": GOOD_INTERACTIONS + "u3,i2,,12\n"},
        4,
        "empty domain",
    ),
    (
        "interactions-timestamp-word",
        "interactions",
        {"data/x.csv": GOOD_INTERACTIONS + "u3,i2,books,yesterday\n"},
        4,
        "not an integer",
    ),
    ("interactions-empty", "interactions", {"data/x.csv": ""}, 1, "empty file"),
    (
        "interactions-header-only",
        "interactions",
        {"data/x.csv": "user,item,domain\n"},
        2,
        "header only",
    ),
    ("interactions-binary", "interactions", {"data/x.csv": b"\x00\x00\x01PK"}, 1, "binary"),
]


@pytest.mark.parametrize(
    ("loader", "files", "line", "fragment"),
    [case[1:] for case in REJECTED],
    ids=[case[0] for case in REJECTED],
)
def test_malformed_file_is_one_line_with_file_and_line_exit_3(
    tmp_path, loader, files, line, fragment
):
    spec = write_case(tmp_path, loader, files)
    result = CliRunner().invoke(app, ["data", "stats", str(spec)])
    lines = [text for text in result.output.splitlines() if text.strip()]
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.output
    path = main_file(tmp_path, loader, files)
    assert f"{path}:{line}:" in lines[0], lines[0]
    assert fragment in lines[0], lines[0]


def test_douban_missing_rating_never_becomes_an_interaction(tmp_path):
    """`1217<TAB>99999999` used to be read as user 1217 with a new item 99999999."""
    spec = write_case(tmp_path, "douban", {"data/books.tsv": "1217\t99999999\n" + GOOD_DOUBAN})
    with pytest.raises(DataError) as info:
        load_dataset({"loader": "douban", "path": "data", "domains": ["books"]}, spec.parent)
    assert info.value.line == 1 and "too few fields" in info.value.problem


def _douban(tmp_path: Path, content: str | bytes, **options) -> object:
    write_case(tmp_path, "douban", {"data/books.tsv": content})
    config = {"loader": "douban", "path": "data", "domains": ["books"], **options}
    return load_dataset(config, tmp_path)


def _pairs(ds) -> set[tuple[str, str]]:
    domain = next(iter(ds.domains.values()))
    return {
        (ds.user_ids[u], domain.item_ids[i])
        for u, i in zip(domain.users.tolist(), domain.items.tolist(), strict=True)
    }


EXPECTED_GOOD = {("1", "10"), ("1", "11"), ("2", "10")}

# Documented accepted forms: (id, content) that must load exactly like GOOD_DOUBAN.
ACCEPTED = [
    ("crlf", GOOD_DOUBAN.replace("\n", "\r\n")),
    ("header", "user_id\titem_id\trating\n" + GOOD_DOUBAN),
    ("no-final-newline", GOOD_DOUBAN.rstrip("\n")),
    ("blank-lines", "\n" + GOOD_DOUBAN.replace("\n", "\n\n", 1) + "\n\n"),
    ("duplicate-rows", GOOD_DOUBAN + "1\t10\t5\n2\t10\t3\n"),
    ("padded-fields", " 1 \t 10\t5 \n1\t11\t4.0\n2\t10\t3\n"),
]


@pytest.mark.parametrize("content", [c for _, c in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_documented_accepted_forms(tmp_path, content):
    ds = _douban(tmp_path, content)
    assert _pairs(ds) == EXPECTED_GOOD


def test_unicode_and_huge_ids_stay_strings(tmp_path):
    huge = "9" * 40
    ds = _douban(tmp_path, f"用户\t书{huge}\t5\n{huge}\té\t4\n")
    assert _pairs(ds) == {("用户", f"书{huge}"), (huge, "é")}


def test_skip_mode_counts_bad_rows_in_source_and_stats(tmp_path):
    content = GOOD_DOUBAN + "1217\t99999999\n3\t12\tfive\n4\t13\t2\t9\n"
    ds = _douban(tmp_path, content, on_bad_rows="skip")
    assert _pairs(ds) == EXPECTED_GOOD
    assert ds.source["on_bad_rows"] == "skip"
    assert ds.source["bad_rows"] == {
        "books.tsv": {
            "rating is not a number": 1,
            "too few fields: expected 3 (user_id<TAB>item_id<TAB>rating)": 1,
            "too many fields: expected 3 (user_id<TAB>item_id<TAB>rating)": 1,
        }
    }
    assert ds.funnel["books"]["rows_read"] == 6
    # the default (error) leaves no trace in source, so fingerprints of good data never move
    good = _douban(tmp_path / "g", GOOD_DOUBAN)
    assert "bad_rows" not in good.source and "on_bad_rows" not in good.source
    spec = write_case(
        tmp_path / "s", "douban", {"data/books.tsv": content}, 'on_bad_rows = "skip"\n'
    )
    result = CliRunner().invoke(app, ["data", "stats", str(spec)])
    assert result.exit_code == 0, result.output
    assert re.search(r"rows_rejected\W+3", result.output), result.output
    assert "too few fields" in result.output


def test_amazon_rows_are_validated_even_without_min_rating(tmp_path):
    write_case(tmp_path, "amazon", {"data/ratings.csv": '"A","b1","5.0","100"\n' + GOOD_AMAZON})
    config = {
        "loader": "amazon",
        "path": "data",
        "files": {"books": "ratings.csv"},
        "item_drop_fraction": 0.0,
        "keep_users": "any",
    }
    ds = load_dataset(config, tmp_path)  # quoted fields are a documented accepted form
    assert _pairs(ds) == {("A", "b1"), ("A", "b2"), ("B", "b1")}
    (tmp_path / "data" / "ratings.csv").write_text(GOOD_AMAZON + "C,b3,five,1\n")
    with pytest.raises(DataError, match=r"ratings.csv:4: rating is not a number \('five'\)"):
        load_dataset(config, tmp_path)
    skipped = load_dataset({**config, "on_bad_rows": "skip"}, tmp_path)
    assert skipped.source["bad_rows"] == {"ratings.csv": {"rating is not a number": 1}}
    assert skipped.funnel["books"]["rows_rejected"] == {"malformed: rating is not a number": 1}


def test_missing_column_is_a_spec_line_naming_the_data_file(tmp_path):
    """A CSV without a mapped column: the spec's `columns` mapping is what to fix, so it is a
    spec problem (exit 2) at the dataset's line, naming the data file and its columns."""
    spec = write_case(tmp_path, "interactions", {"data/x.csv": "user,item,timestamp\nu1,i1,5\n"})
    result = CliRunner().invoke(app, ["data", "stats", str(spec)])
    lines = [text for text in result.output.splitlines() if text.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"{spec}:" in lines[0] and "x.csv: missing columns domain" in lines[0]


def test_validate_reads_the_data_and_reports_bad_rows_with_exit_3(tmp_path):
    spec = write_case(tmp_path, "douban", {"data/books.tsv": GOOD_DOUBAN + "7\t8\n"})
    result = CliRunner().invoke(app, ["validate", str(spec)])
    lines = [text for text in result.output.splitlines() if text.strip()]
    assert result.exit_code == 3 and len(lines) == 1, result.output
    assert f"{tmp_path / 'data' / 'books.tsv'}:4: too few fields" in lines[0]


def test_data_stats_prints_the_amazon_funnel(tmp_path):
    rows = "".join(
        f"U{u},I{i},{1 + (u + i) % 5}.0,{1000 + u}\n" for u in range(30) for i in range(8)
    )
    spec = write_case(
        tmp_path,
        "amazon",
        {"data/ratings.csv": rows + "X,I1,five,1\n"},
        'on_bad_rows = "skip"\nmin_rating = 2.0\n',
    )
    spec.write_text(
        spec.read_text().replace("item_drop_fraction = 0.0", "item_drop_fraction = 0.5")
    )
    result = CliRunner().invoke(app, ["data", "stats", str(spec)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert re.search(r"rows_read\W+241\b", text), text
    assert re.search(r"rows_rejected\W+49\b", text), text  # 48 ratings of 1 + 1 malformed
    assert re.search(r"rejected: rating < min_rating 2.0\W+48\b", text), text
    assert re.search(r"rejected: malformed: rating is not a number\W+1\b", text), text
    assert re.search(r"items_before_drop\W+8\b", text) and "items_after_drop" in text
