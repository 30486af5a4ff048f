"""Published results: export finished cells as bundles, import them with verification, retrain
a published cell to check it, and slice a plan into shards for shared-nothing runs.

A bundle is accepted only if the cell id recomputed from its own identity matches its name,
its rows match their digest, and its dataset fingerprint and candidate-set content equal the
data this spec prepares (or, without a spec, the data the store already holds). A bundle whose
method, metric or protocol version is not today's is imported as ``stale``: it never enters a
view or table (its id is not in any current plan), and ``harness plan`` shows it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.runner.cells import CellTask, code_version, identity_hash
from harness.runner.prepare import PlannedData, candidate_set_id
from harness.store.bundle import (
    Bundle,
    BundleError,
    bundle_table,
    read_bundle,
    write_bundle,
)
from harness.store.store import Store
from methods.registry import UnknownMethod, get_method

__all__ = [
    "ImportReport",
    "bundle_files",
    "export_cells",
    "import_bundles",
    "method_labels",
    "parse_shard",
    "sample_cells",
    "shard_tasks",
    "write_index",
]

# Run columns that describe the run as a whole and change while it goes on: not part of a
# cell's provenance (and they would make two exports of one cell differ).
_RUN_VOLATILE = {"status", "finished_at", "cells_planned", "cells_done", "cells_failed"}
# Statuses a bundle may carry: a finished cell, or a search trial its pruning rule stopped
# (curves only, no test rows; harness/search/pruning.py), which a rerun must not train again.
EXPORTED = ("done", "pruned")
# Cell columns that describe this store, not the cell.
_CELL_LOCAL = {"origin", "bundle"}
# Cell columns added after the bundle format: left out of a bundle while empty, so a cell
# exported again gives the bytes its published bundle has.
_CELL_LATER = {"method_distribution", "method_distribution_version", "hardware", "threads"}
_RUN_LATER = {"threads", "workers"}
TIME_FIELDS = {"started_at", "finished_at"}


# -- export -----------------------------------------------------------------------------------
def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def export_cells(
    store: Store, tasks: Iterable[CellTask], out: Path, experiment: str, labels: dict[str, str]
) -> list[Path]:
    """Write one bundle per finished cell among ``tasks`` into ``out``; returns the paths.

    Deterministic: exporting the same stored cell twice gives identical bytes."""
    out.mkdir(parents=True, exist_ok=True)
    written, seen = [], set()
    status = store.cell_status([t.cell_id for t in tasks])
    for task in tasks:
        if status.get(task.cell_id) not in EXPORTED or task.cell_id in seen:
            continue
        seen.add(task.cell_id)
        identity = task.identity()
        assert identity_hash(identity) == task.cell_id, "cell id and identity disagree"
        cell, run, metrics, curves, values = store.cell_content(task.cell_id)
        meta = {
            "identity": identity,
            "cell": _jsonable(
                {
                    k: v
                    for k, v in cell.items()
                    if k not in _CELL_LOCAL and not (k in _CELL_LATER and v is None)
                }
            ),
            "run": _jsonable(
                {
                    k: v
                    for k, v in (run or {}).items()
                    if k not in _RUN_VOLATILE and not (k in _RUN_LATER and v is None)
                }
            ),
            "exported_as": {
                "experiment": experiment,
                "dataset": task.dataset,
                "method": task.method,
                "label": labels.get(task.method, task.method),
            },
        }
        path = out / f"{task.cell_id}.parquet"
        write_bundle(path, meta, bundle_table(metrics, curves, values))
        written.append(path)
    return written


def bundle_files(paths: Iterable[Path]) -> list[Path]:
    """Bundle files named directly or found (non-recursively) in the folders named."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.glob("*.parquet")))
        elif path.exists():
            files.append(path)
        else:
            raise HarnessError(f"no bundle file or folder at {path}")
    return files


