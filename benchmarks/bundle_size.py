"""Bytes of the published result bundles under two Parquet encodings, and write/read time.

Reads every bundle under ``leaderboard/`` (or the folders given), re-encodes its table with the
previous settings (dictionary encoding on every column, zstd 9) and with the current ones of
:func:`harness.store.bundle.write_bundle`, and checks that the current file reads back to the
same rows (same digest). Sizes are summed per folder; the last line is one JSON object.

    python benchmarks/bundle_size.py
    python benchmarks/bundle_size.py leaderboard/amazon_cloth_electronic
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.store.bundle import META_KEY, conform, read_bundle, write_bundle


def _previous(table, path: Path) -> None:
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=9,
        use_dictionary=True,
        write_statistics=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1] / "leaderboard"
    folders = args.folders or sorted(p for p in root.iterdir() if p.is_dir())
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for folder in folders:
            files = sorted(folder.glob("*.parquet"))
            if not files:
                continue
            row = {
                "bundles": len(files),
                "previous_bytes": 0,
                "current_bytes": 0,
                "previous_write_s": 0.0,
                "current_write_s": 0.0,
                "current_read_s": 0.0,
            }
            for path in files:
                bundle = read_bundle(path)
                arrow = pq.read_table(path)
                table_meta = json.loads(arrow.schema.metadata[META_KEY])
                meta = {k: v for k, v in table_meta.items() if k not in ("format", "digest")}
                started = time.perf_counter()
                _previous(arrow, scratch / "previous.parquet")
                row["previous_write_s"] += time.perf_counter() - started
                started = time.perf_counter()
                current = scratch / path.name
                table = conform(pl.from_arrow(arrow.replace_schema_metadata(None)))
                write_bundle(current, meta, table)
                row["current_write_s"] += time.perf_counter() - started
                started = time.perf_counter()
                again = read_bundle(current)
                row["current_read_s"] += time.perf_counter() - started
                assert again.meta["digest"] == bundle.meta["digest"], path
                row["previous_bytes"] += (scratch / "previous.parquet").stat().st_size
                row["current_bytes"] += current.stat().st_size
                current.unlink()
            row["ratio"] = round(row["current_bytes"] / row["previous_bytes"], 3)
            report[folder.name] = row
            print(
                f"{folder.name}: {row['bundles']} bundles, "
                f"{row['previous_bytes'] / 2**20:.2f} -> {row['current_bytes'] / 2**20:.2f} MiB "
                f"(x{row['ratio']}); write {row['previous_write_s']:.2f} s -> "
                f"{row['current_write_s']:.2f} s, read back {row['current_read_s']:.2f} s"
            )
    before = sum(r["previous_bytes"] for r in report.values())
    after = sum(r["current_bytes"] for r in report.values())
    print(f"all: {before / 2**20:.2f} -> {after / 2**20:.2f} MiB (x{after / before:.3f})")
    print(
        json.dumps(
            {
                "folders": report,
                "previous_bytes": before,
                "current_bytes": after,
                "digests": "equal",
            }
        )
    )


if __name__ == "__main__":
    main()
