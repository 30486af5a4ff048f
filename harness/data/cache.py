"""On-disk cache of loaded, preprocessed datasets, so a no-op rerun or ``harness plan`` does not
re-read and re-process the raw dumps.

A cache entry is one ``.npz`` file (numpy arrays only, read with ``allow_pickle=False``; the
string vocabularies are stored as fixed-width unicode arrays and the small metadata as a JSON
string), named by a key over:

* the loader name and its fully validated options (``model_dump``),
* every raw file the loader reads (``config.required_files``): resolved path, size,
  ``mtime_ns``, and a SHA-256 of the content for files up to :data:`HASH_LIMIT` bytes (bigger
  ones are identified by size and modification time),
* the source code of the data layer (loaders, dataset model, this module), so a changed
  loader never serves an entry it would no longer produce.

Touching or changing a file, or changing an option, changes the key: the stale entry is simply
never read again (:func:`prune` removes entries of the same dataset). Loaders that read no file
(``synthetic``) are not cached. The entry stores the dataset's fingerprint and loading checks
it, so a cached dataset has the ``Dataset.fingerprint()`` of a fresh load.

Where: ``HARNESS_CACHE_DIR`` if set (``off`` disables the cache), else
``~/.cache/cdr-harness/datasets``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from harness.data.dataset import Dataset, DomainData, HeldOut

__all__ = [
    "ENV_VAR",
    "HASH_LIMIT",
    "cache_dir",
    "cache_key",
    "cached_load",
    "file_fingerprint",
    "load_entry",
    "prune",
    "save_entry",
]

ENV_VAR = "HARNESS_CACHE_DIR"
#: Files up to this size are identified by a content hash too; bigger ones by size + mtime.
HASH_LIMIT = 64 * 1024 * 1024
FORMAT = 1
_DATA_DIR = Path(__file__).resolve().parent


def cache_dir(explicit: Path | str | None = None) -> Path | None:
    """The cache folder: ``explicit``, else ``$HARNESS_CACHE_DIR``, else the user cache;
    None when disabled (``off``, ``none`` or an empty value)."""
    value = str(explicit) if explicit is not None else os.environ.get(ENV_VAR)
    if value is None:
        return Path.home() / ".cache" / "cdr-harness" / "datasets"
    if value.strip().lower() in ("", "off", "none", "0"):
        return None
    return Path(value).expanduser()


def file_fingerprint(path: Path, hash_limit: int = HASH_LIMIT) -> dict[str, object]:
    """Resolved path, size, mtime_ns and (for files up to ``hash_limit`` bytes) a SHA-256."""
    path = Path(path).resolve()
    stat = path.stat()
    record: dict[str, object] = {
        "path": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    if stat.st_size <= hash_limit:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        record["sha256"] = digest.hexdigest()
    return record


@functools.cache
def _code_version() -> str:
    """Hash of the data layer's source: loaders, dataset model and this module."""
    digest = hashlib.sha256()
    files = sorted((_DATA_DIR / "loaders").glob("*.py"))
    files += [_DATA_DIR / "dataset.py", _DATA_DIR / "synthetic.py", Path(__file__).resolve()]
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(
    loader: str, config: BaseModel, files: list[Path], hash_limit: int = HASH_LIMIT
) -> tuple[str, str]:
    """(dataset key, entry key): the first names the dataset (loader, options, file paths),
    the second also pins the files' fingerprints and the code version."""
    options = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    paths = [str(Path(f).resolve()) for f in files]
    dataset_key = hashlib.sha256(json.dumps([loader, options, paths]).encode()).hexdigest()[:16]
    payload = {
        "format": FORMAT,
        "code": _code_version(),
        "dataset": dataset_key,
        "files": [file_fingerprint(f, hash_limit) for f in files],
    }
    entry = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    return dataset_key, entry


def _strings(values: np.ndarray) -> np.ndarray:
    """Fixed-width unicode (no pickling needed); empty arrays keep a valid dtype."""
    return np.asarray([str(v) for v in values.tolist()], dtype=np.str_).reshape(len(values))


