"""What produced a result: code revision, package versions, machine and device."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

__all__ = ["device_description", "git_state", "run_info"]

_PACKAGES = (
    "cdr-harness",
    "torch",
    "numpy",
    "polars",
    "duckdb",
    "pydantic",
    "scipy",
    "typer",
    "jinja2",
    "pyarrow",
)


def git_state(path: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit SHA, dirty flag) of the repository holding the code, or (None, None)."""
    where = path or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return sha, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out["cuda"] = torch.version.cuda or "none"
    return out


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def run_info(
    spec_path: Path,
    spec_hash: str,
    spec_text: str,
    experiment: str,
    device: torch.device,
    argv: list[str],
    threads: int | None = None,
    workers: int = 1,
) -> dict:
    """What the runs table records; ``threads`` is the intra-op thread count of each training
    process (the thread policy; default: this process's torch threads), ``workers`` how many
    processes trained side by side."""
    sha, dirty = git_state()
    return {
        "experiment": experiment,
        "spec_path": str(spec_path),
        "spec_hash": spec_hash,
        "spec_text": spec_text,
        "git_sha": sha,
        "git_dirty": dirty,
        "versions": json.dumps(versions()),
        "device": device_description(device),
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": " ".join(argv),
        "threads": threads or torch.get_num_threads(),
        "workers": workers,
    }
