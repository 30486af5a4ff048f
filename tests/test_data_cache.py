"""Prepared-dataset cache: a hit reproduces the dataset and its fingerprint; touching or changing
a raw file, or changing a loader option, is a miss; the runner's loading goes through it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.data import cache
from harness.data.loaders import get_loader, parse_loader_config

FIXTURES = Path(__file__).parent / "fixtures"


def _load(raw: dict, base: Path, folder: Path | None):
    config = parse_loader_config(raw)
    files = [p for p, _ in config.required_files(base)]
    loader = get_loader(config.loader)
    calls = []

    def load():
        calls.append(1)
        return loader.load(config, base)

    dataset, status = cache.cached_load(config.loader, config, files, load, folder)
    return dataset, status, len(calls)


def _same(a, b) -> None:
    assert a.fingerprint() == b.fingerprint()
    assert a.name == b.name and a.source == b.source
    assert a.user_ids.dtype == b.user_ids.dtype == object
    assert a.user_ids.tolist() == b.user_ids.tolist()
    assert list(a.domains) == list(b.domains)
    for name, d in a.domains.items():
        e = b.domains[name]
        assert d.item_ids.tolist() == e.item_ids.tolist()
        for x, y in ((d.users, e.users), (d.items, e.items), (d.timestamps, e.timestamps)):
            assert (x is None) == (y is None)
            if x is not None:
                assert x.dtype == y.dtype and np.array_equal(x, y)
        assert (d.fixed_test is None) == (e.fixed_test is None)
        if d.fixed_test is not None:
            assert np.array_equal(d.fixed_test.users, e.fixed_test.users)
            assert np.array_equal(d.fixed_test.items, e.fixed_test.items)


@pytest.mark.parametrize(
    "raw",
    [
        {"loader": "douban", "path": "douban3", "keep_users": "all_domains"},
        {"loader": "amazon", "path": "amazon_raw", "item_drop_fraction": 0.5},
        {"loader": "amazon_pairs", "path": "amazon_pairs", "pair": "alpha_beta"},
        {"loader": "interactions", "path": "interactions.csv"},
    ],
)
def test_hit_reproduces_the_dataset_and_its_fingerprint(raw, tmp_path):
    fresh, status, calls = _load(raw, FIXTURES, tmp_path)
    assert (status, calls) == ("miss", 1)
    cached, status, calls = _load(raw, FIXTURES, tmp_path)
    assert (status, calls) == ("hit", 0)
    _same(fresh, cached)
    entries = list(tmp_path.glob("*.npz"))
    assert len(entries) == 1
    cache.load_entry(entries[0], verify=True)  # the stored fingerprint is reproduced


def _douban_copy(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "douban3", data)
    return data


def test_touching_or_changing_a_file_invalidates(tmp_path):
    data, folder = _douban_copy(tmp_path), tmp_path / "cache"
    raw = {"loader": "douban", "path": str(data)}
    first, status, _ = _load(raw, tmp_path, folder)
    assert status == "miss"
    assert _load(raw, tmp_path, folder)[1] == "hit"
    books = data / "books.tsv"
    stat = books.stat()
    os.utime(books, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touch only
    assert _load(raw, tmp_path, folder)[1:] == ("miss", 1)
    assert len(list(folder.glob("*.npz"))) == 1  # the stale entry is pruned
    lines = books.read_text().splitlines(keepends=True)
    books.write_text("".join(lines[:-1]))  # drop one rating
    changed, status, calls = _load(raw, tmp_path, folder)
    assert (status, calls) == ("miss", 1)
    assert changed.fingerprint() != first.fingerprint()
    assert _load(raw, tmp_path, folder)[1] == "hit"


def test_big_files_are_keyed_by_size_and_mtime(tmp_path):
    data = _douban_copy(tmp_path)
    config = parse_loader_config({"loader": "douban", "path": str(data)})
    books = data / "books.tsv"
    assert set(cache.file_fingerprint(books, hash_limit=0)) == {"path", "size", "mtime_ns"}
    assert "sha256" in cache.file_fingerprint(books)
    by_stat = cache.cache_key("douban", config, [books], hash_limit=0)
    by_content = cache.cache_key("douban", config, [books])
    stat = books.stat()
    books.write_text(books.read_text().replace("\t5", "\t4", 1))  # same size, new content
    os.utime(books, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and the old mtime
    assert books.stat().st_size == stat.st_size
    # Above the hash limit only size and mtime count; below it the content hash sees it.
    assert cache.cache_key("douban", config, [books], hash_limit=0) == by_stat
    assert cache.cache_key("douban", config, [books]) != by_content


def test_a_changed_option_is_a_different_entry(tmp_path):
    raw = {"loader": "douban", "path": "douban3"}
    assert _load(raw, FIXTURES, tmp_path)[1] == "miss"
    other = raw | {"min_rating": 4}
    filtered, status, calls = _load(other, FIXTURES, tmp_path)
    assert (status, calls) == ("miss", 1)
    assert _load(other, FIXTURES, tmp_path)[1] == "hit"
    assert _load(raw, FIXTURES, tmp_path)[1] == "hit"  # both entries live side by side
    assert len(list(tmp_path.glob("*.npz"))) == 2
    assert filtered.fingerprint() != _load(raw, FIXTURES, tmp_path)[0].fingerprint()


def test_disabled_missing_files_and_file_less_loaders_bypass_the_cache(tmp_path, monkeypatch):
    raw = {"loader": "douban", "path": "douban3"}
    monkeypatch.setenv(cache.ENV_VAR, "off")
    assert cache.cache_dir() is None
    assert _load(raw, FIXTURES, None)[1:] == ("off", 1)
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "env"))
    assert cache.cache_dir() == tmp_path / "env"
    assert _load(raw, FIXTURES, None)[1] == "miss"
    assert _load(raw, FIXTURES, None)[1] == "hit"
    synthetic = {"loader": "synthetic", "preset": "quickstart"}
    assert _load(synthetic, FIXTURES, tmp_path / "s")[1:] == ("off", 1)
    with pytest.raises(FileNotFoundError):
        _load({"loader": "douban", "path": str(tmp_path / "absent")}, FIXTURES, tmp_path)


def test_a_corrupt_entry_is_a_miss_and_is_rewritten(tmp_path):
    raw = {"loader": "douban", "path": "douban3"}
    fresh = _load(raw, FIXTURES, tmp_path)[0]
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"not an npz")
    again, status, calls = _load(raw, FIXTURES, tmp_path)
    assert (status, calls) == ("miss", 1)
    _same(fresh, again)
    assert _load(raw, FIXTURES, tmp_path)[1] == "hit"


def test_runner_loading_goes_through_the_cache(tmp_path, monkeypatch):
    from harness.runner.prepare import load_dataset
    from harness.spec.load import load_spec

    data = _douban_copy(tmp_path)
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f"""[experiment]
name = "cached"
seeds = [0]

[datasets.douban]
loader = "douban"
path = "{data}"

[methods.pop]
kind = "popularity"
"""
    )
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "cache"))
    loaded = load_spec(spec)
    first = load_dataset(loaded, "douban")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    calls = []

    class Counting:
        def load(self, config, base_dir):
            calls.append(1)
            return get_loader("douban").load(config, base_dir)

    monkeypatch.setattr("harness.runner.prepare.get_loader", lambda name: Counting())
    second = load_dataset(loaded, "douban")
    assert calls == []  # served from the cache
    assert second.fingerprint() == first.fingerprint()
