"""One writer per store: ``results.duckdb.lock`` beside the store, held by ``harness run``.

A run releases the DuckDB file between commits (so ``harness sql`` can read while cells
train), which means DuckDB's own file lock cannot keep a second ``harness run`` out: both would
train every pending cell. The writer lock can. It is an exclusive ``flock`` on the lock file,
held for the whole run; the kernel drops it when the process ends for any reason (``kill -9``
included), so a dead run never blocks the next one. The file's content says who holds it
(pid, host, start time, run id, command) for the message a second run prints.

Where ``flock`` is not available (some network file systems) the lock falls back to the
content: a lock whose pid is dead on this host is stale and taken over; one held from another
host is respected.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

__all__ = ["StoreBusy", "WriterLock", "lock_path", "pid_alive", "read_lock"]


class StoreBusy(HarnessError):
    """Another ``harness run`` is writing this store."""


def lock_path(store_path: str | Path) -> Path:
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".lock")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(path: str | Path) -> dict[str, Any] | None:
    """The holder recorded in a lock file (None when absent or unreadable)."""
    try:
        return json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None


def _describe(holder: dict[str, Any] | None, store_path: Path) -> str:
    if not holder:
        return f"results store {store_path} is being written by another `harness run`"
    started = holder.get("started", "?")
    return (
        f"results store {store_path} is being written by another `harness run` "
        f"(pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {started}, "
        f"run {holder.get('run_id', '?')})"
    )


class WriterLock:
    """``with WriterLock(store_path, run_id):`` holds the store's writer lock or raises
    :class:`StoreBusy` naming the holder."""

    def __init__(self, store_path: str | Path, run_id: str = ""):
        self.store_path = Path(store_path)
        self.path = lock_path(self.store_path)
        self.run_id = run_id
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # a stale holder found in the file

    def acquire(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise StoreBusy(
                        f"{_describe(read_lock(self.path), self.store_path)}; wait for it to "
                        f"finish (or drain it: kill -USR1 <pid>), or use --out DIR for another "
                        f"store"
                    ) from None
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                self._check_content()  # no flock here: judge by the recorded pid
                break
            # The holder we waited out may have unlinked the file after unlocking it: a lock
            # on a file no longer at this path would admit a third process; retry then.
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        previous = read_lock(self.path)
        if previous and previous.get("pid") != os.getpid():
            self.took_over = previous  # its process is gone (the kernel dropped its flock)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
            "run_id": self.run_id,
            "argv": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _check_content(self) -> None:
        holder = read_lock(self.path)
        if not holder or holder.get("pid") == os.getpid():
            return
        same_host = holder.get("host") == socket.gethostname()
        if same_host and not pid_alive(int(holder.get("pid", 0))):
            return  # stale: its process is dead
        raise StoreBusy(
            f"{_describe(holder, self.store_path)}; if that process is gone, delete "
            f"{self.path}, or use --out DIR for another store"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # an empty lock file: nobody holds it
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
