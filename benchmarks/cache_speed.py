"""`harness plan` on the paper's Amazon spec with full-size raw dumps: cold against cached.

The three McAuley 2014 "ratings only" dumps the paper starts from (ratings_Books.csv,
ratings_Movies_and_TV.csv, ratings_Electronics.csv: 22.5M + 4.6M + 7.8M rows, ~1.4 GB) are
not on this machine, so this writes files of that size and format (``user,item,rating,
timestamp``, no header) with deterministic content: per domain the dump's row and item counts,
power-law popular items, and a core of users active in all three domains sized so that after the
paper's preprocessing (70% of items deleted, users in every domain) the dataset has the
Amazon-shaped preset's size (about 25k users, 450k interactions); every other row belongs
to users of one domain only, as most of the real dumps' users are. Then it times ``harness
plan`` on that data as a separate process, twice: with an empty prepared-dataset cache (reads
and preprocesses the CSVs) and again (the cache answers). Wall seconds and the child's peak
RSS; the last line is one JSON object.

    python benchmarks/cache_speed.py --dir /tmp/amazon-raw          # writes ~1.4 GB once
    python benchmarks/cache_speed.py --dir /tmp/amazon-raw --scale 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]

# domain: (file, rows, distinct items, rows per core user before the item drop)
DUMPS = {
    "books": ("ratings_Books.csv", 22_507_155, 2_330_066, 33),
    "movies": ("ratings_Movies_and_TV.csv", 4_607_047, 200_941, 14),
    "electronics": ("ratings_Electronics.csv", 7_824_482, 476_002, 10),
}
CORE_USERS = 26_500

SPEC = """
[experiment]
name = "amazon_cache"
seeds = [0]
device = "cpu"

[datasets.amazon]
loader = "amazon"
path = "{path}"
keep_users = "all_domains"
item_drop_fraction = 0.7
item_drop_seed = 0

[protocol]
negatives = 99
ks = [10, 20]

[methods.mostpop]
kind = "popularity"
"""


def write_dump(path: Path, domain: str, rows: int, items: int, per_core: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    core_rows = min(rows, CORE_USERS * per_core)
    core_users = rng.integers(0, CORE_USERS, core_rows)
    # Users of this domain only: ids above the core, disjoint from the other domains' ranges.
    offset = {"books": 1, "movies": 2, "electronics": 3}[domain] * 100_000_000
    other_users = offset + rng.integers(0, max(rows // 3, 1), rows - core_rows)
    users = np.concatenate([core_users, other_users])
    item_ids = (rng.random(rows) ** 3 * items).astype(np.int64)  # popular items first
    frame = pl.DataFrame(
        {
            "u": users,
            "i": rng.permutation(items)[item_ids],
            "r": rng.integers(1, 6, rows).astype(np.float32),
            "t": rng.integers(900_000_000, 1_406_000_000, rows),
        }
    ).select(
        (pl.lit("A") + pl.col("u").cast(pl.Utf8).str.zfill(13)).alias("user"),
        (pl.lit("B") + pl.col("i").cast(pl.Utf8).str.zfill(9)).alias("item"),
        pl.col("r").alias("rating"),
        pl.col("t").alias("timestamp"),
    )
    frame.write_csv(path, include_header=False)


# `harness plan ...` in a child that reports its own peak RSS on the way out: VmHWM of its
# address space (getrusage's ru_maxrss would carry this process's peak over fork and exec).
LAUNCH = (
    "import atexit, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            print('peak_rss_kb', line.split()[1], file=sys.stderr)\n"
    "atexit.register(peak)\n"
    "from harness.cli import app\n"
    "app(prog_name='harness')\n"
)


def timed_plan(spec: Path, out: Path, cache: Path) -> dict:
    env = dict(os.environ, HARNESS_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, "plan", str(spec), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    wall = time.perf_counter() - started
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0:
        raise SystemExit("\n".join(lines[-5:]))
    peak_kb = next(int(line.split()[1]) for line in lines if line.startswith("peak_rss_kb"))
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak_kb / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="where the raw dumps are (written once)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the dumps' rows")
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    for index, (domain, (name, rows, items, per_core)) in enumerate(DUMPS.items()):
        path = folder / name
        if not path.exists():
            started = time.perf_counter()
            write_dump(path, domain, int(rows * args.scale), items, per_core, seed=index)
            print(f"wrote {path} in {time.perf_counter() - started:.1f}s", flush=True)
    size = sum((folder / name).stat().st_size for name, *_ in DUMPS.values())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = work / "amazon_cache.toml"
        spec.write_text(SPEC.format(path=folder.resolve()))
        cache = work / "cache"
        cold = timed_plan(spec, work / "out", cache)
        warm = timed_plan(spec, work / "out", cache)
        again = timed_plan(spec, work / "out", cache)
    print(
        json.dumps(
            {
                "raw_gb": round(size / 1e9, 2),
                "cold": cold,
                "cached": warm,
                "cached_again": again,
                "speedup": round(cold["wall_s"] / warm["wall_s"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
