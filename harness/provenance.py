"""What produced a result: code revision, package versions, machine and device."""

from __future__ import annotations

import functools
import json
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

__all__ = [
    "KERNEL_KEYS",
    "device_description",
    "git_state",
    "hardware_fingerprint",
    "run_info",
    "same_kernels",
]

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


# What selects floating-point kernels: cells computed where all of these agree can be required
# to match exactly; elsewhere only an equivalence test is fair (harness verify).
KERNEL_KEYS = (
    "device_type",
    "cpu_model",
    "cpu_capability",
    "torch",
    "blas",
    "onednn",
    "threads",
    "gpu",
    "cuda",
    "gpu_driver",
)
_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "fma")


@functools.lru_cache(maxsize=1)
def _cpu() -> tuple[str, tuple[str, ...]]:
    """(CPU model name, the kernel-relevant ISA flags it reports) from /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, ()
    if found := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
        model = found.group(1).strip()
    if found := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
        flags = set(found.group(1).split())
    return model, tuple(f for f in _ISA_FLAGS if f in flags)


@functools.lru_cache(maxsize=1)
def _torch_build() -> dict[str, str]:
    """BLAS and oneDNN versions of this torch build (from ``torch.__config__.show()``)."""
    text = torch.__config__.show()
    out = {"blas": "", "onednn": ""}
    if found := re.search(r"Math Kernel Library Version ([\w.\-]+)", text):
        out["blas"] = f"MKL {found.group(1)}"
    elif found := re.search(r"BLAS_INFO=(\w+)", text):
        out["blas"] = found.group(1)
    if found := re.search(r"MKL-DNN v([\d.]+)", text):
        out["onednn"] = found.group(1)
    return out


def _gpu_driver() -> str:
    try:
        line = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return line.splitlines()[0] if line else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def hardware_fingerprint(device: torch.device) -> dict[str, str | int]:
    """What computed a cell, as far as it selects float kernels: CPU model and instruction
    sets (torch's dispatch level: DEFAULT / AVX2 / AVX512; AMX and AVX512-BF16 flags), torch,
    BLAS and oneDNN versions, intra-op threads, and on CUDA the GPU, CUDA and driver."""
    model, flags = _cpu()
    cuda = device.type == "cuda"
    return {
        "device_type": device.type,
        "cpu_model": model,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": " ".join(flags),
        "torch": torch.__version__,
        **_torch_build(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if cuda else "",
        "cuda": (torch.version.cuda or "") if cuda else "",
        "gpu_driver": _gpu_driver() if cuda else "",
        "machine": platform.machine(),
    }


def same_kernels(stored: dict | None, current: dict) -> tuple[bool, str]:
    """Whether two fingerprints select the same float kernels, and why not: (False, the
    first key that differs, or that the stored cell recorded none)."""
    if not stored:
        return False, "the stored cell recorded no hardware fingerprint"
    for key in KERNEL_KEYS:
        if str(stored.get(key, "")) != str(current.get(key, "")):
            return False, f"{key} differs ({stored.get(key)!r} stored, {current.get(key)!r} here)"
    return True, "same CPU/GPU model, instruction set, torch, BLAS, oneDNN and threads"


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
