"""The data home: the folder registered datasets are read from and fetched into.

``$HARNESS_DATA`` when set, else the user cache folder (``platformdirs``; on Linux
``~/.cache/cdr-harness/data``). Its layout is ``<entry folder>/<file path>``
(``douban/books.tsv``, ``amazon-pairs/cloth_sport/train.txt``), the layout of a mirror too.

Each entry's folder also keeps ``.harness-checked.json``: size, mtime and hash of every file
once verified, so ``harness data list`` re-hashes only files that changed, and the recorded
SHA-256 of unpinned files (their first download pins them locally).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.data.registry import DatasetEntry, RemoteFile

__all__ = [
    "DATA_ENV",
    "MIRROR_ENV",
    "FileState",
    "data_home",
    "entry_dir",
    "entry_states",
    "expected_digest",
    "fetch_command",
    "file_digest",
    "file_state",
    "git_blob_id",
    "record_verified",
    "registered_files",
]

DATA_ENV = "HARNESS_DATA"
MIRROR_ENV = "HARNESS_DATA_MIRROR"
_CHECKED = ".harness-checked.json"
_CHUNK = 1 << 20

State = Literal["present", "missing", "corrupt", "unpinned"]


def data_home() -> Path:
    """``$HARNESS_DATA``, else the user cache folder's ``data``; not created here."""
    explicit = os.environ.get(DATA_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("cdr-harness")) / "data"


def entry_dir(entry: DatasetEntry, home: Path | None = None) -> Path:
    return (home or data_home()) / entry.folder


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks (``git_blob``: git's blob SHA-1)."""
    if algorithm == "git_blob":
        return git_blob_id(path)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_id(path: Path) -> str:
    """The id git gives a file's content: SHA-1 over ``blob <size>\\0`` and the bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_digest(remote: RemoteFile) -> tuple[str, str] | None:
    """(algorithm, hex digest) a file must have, SHA-256 preferred; None when unpinned."""
    if remote.sha256:
        return "sha256", remote.sha256
    if remote.git_blob:
        return "git_blob", remote.git_blob
    return None


@dataclass(frozen=True)
class FileState:
    remote: RemoteFile
    path: Path
    state: State
    detail: str = ""


def _checked(folder: Path) -> dict[str, dict]:
    try:
        return json.loads((folder / _CHECKED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def record_verified(folder: Path, remote: RemoteFile, path: Path, sha256: str) -> None:
    """Remember that ``path`` was verified against its pin (size, mtime, SHA-256, the pin);
    best effort: a read-only data home, such as a shared mirror, simply re-hashes next time."""
    records = _checked(folder)
    stat = path.stat()
    pin = expected_digest(remote)
    records[remote.path] = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256,
        "pin": pin[1] if pin else None,
    }
    try:
        tmp = folder / f"{_CHECKED}.tmp"
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, folder / _CHECKED)
    except OSError:
        pass


def file_state(entry: DatasetEntry, remote: RemoteFile, home: Path | None = None) -> FileState:
    """Whether a registered file is in the data home with the pinned content."""
    folder = entry_dir(entry, home)
    path = folder / remote.path
    if not path.is_file():
        return FileState(remote, path, "missing")
    stat = path.stat()
    if remote.size is not None and stat.st_size != remote.size:
        return FileState(remote, path, "corrupt", f"{stat.st_size} bytes, expected {remote.size}")
    known = _checked(folder).get(remote.path)
    fresh = bool(known) and (known["size"], known["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    pin = expected_digest(remote)
    if pin is None:
        if fresh:
            return FileState(remote, path, "unpinned", f"sha256 {known['sha256']}")
        return FileState(remote, path, "unpinned", "not yet hashed")
    algorithm, wanted = pin
    if fresh and known.get("pin") == wanted:
        return FileState(remote, path, "present")
    found = file_digest(path, algorithm)
    if found != wanted:
        return FileState(remote, path, "corrupt", f"{algorithm} {found}, expected {wanted}")
    sha = found if algorithm == "sha256" else file_digest(path)
    record_verified(folder, remote, path, sha)
    return FileState(remote, path, "present")


def entry_states(
    entry: DatasetEntry, files: Iterable[RemoteFile] | None = None, home: Path | None = None
) -> list[FileState]:
    return [file_state(entry, f, home) for f in (entry.files if files is None else files)]


def registered_files(
    paths: Iterable[Path], home: Path | None = None
) -> dict[str, list[RemoteFile]] | None:
    """Dataset name -> the registered files among ``paths`` (files of the data home); None
    when some path is no registered file (a user's own data)."""
    from harness.data.registry import DATASETS

    root = (home or data_home()).resolve()
    found: dict[str, list[RemoteFile]] = {}
    for path in paths:
        try:
            relative = Path(path).resolve().relative_to(root)
        except ValueError:
            return None
        folder, rest = relative.parts[0], Path(*relative.parts[1:]).as_posix()
        match = [
            (entry, remote)
            for entry in DATASETS.values()
            if entry.folder == folder
            for remote in entry.files
            if remote.path == rest
        ]
        if not match:
            return None
        entry, remote = match[0]
        found.setdefault(entry.name, []).append(remote)
    return found


def fetch_command(paths: Iterable[Path], home: Path | None = None) -> str | None:
    """The ``harness data fetch`` command that provides ``paths`` (files of the data home),
    naming the parts when only some are needed; None when no registered dataset has them."""
    found = registered_files(paths, home)
    if not found:
        return None
    commands = []
    for name, files in found.items():
        parts = {f.part for f in files}
        named = sorted(p for p in parts if p)
        suffix = "".join(f" --part {p}" for p in named) if None not in parts else ""
        commands.append(f"harness data fetch {name}{suffix}")
    return " && ".join(commands)
