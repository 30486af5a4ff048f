"""``harness data fetch``: download a registered dataset into the data home, verified.

Each file is streamed into ``<name>.part`` beside its final place with a rich progress bar;
an interrupted transfer resumes from the bytes it has (HTTP ``Range``), transient failures are
retried with exponential back-off, and the file moves into place (``os.replace``, atomic on
one file system) only after its SHA-256 (or git blob id) matched the registry. A wrong hash,
an HTTP error or no network ends in one :class:`FetchError` line (URL, expected and found
hash, how to place the file by hand); nothing half-written is ever at the final path, and a
``.part`` with wrong content is deleted.

Sources, in order: a mirror (``--mirror`` or ``$HARNESS_DATA_MIRROR``: a folder, a
``file://`` URL or an http(s) URL laid out like the data home), then the upstream URL, which
the registry allows only as https; a redirect away from https is refused. Why not Pooch: it
has no resume of partial downloads, reports progress through tqdm rather than rich, and knows
no git blob ids; what it would add here (hash check, atomic move) is a few lines.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from harness.data.home import (
    MIRROR_ENV,
    entry_dir,
    expected_digest,
    file_digest,
    file_state,
    record_verified,
)
from harness.data.registry import DatasetEntry, RemoteFile
from harness.errors import HarnessError

__all__ = [
    "FetchError",
    "FetchReport",
    "fetch_entry",
    "fetch_file",
    "fetch_missing",
    "mirror_from_env",
]

CHUNK = 1 << 16
#: Set to 1 to never contact upstream URLs (mirrors only), e.g. in tests that must not download.
OFFLINE_ENV = "HARNESS_DATA_OFFLINE"


class FetchError(HarnessError):
    """A file could not be fetched or did not verify (exit 3)."""


class _NotThere(Exception):
    """The source does not have the file (HTTP 404/410, missing in a mirror folder)."""


@dataclass
class FetchReport:
    verified: list[str] = field(default_factory=list)  # already in place with the pinned hash
    fetched: list[str] = field(default_factory=list)
    unpinned: list[tuple[str, int, str]] = field(default_factory=list)  # path, size, sha256

    def summary(self) -> str:
        return f"{len(self.fetched)} fetched, {len(self.verified)} already present and verified" + (
            f", {len(self.unpinned)} unpinned (hashes recorded)" if self.unpinned else ""
        )


def mirror_from_env() -> str | None:
    value = os.environ.get(MIRROR_ENV, "").strip()
    return value or None


def _source_urls(entry: DatasetEntry, remote: RemoteFile, mirror: str | None) -> list[str]:
    """Where to look, in order: the mirror's copy, then the pinned upstream URL."""
    sources = []
    if mirror:
        quoted = urllib.parse.quote(f"{entry.folder}/{remote.path}")
        if "://" in mirror:
            sources.append(f"{mirror.rstrip('/')}/{quoted}")
        else:
            sources.append(str(Path(mirror).expanduser() / entry.folder / remote.path))
    if remote.url and os.environ.get(OFFLINE_ENV) != "1":
        sources.append(remote.url)
    return sources


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if req.full_url.startswith("https://") and not newurl.startswith("https://"):
            raise urllib.error.URLError(f"refused redirect from https to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpsOnlyRedirects)


def _copy_local(source: str, part: Path, advance: Callable[[int, int | None], None]) -> None:
    path = (
        Path(urllib.parse.unquote(urllib.parse.urlparse(source).path))
        if (source.startswith("file://"))
        else Path(source)
    )
    if not path.is_file():
        raise _NotThere(source)
    advance(0, path.stat().st_size)
    with open(path, "rb") as src, open(part, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            advance(len(chunk), None)


def _download(
    url: str,
    part: Path,
    advance: Callable[[int, int | None], None],
    retries: int,
    backoff_s: float,
    timeout_s: float,
    expected_size: int | None,
) -> None:
    """Stream ``url`` into ``part``, resuming from its current size after a failure."""
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if expected_size is not None and offset >= expected_size:
            return  # complete (or too long: the hash check decides)
        headers = (
            {"User-Agent": "cdr-harness", "Range": f"bytes={offset}-"}
            if offset
            else {"User-Agent": "cdr-harness"}
        )
        try:
            with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout_s) as r:
                resumed = offset > 0 and r.status == 206
                length = r.headers.get("Content-Length")
                total = (int(length) + (offset if resumed else 0)) if length else expected_size
                advance(-1, total)  # reset the bar to the bytes kept
                if resumed:
                    advance(offset, None)
                with open(part, "ab" if resumed else "wb") as out:
                    while chunk := r.read(CHUNK):
                        out.write(chunk)
                        advance(len(chunk), None)
            size = part.stat().st_size
            if expected_size is not None and size < expected_size:
                raise http.client.IncompleteRead(b"", expected_size - size)
            return
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise _NotThere(url) from None
            if exc.code == 416 and offset:  # nothing left to send: the part is complete
                return
            if exc.code not in (408, 429) and exc.code < 500:
                raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
        failures += 1
        if failures > retries:
            raise FetchError(f"{url}: {reason} (after {retries} retries)")
        time.sleep(min(backoff_s * 2 ** (failures - 1), 30.0))


def fetch_file(
    entry: DatasetEntry,
    remote: RemoteFile,
    mirror: str | None = None,
    home: Path | None = None,
    progress: Progress | None = None,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
) -> tuple[str, str]:
    """Place one registered file, verified; returns (source used, its SHA-256)."""
    folder = entry_dir(entry, home)
    final = folder / remote.path
    if not final.resolve().is_relative_to(folder.resolve()):  # registry paths are checked too
        raise FetchError(f"{remote.path}: would be written outside {folder}")
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    sources = _source_urls(entry, remote, mirror)
    if not sources:
        raise FetchError(
            f"{entry.name}/{remote.path}: no source (no mirror given, and upstream downloads "
            f"are off or unknown); give --mirror or place the file by hand at {final}"
        )
    task = progress.add_task(remote.path, total=remote.size) if progress else None

    def advance(step: int, total: int | None) -> None:
        if progress is None or task is None:
            return
        if step < 0:
            progress.reset(task, total=total)
        elif total is not None:
            progress.update(task, total=total)
        else:
            progress.advance(task, step)

    missing_in: list[str] = []
    for source in sources:
        try:
            if "://" not in source or source.startswith("file://"):
                _copy_local(source, part, advance)
            else:
                _download(source, part, advance, retries, backoff_s, timeout_s, remote.size)
        except _NotThere:
            missing_in.append(source)
            continue
        except FetchError as exc:
            raise FetchError(f"{exc}; {_by_hand(remote, final)}") from None
        return source, _verify_and_place(entry, remote, part, final, source, folder)
    part.unlink(missing_ok=True)
    raise FetchError(
        f"{entry.name}/{remote.path}: not found at {' nor '.join(missing_in)} (404); "
        f"{_by_hand(remote, final)}"
    )


def _by_hand(remote: RemoteFile, final: Path) -> str:
    pin = expected_digest(remote)
    want = f" with {pin[0]} {pin[1]}" if pin else ""
    return f"to place it by hand, put the file{want} at {final}"


def _verify_and_place(
    entry: DatasetEntry, remote: RemoteFile, part: Path, final: Path, source: str, folder: Path
) -> str:
    pin = expected_digest(remote)
    sha = file_digest(part)
    if pin is not None:
        algorithm, wanted = pin
        found = sha if algorithm == "sha256" else file_digest(part, algorithm)
        if found != wanted:
            size = part.stat().st_size
            part.unlink(missing_ok=True)
            raise FetchError(
                f"{source}: {algorithm} mismatch for {entry.name}/{remote.path}: expected "
                f"{wanted}, found {found} ({size} bytes); nothing was placed; "
                f"{_by_hand(remote, final)}"
            )
    os.replace(part, final)
    record_verified(folder, remote, final, sha)
    return sha


def fetch_entry(
    entry: DatasetEntry,
    parts: list[str] | None = None,
    mirror: str | None = None,
    home: Path | None = None,
    console: Console | None = None,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    files: list[RemoteFile] | None = None,
) -> FetchReport:
    """Fetch every missing or corrupt file of ``entry`` (or of its ``parts``, or ``files``)."""
    report = FetchReport()
    wanted = files if files is not None else entry.select(parts)
    todo = []
    for remote in wanted:
        state = file_state(entry, remote, home)
        if state.state == "present":
            report.verified.append(remote.path)
        else:
            todo.append(remote)
    if not todo:
        return report
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    console = console or Console(stderr=True)
    failed: list[FetchError] = []
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        for remote in todo:  # a file that fails does not stop the others
            try:
                _source, sha = fetch_file(
                    entry, remote, mirror, home, progress, retries, backoff_s, timeout_s
                )
            except FetchError as exc:
                failed.append(exc)
                continue
            report.fetched.append(remote.path)
            if not remote.pinned:
                size = (entry_dir(entry, home) / remote.path).stat().st_size
                report.unpinned.append((remote.path, size, sha))
    if failed:
        done = f"{report.summary()}; " if report.fetched or report.verified else ""
        more = f" ({len(failed) - 1} more file(s) failed too)" if len(failed) > 1 else ""
        raise FetchError(f"{done}{failed[0]}{more}")
    return report


def fetch_missing(
    paths: list[Path], mirror: str | None = None, console: Console | None = None
) -> list[FetchReport]:
    """Fetch the registered files among ``paths`` that the data home lacks (``harness run
    --fetch``); paths of a user's own files are left to the spec check that follows."""
    from harness.data.home import registered_files
    from harness.data.registry import get_entry

    absent = [p for p in paths if not Path(p).is_file()]
    found = registered_files(absent) or {}
    return [
        fetch_entry(
            get_entry(name), mirror=mirror or mirror_from_env(), console=console, files=files
        )
        for name, files in found.items()
    ]