def write_index(folder: Path, title: str, commands: list[str]) -> Path:
    """(Re)write ``folder/README.md``: what the folder holds, one row per bundle, from the
    bundles themselves (so shards merged from several machines are listed too)."""
    rows = []
    for path in sorted(folder.glob("*.parquet")):
        try:
            bundle = read_bundle(path)
        except BundleError as exc:
            rows.append(f"| ? | ? | ? | `{path.name}` | unreadable: {exc} | | | | |")
            continue
        cell, run, named = bundle.meta["cell"], bundle.meta["run"], bundle.meta["exported_as"]
        rows.append(
            "| {method} | {seed} | {dataset} | `{cid}` | {code} | {device} | {train:.0f} | "
            "{infer:.1f} | {epochs} | {sha}{dirty} |".format(
                method=named["method"],
                seed=cell["seed"],
                dataset=named["dataset"],
                cid=cell["cell_id"],
                code=cell["code_version"],
                device=cell["device"],
                train=cell["train_s"] or 0.0,
                infer=cell["infer_s"] or 0.0,
                epochs=cell["epochs"],
                sha=(run.get("git_sha") or "?")[:10],
                dirty=" (dirty)" if run.get("git_dirty") else "",
            )
        )
    rows.sort(key=lambda r: [part.strip() for part in r.split("|")[1:4]])
    text = "\n".join(
        [
            f"# {title}",
            "",
            "Result bundles, one Parquet file per finished cell (file name = cell id). Rebuild the "
            "leaderboard or rerun a row with:",
            "",
            "```bash",
            *commands,
            "```",
            "",
            f"{len(rows)} cells. Seconds are wall seconds of training and of inference (test "
            "ranking, sampled and full) on the device shown, one process per cell.",
            "",
            "| method | seed | dataset | cell | code version | device | train s | infer s | "
            "epochs | git |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    index = folder / "README.md"
    index.write_text(text, encoding="utf-8")
    return index


# -- import -----------------------------------------------------------------------------------
@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.imported)} imported, {len(self.stale)} stale (older code versions, "
            f"kept apart), {len(self.present)} already present, {len(self.rejected)} rejected"
        )


def _check(bundle: Bundle, expected: dict[str, PlannedData] | None, store: Store) -> bool:
    """Raise BundleError when the bundle does not check out; return True when it is stale."""
    where = f"bundle {bundle.path}"
    identity, cell = bundle.identity, bundle.meta["cell"]
    if bundle.path.stem != bundle.cell_id:
        raise BundleError(f"{where}: named {bundle.path.stem} but holds cell {bundle.cell_id}")
    recomputed = identity_hash(identity)
    if recomputed != bundle.cell_id:
        raise BundleError(
            f"{where}: its identity hashes to {recomputed}, not its cell id {bundle.cell_id} "
            f"(an edited parameter, seed or version?)"
        )
    agree = {
        "dataset_fingerprint": identity["dataset"],
        "kind": identity["kind"],
        "seed": identity["seed"],
        "code_version": identity["code"],
        "candidate_set_id": candidate_set_id(identity["dataset"], identity["protocol"]),
    }
    for key, value in agree.items():
        if cell.get(key) != value:
            raise BundleError(f"{where}: cell {key} {cell.get(key)!r} contradicts its identity")
    if json.loads(cell["params"]) != identity["params"]:
        raise BundleError(f"{where}: cell params contradict its identity")
    notes = json.loads(cell.get("notes") or "{}")
    if notes.get("matmul_precision", "highest") != identity.get("matmul_precision", "highest"):
        raise BundleError(f"{where}: cell matmul precision contradicts its identity")
    if cell.get("status") not in EXPORTED:
        raise BundleError(f"{where}: cell status is {cell.get('status')!r}, not 'done'")
    if cell["status"] == "pruned" and (len(bundle.metrics) or "prune" not in identity):
        raise BundleError(f"{where}: a pruned cell has test rows or no pruning rule")
    if expected is not None:
        match = [p for p in expected.values() if p.fingerprint == identity["dataset"]]
        if not match:
            known = ", ".join(f"{p.name} {p.fingerprint}" for p in expected.values())
            raise BundleError(
                f"{where}: dataset fingerprint {identity['dataset']} is none of the spec's "
                f"datasets ({known}): different data or preprocessing"
            )
        if identity["candidates"] != match[0].candidate_hash:
            raise BundleError(
                f"{where}: candidate lists {identity['candidates']} differ from the spec's "
                f"{match[0].candidate_hash} (another protocol or split seed)"
            )
    else:
        rows = store.con.execute(
            "SELECT content_hash FROM candidate_sets WHERE candidate_set_id = ?",
            [cell["candidate_set_id"]],
        ).fetchall()
        if not rows:
            raise BundleError(
                f"{where}: the store holds no data with fingerprint {identity['dataset']}; "
                f"import with --spec SPEC so the data is prepared first"
            )
        if rows[0][0] != identity["candidates"]:
            raise BundleError(f"{where}: candidate lists differ from the store's")
    try:
        current = code_version(identity["kind"])
    except UnknownMethod:
        from methods.registry import install_hint

        plugin = cell.get("method_distribution"), cell.get("method_distribution_version")
        hint = install_hint(identity["kind"], *plugin)
        raise BundleError(f"{where}: {hint}") from None
    covered = sorted(set(bundle.metrics["domain"].to_list()))
    if cell["status"] == "done" and covered != sorted(identity["domains"]):
        raise BundleError(
            f"{where}: metric rows cover domains {covered}, not {identity['domains']}"
        )
    return current != identity["code"]