def _objects(values: np.ndarray) -> np.ndarray:
    """Back to the loaders' object arrays of Python ``str``."""
    out = np.empty(len(values), dtype=object)
    out[:] = values.tolist()
    return out


def save_entry(path: Path, dataset: Dataset) -> None:
    """Write ``dataset`` to ``path`` atomically (temporary file, then rename)."""
    arrays: dict[str, np.ndarray] = {"user_ids": _strings(dataset.user_ids)}
    domains = []
    for index, (name, domain) in enumerate(dataset.domains.items()):
        prefix = f"d{index}_"
        arrays[prefix + "item_ids"] = _strings(domain.item_ids)
        # Numeric arrays keep their dtype (np.save needs no pickle for them).
        arrays[prefix + "users"] = np.asarray(domain.users)
        arrays[prefix + "items"] = np.asarray(domain.items)
        if domain.timestamps is not None:
            arrays[prefix + "timestamps"] = np.asarray(domain.timestamps)
        if domain.fixed_test is not None:
            arrays[prefix + "test_users"] = np.asarray(domain.fixed_test.users)
            arrays[prefix + "test_items"] = np.asarray(domain.fixed_test.items)
        domains.append(
            {
                "name": name,
                "timestamps": domain.timestamps is not None,
                "fixed_test": domain.fixed_test is not None,
            }
        )
    meta = {
        "format": FORMAT,
        "name": dataset.name,
        "source": dataset.source,
        "domains": domains,
        "fingerprint": dataset.fingerprint(),
    }
    arrays["meta"] = np.asarray(json.dumps(meta, default=str))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_entry(path: Path, verify: bool = False) -> Dataset:
    """Read an entry written by :func:`save_entry`; ``verify`` recomputes the fingerprint."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"cache entry {path} has format {meta.get('format')}")
        domains = {}
        for index, info in enumerate(meta["domains"]):
            prefix = f"d{index}_"
            fixed = None
            if info["fixed_test"]:
                fixed = HeldOut(z[prefix + "test_users"], z[prefix + "test_items"])
            domains[info["name"]] = DomainData(
                info["name"],
                _objects(z[prefix + "item_ids"]),
                z[prefix + "users"],
                z[prefix + "items"],
                z[prefix + "timestamps"] if info["timestamps"] else None,
                fixed,
            )
        dataset = Dataset(meta["name"], _objects(z["user_ids"]), domains, meta["source"])
    if verify and dataset.fingerprint() != meta["fingerprint"]:
        raise ValueError(f"cache entry {path} does not reproduce its fingerprint")
    return dataset


def prune(folder: Path, dataset_key: str, keep: str) -> None:
    """Remove the other entries of one dataset (older file versions or code)."""
    for stale in folder.glob(f"{dataset_key}-*.npz"):
        if stale.name != f"{dataset_key}-{keep}.npz":
            stale.unlink(missing_ok=True)


def cached_load(
    loader: str,
    config: BaseModel,
    files: list[Path],
    load: Callable[[], Dataset],
    folder: Path | str | None = None,
) -> tuple[Dataset, str]:
    """``load()`` through the cache; returns (dataset, 'hit' | 'miss' | 'off').

    ``files`` are the raw files ``load`` reads. With no files or no cache folder, ``load()``
    is called directly. A hit returns the stored dataset; an unreadable entry counts as a
    miss and is rewritten.
    """
    where = cache_dir(folder)
    existing = [Path(f) for f in files if Path(f).is_file()]
    if where is None or not existing or len(existing) != len(files):
        return load(), "off"  # missing files: let the loader raise its own error
    dataset_key, entry = cache_key(loader, config, existing)
    path = where / f"{dataset_key}-{entry}.npz"
    if path.is_file():
        try:
            return load_entry(path), "hit"
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    dataset = load()
    try:
        save_entry(path, dataset)
        prune(where, dataset_key, entry)
    except OSError:
        pass  # a read-only or full cache never fails a run
    return dataset, "miss"