def import_bundles(
    store: Store, files: Iterable[Path], expected: dict[str, PlannedData] | None
) -> ImportReport:
    """Check and import each bundle in its own transaction; a rejected bundle writes
    nothing and the others still go in. Importing twice changes nothing."""
    report = ImportReport()
    for path in files:
        try:
            bundle = read_bundle(path)
            stale = _check(bundle, expected, store)
        except BundleError as exc:
            report.rejected.append((Path(path), str(exc)))
            continue
        status = "stale" if stale else bundle.meta["cell"]["status"]
        if store.cell_status([bundle.cell_id]).get(bundle.cell_id) in (*EXPORTED, status):
            report.present.append(bundle.cell_id)
            continue
        cell = {
            **{k: _from_iso(k, v) for k, v in bundle.meta["cell"].items()},
            "status": status,
            "origin": "bundle",
            "bundle": Path(path).name,
        }
        run = bundle.meta.get("run") or None
        if run:
            run = {**{k: _from_iso(k, v) for k, v in run.items()}, "status": "imported"}
        store.write_cell(cell, bundle.metrics, bundle.curves, bundle.values, run=run)
        (report.stale if stale else report.imported).append(bundle.cell_id)
    return report


def _from_iso(key: str, value: Any) -> Any:
    return datetime.fromisoformat(value) if key in TIME_FIELDS and value else value


# -- verify (the rules live in harness.runner.verify) ------------------------------------------
def sample_cells(done: list[CellTask], n: int, seed: int) -> list[CellTask]:
    """``n`` distinct finished cells drawn uniformly and reproducibly (by ``seed``)."""
    unique = {t.cell_id: t for t in done}
    ids = sorted(unique)
    return [unique[c] for c in random.Random(seed).sample(ids, min(n, len(ids)))]


# -- shards -----------------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N) with 1 <= I <= N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise HarnessError(f"--shard must look like I/N (e.g. 2/3), got {text!r}") from None
    if not 1 <= index <= count:
        raise HarnessError(f"--shard {text}: need 1 <= I <= N")
    return index, count


def shard_tasks(tasks: list[CellTask], index: int, count: int) -> list[CellTask]:
    """The ``index``-th of ``count`` slices of the whole plan (not of what is pending, which
    differs between machines): chains (a stage group such as UCLR's ladder on one dataset and
    seed) are dealt round-robin in plan order, so every machine computes the same slices."""
    from harness.runner.pool import chains

    unique = list({t.cell_id: t for t in tasks}.values())
    picked = [
        i
        for position, chain in enumerate(chains(unique))
        if position % count == index - 1
        for i in chain
    ]
    wanted = {unique[i].cell_id for i in picked}
    return [t for t in tasks if t.cell_id in wanted]


def method_labels(loaded) -> dict[str, str]:
    """Spec method name -> label shown in reports (the label, else the kind's display name)."""
    return {
        name: method.label or get_method(method.kind).display_name or name
        for name, method in loaded.spec.methods.items()
    }
