"""The driver: plan the cell matrix, skip finished cells, run the rest, commit each result.

Resuming is a property of the store, not of a checkpoint: a cell is either committed with all
its rows or absent, so rerunning the same spec after Ctrl-C or ``kill -9`` recomputes exactly
the missing cells.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.provenance import run_info
from harness.runner.cells import CellTask, code_version, plan_cells
from harness.runner.executor import (
    DRAIN,
    INTERRUPT,
    Executor,
    InProcessExecutor,
    stop_if_interrupted,
)
from harness.runner.prepare import (
    PlannedData,
    PreparedData,
    check_readable,
    prepare,
    prepare_for_reading,
)
from harness.runner.publish import bundle_files, import_bundles, shard_tasks
from harness.runner.work import CellResult, resolve_device
from harness.search.driver import Search
from harness.spec.load import LoadedSpec, SpecError, SpecIssue
from harness.store.bundle import read_bundle_meta
from harness.store.lock import StoreBusy, WriterLock
from harness.store.store import Store
from methods.base import EpochLog
from methods.checkpoint import checkpoint_file, saved_progress
from methods.registry import get_method, method_origin

__all__ = ["RunSummary", "output_dir", "plan_status", "run_spec"]

LOG_EVERY_EPOCHS = 10  # without a terminal, print every n-th epoch line ...
LOG_EVERY_SECONDS = 60.0  # ... and any epoch line that ends a minute of silence
STORE_WAIT_S = 120.0  # a reader or another run's commit holds the file only briefly
FINISHED = frozenset({"done", "pruned"})  # statuses a run never recomputes


@dataclass
class RunSummary:
    run_id: str
    store_path: Path
    planned: int
    skipped: int
    done: int = 0
    failed: int = 0
    pruned: int = 0  # search trials their pruning rule stopped (finished, never selected)
    failures: list[str] = field(default_factory=list)
    selected: list[CellTask] = field(default_factory=list)  # the cells this run was given
    imported: int = 0  # cells imported from the spec's results folders


def output_dir(loaded: LoadedSpec, override: str | Path | None = None) -> Path:
    """``--out``, else ``experiment.output`` (relative to the spec), else ./results/<name>."""
    if override is not None:
        return Path(override)
    if loaded.spec.experiment.output:
        return (loaded.base_dir / loaded.spec.experiment.output).resolve()
    return Path("results") / loaded.spec.experiment.name


def _plan_rows(loaded: LoadedSpec, tasks: list[CellTask]) -> list[dict]:
    rows = []
    for t in tasks:
        cls = get_method(t.kind)
        rows.append(
            {
                "experiment": loaded.spec.experiment.name,
                "dataset": t.dataset,
                "method": t.method,
                "seed": t.seed,
                "cell_id": t.cell_id,
                "kind": t.kind,
                "family": cls.family,
                "display_name": loaded.spec.methods[t.method].label or cls.display_name or t.method,
                "domains": json.dumps(t.domains),
            }
        )
    return rows


def plan_status(loaded: LoadedSpec, store_path: Path, device: str | None = None) -> pl.DataFrame:
    """The cell matrix with each cell's stored status and compute seconds (without writing
    anything). A pending cell gets ``estimate_s``: the median seconds (training + inference)
    of finished cells, stored or published in the spec's results folders, with the same
    dataset, kind, device type and parameters (other seeds), else of the same dataset, kind
    and device type (``estimate_from`` says which).

    ``origin`` says where a finished cell came from (``run`` or ``bundle``); a cell that is not
    stored shows ``in bundle`` when one of the spec's results folders holds it (the next run
    imports it) and ``stale`` when only a result of an older code version is stored.
    ``checkpoint`` names the epoch an unfinished cell's mid-training checkpoint reached (the
    next run continues after it). ``data_checked`` is False where the dataset's files are absent
    and the plan comes from a published data card: its bundles are not yet checked against
    the data.

    A search's cells are known only as its sampler proposes them, so the rest of its budget is
    listed too, without a cell id: ``to propose`` (a trial its strategy has not proposed yet)
    and ``awaits selection`` (a seed that runs the selection made on other seeds). Their
    estimate is the full cost of a finished cell of the method: an upper bound where trials
    get pruned."""
    store = Store(store_path, read_only=True) if store_path.exists() else None
    try:
        prepared = {name: prepare_for_reading(loaded, name, None) for name in loaded.spec.datasets}
        target = str(resolve_device(device or loaded.spec.experiment.device))
        search = Search(loaded, plan_cells(loaded, prepared, target))
        tasks = search.propose(store)
        status = store.cell_status([t.cell_id for t in tasks]) if store else {}
        costs = store.cell_costs() if store else []
        origins, stale = _origins_and_stale(store) if store else ({}, set())
    finally:
        if store:
            store.close()
    bundles = bundle_files(loaded.base_dir / f for f in loaded.spec.experiment.results)
    published = {path.stem for path in bundles}
    costs = costs + _published_costs(bundles, {cell for cell, *_ in costs})
    seconds = {cell: spent for cell, *_rest, spent in costs}
    exact: dict[tuple[str, str, str, str], list[float]] = {}
    by_kind: dict[tuple[str, str, str], list[float]] = {}
    for _cell, fingerprint, kind, params, cell_device, spent in costs:
        device_type = str(cell_device).split(":")[0]
        exact.setdefault((fingerprint, kind, device_type, _canonical(params)), []).append(spent)
        by_kind.setdefault((fingerprint, kind, device_type), []).append(spent)

    def estimate(task: CellTask, exact_params: bool = True) -> tuple[float | None, str | None]:
        key = (task.prepared.fingerprint, task.kind, task.device.split(":")[0])
        params = _canonical(json.dumps(task.params.model_dump(mode="json")))
        same = exact.get((*key, params)) if exact_params else None
        pool, source = (same, "same params") if same else (by_kind.get(key), "same kind")
        return (statistics.median(pool), source) if pool else (None, None)

    rows: list[dict] = []
    for t in tasks:
        state = status.get(t.cell_id, "pending")
        if state == "pending" and t.cell_id in published:
            state = "in bundle"
        elif (
            state == "pending"
            and (
                t.prepared.fingerprint,
                t.kind,
                _canonical(json.dumps(t.params.model_dump(mode="json"))),
                t.seed,
            )
            in stale
        ):
            state = "stale"
        saved = checkpoint_file(store_path.parent, t.cell_id)
        resumable = state != "done" and saved.exists()
        # a finished (or pruned: rerunning prunes it again) cell needs no estimate
        guess = (None, None) if state in FINISHED or state == "in bundle" else estimate(t)
        rows.append(
            _plan_row(t, t.cell_id, state, origins.get(t.cell_id), seconds.get(t.cell_id), guess)
            | {"checkpoint": saved_progress(saved) if resumable else None}
        )
    for state, task in _unproposed(search):
        rows.append(_plan_row(task, None, state, None, None, estimate(task, exact_params=False)))
    return pl.DataFrame(
        rows,
        schema={
            "dataset": pl.String,
            "method": pl.String,
            "kind": pl.String,
            "seed": pl.Int64,
            "cell_id": pl.String,
            "status": pl.String,
            "origin": pl.String,
            "seconds": pl.Float64,
            "estimate_s": pl.Float64,
            "estimate_from": pl.String,
            "checkpoint": pl.String,
            "data_checked": pl.Boolean,
        },
    )


def _plan_row(
    task: CellTask,
    cell_id: str | None,
    state: str,
    origin: str | None,
    seconds: float | None,
    guess: tuple[float | None, str | None],
) -> dict:
    return {
        "dataset": task.dataset,
        "method": task.method,
        "kind": task.kind,
        "seed": task.seed,
        "cell_id": cell_id,
        "status": state,
        "origin": origin,
        "seconds": seconds,
        "estimate_s": guess[0],
        "estimate_from": guess[1],
        "checkpoint": None,
        "data_checked": task.prepared.checked,
    }


def _unproposed(search: Search) -> list[tuple[str, CellTask]]:
    """The rest of every search's budget: one (``to propose``, base task) per trial its
    strategy has not proposed yet on each searched seed, and one (``awaits selection``, base
    task) per seed that will run a selection not made yet."""
    rest: list[tuple[str, CellTask]] = []
    for group in search.groups:
        missing = group.budget - len(group.points)
        for seed in group.searched:
            rest += [("to propose", group.seeds[seed].base)] * max(missing, 0)
        if group.select_on:
            for seed, state in group.seeds.items():
                if seed not in group.searched and seed not in group.finals:
                    rest.append(("awaits selection", state.base))
    return rest


def _published_costs(
    bundles: list[Path], known: set[str]
) -> list[tuple[str, str, str, str, str, float]]:
    """``Store.cell_costs`` rows of the finished cells in published bundles not stored yet, so
    a plan can estimate before anything is imported."""
    rows = []
    for path in bundles:
        if path.stem in known:
            continue
        cell = (read_bundle_meta(path) or {}).get("cell") or {}
        if cell.get("status") != "done" or cell.get("train_s") is None:
            continue
        spent = float(cell["train_s"]) + float(cell.get("infer_s") or 0.0)
        rows.append(
            (
                str(cell.get("cell_id")),
                str(cell.get("dataset_fingerprint")),
                str(cell.get("kind")),
                str(cell.get("params")),
                str(cell.get("device") or "cpu"),
                spent,
            )
        )
    return rows


def _origins_and_stale(store: Store) -> tuple[dict[str, str], set[tuple]]:
    """Stored cells' origins, and the (dataset, kind, params, seed) of stale (older code
    version) cells; stores older than bundles have neither column nor stale cells."""
    try:
        rows = store.con.execute(
            "SELECT cell_id, coalesce(origin, 'run'), status, dataset_fingerprint, kind, "
            "params, seed FROM cells"
        ).fetchall()
    except duckdb.Error:
        return {}, set()
    origins = {row[0]: row[1] for row in rows}
    stale = {(fp, kind, _canonical(params), seed) for _c, _o, st, fp, kind, params, seed in rows
             if st == "stale"}  # fmt: skip
    return origins, stale


def _canonical(params_json: str) -> str:
    return json.dumps(json.loads(params_json), sort_keys=True)


def run_spec(
    loaded: LoadedSpec,
    out: Path,
    device: str | None = None,
    executor: Executor | None = None,
    console: Console | None = None,
    retry_failed: bool = True,
    only_methods: list[str] | None = None,
    only_seeds: list[int] | None = None,
    shard: tuple[int, int] | None = None,
    checkpoint_every_s: float = 600.0,
) -> RunSummary:
    """Run the spec's pending cells; ``only_methods`` / ``only_seeds`` restrict this run to
    some methods / seeds, ``shard`` (I, N) to the I-th of N deterministic slices of the plan
    (the plan and the report still cover the whole matrix). Methods that can resume save
    their training state in ``out/checkpoints`` at most every ``checkpoint_every_s``
    seconds, and a rerun continues a killed cell from there (:mod:`methods.checkpoint`).
    Bundles in the spec's ``experiment.results`` folders are imported first, so the cells
    they hold are reused. The report is not written here: the CLI (``harness run``) renders
    it after this returns, so that nothing in ``harness/`` depends on ``reports/``."""
    console = console or Console(stderr=True)
    executor = executor or InProcessExecutor()
    device_name = device or loaded.spec.experiment.device
    torch_device = resolve_device(device_name)
    _check_restrictions(loaded, only_methods, only_seeds)
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / "results.duckdb"
    run_id = datetime.now().strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]
    # One writer per store: a second `harness run` on this store stops here (StoreBusy, exit
    # 3) instead of training the same cells; a killed run's lock dies with its process.
    with WriterLock(store_path, run_id), Store(store_path, wait_s=STORE_WAIT_S) as store:
        for orphan, started in store.close_orphan_runs():
            console.print(
                f"[yellow]note[/] run {orphan} (started {started:%Y-%m-%d %H:%M:%S}) ended "
                f"without finishing (killed or crashed); recorded as interrupted",
                highlight=False,
            )
        info = run_info(
            loaded.path,
            loaded.spec_hash,
            loaded.text,
            loaded.spec.experiment.name,
            torch_device,
            sys.argv,
            threads=getattr(executor, "threads", None),
            workers=getattr(executor, "workers", 1),
        )
        store.start_run(run_id, info)
        console.print(
            f"[bold]threads[/] {info['workers']} training process(es) x {info['threads']} "
            f"thread(s) each (torch, OpenMP, MKL, OpenBLAS)",
            highlight=False,
        )
        prepared: dict[str, PreparedData] = {}
        for name in loaded.spec.datasets:
            console.print(f"[bold]dataset[/] {name}: loading, splitting, candidates ...")
            prepared[name] = prepare(loaded, name, store)
            data = prepared[name]
            console.print(
                f"  fingerprint {data.fingerprint}, candidate set "
                f"{data.candidate_set_id} (content {data.candidate_hash}), "
                f"{data.dataset.n_users} users, domains {data.dataset.domain_names}"
            )
        imported = _import_results(loaded, store, prepared, console)
        search = Search(loaded, plan_cells(loaded, prepared, str(torch_device)))
        tasks = search.propose(store)  # without a search: exactly plan_cells
        store.replace_plan(loaded.spec.experiment.name, _plan_rows(loaded, search.plan_tasks()))
        search.save(store, loaded.spec.experiment.name)  # (clears those of a former search)
        status = store.cell_status([t.cell_id for t in tasks])
        finished = {"done", "pruned"} if retry_failed else {"done", "failed", "pruned"}
        seen: set[str] = set()
        wanted = set(only_methods) if only_methods else set(loaded.spec.methods)
        selected: dict[str, CellTask] = {}  # every cell this run was given, by id
        checkpoint_dir = str(out)  # checkpoints go to checkpoint_file(out, cell id)

        def pending_of(tasks: list[CellTask], status: dict, finished: set) -> list[CellTask]:
            chosen = []
            for t in shard_tasks(tasks, *shard) if shard else tasks:
                if t.method not in wanted or (only_seeds and t.seed not in only_seeds):
                    continue
                selected.setdefault(t.cell_id, t)
                if status.get(t.cell_id) not in finished and t.cell_id not in seen:
                    # identical cells (same kind, params, seed) run once
                    chosen.append(
                        replace(
                            t,
                            checkpoint_dir=checkpoint_dir,
                            checkpoint_every_s=checkpoint_every_s,
                        )
                    )
                    seen.add(t.cell_id)
            return chosen

        pending = pending_of(tasks, status, finished)
        summary = RunSummary(
            run_id,
            store_path,
            planned=len(tasks),
            skipped=sum(1 for t in tasks if status.get(t.cell_id) in finished),
            imported=imported,
        )
        store.con.execute(
            "UPDATE runs SET cells_planned = ? WHERE run_id = ?", [len(tasks), run_id]
        )
        console.print(
            f"[bold]plan[/] {len(tasks)} cells: {summary.skipped} already done, "
            f"{len(pending)} to run on {torch_device}"
        )
        state = "interrupted"
        DRAIN.clear()
        INTERRUPT.clear()
        store.release()  # readable between commits: `harness sql` works while cells train
        try:
            _execute(executor, pending, store, run_id, summary, console)
            while search.active and not DRAIN.is_set():  # TPE rounds; then the selection
                with store.held():
                    tasks = search.propose(store)
                    store.replace_plan(
                        loaded.spec.experiment.name, _plan_rows(loaded, search.plan_tasks())
                    )
                    search.save(store, loaded.spec.experiment.name)
                    status = store.cell_status([t.cell_id for t in tasks])
                # a cell tried in this run is not retried in a later round of it
                pending = pending_of(tasks, status, {"done", "failed", "pruned"})
                if not pending:
                    break
                summary.planned = len(tasks)
                console.print(f"[bold]search round[/]: {len(pending)} more trial cells")
                _execute(executor, pending, store, run_id, summary, console)
            state = "drained" if DRAIN.is_set() else "finished"
        finally:
            summary.selected = list(selected.values())
            with store.held():
                store.finish_run(run_id, state, summary.done, summary.failed)
    return summary


def prepare_data(loaded: LoadedSpec, store: Store, reading: bool = False) -> dict[str, PlannedData]:
    """Prepare every dataset into ``store`` (data, users, candidate lists), as a run does;
    ``reading``: a dataset whose files are absent comes from its published data card instead
    (enough to import and report published bundles, marked unchecked)."""
    step = prepare_for_reading if reading else prepare
    return {name: step(loaded, name, store) for name in loaded.spec.datasets}


def record_plan(
    loaded: LoadedSpec, store: Store, prepared: dict[str, PlannedData], device: str = "cpu"
) -> list[CellTask]:
    """Record the spec's plan in ``store`` (search trials proposed from what the store holds)
    and return every cell of it, trials included: what importing bundles, verifying cells or
    reporting on a fresh store needs after :func:`prepare_data`."""
    search = Search(loaded, plan_cells(loaded, prepared, device))
    tasks = search.propose(store)
    store.replace_plan(loaded.spec.experiment.name, _plan_rows(loaded, search.plan_tasks()))
    search.save(store, loaded.spec.experiment.name)
    return tasks


def sync_published(loaded: LoadedSpec, store_path: Path, console: Console) -> int:
    """Import the spec's published results folders into its store (created if absent), so
    `harness report` on a fresh clone renders the committed leaderboard. Skipped, with a note,
    while a run holds the store (its next start imports them anyway)."""
    if not loaded.spec.experiment.results:
        return 0
    check_readable(loaded)  # before the store exists: no empty store is left on failure
    try:
        with WriterLock(store_path, "import"), Store(store_path, wait_s=STORE_WAIT_S) as store:
            prepared = prepare_data(loaded, store, reading=True)
            imported = _import_results(loaded, store, prepared, console)
            record_plan(loaded, store, prepared)
            return imported
    except StoreBusy:
        console.print("[yellow]note[/] a run is writing the store: published bundles not imported")
        return 0


def _import_results(
    loaded: LoadedSpec, store: Store, prepared: dict[str, PlannedData], console: Console
) -> int:
    """Import the bundles of the spec's ``experiment.results`` folders (idempotent)."""
    folders = [loaded.base_dir / folder for folder in loaded.spec.experiment.results]
    if not folders:
        return 0
    report = import_bundles(store, bundle_files(folders), prepared)
    console.print(f"[bold]bundles[/] {', '.join(map(str, folders))}: {report.summary()}")
    for _path, reason in report.rejected:
        console.print(f"[yellow]rejected[/] {reason}", highlight=False)
    return len(report.imported)


def _check_restrictions(
    loaded: LoadedSpec, only_methods: list[str] | None, only_seeds: list[int] | None
) -> None:
    """--only / --seed must name methods and seeds of the spec (checked before any work)."""
    issues = []
    unknown = set(only_methods or ()) - set(loaded.spec.methods)
    if unknown:
        issues.append(
            SpecIssue(
                str(loaded.path),
                ("methods",),
                f"--only names undeclared method(s) {sorted(unknown)}",
            )
        )
    seeds = set(loaded.spec.experiment.seeds)
    if only_seeds and not set(only_seeds) <= seeds:
        issues.append(
            SpecIssue(
                str(loaded.path),
                ("experiment", "seeds"),
                f"--seed names seed(s) {sorted(set(only_seeds) - seeds)} that the spec does not "
                f"list (it has {sorted(seeds)})",
            )
        )
    if issues:
        raise SpecError(issues)


def _execute(
    executor: Executor,
    pending: list[CellTask],
    store: Store,
    run_id: str,
    summary: RunSummary,
    console: Console,
) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    # Without a terminal (logs, CI) the bars are off: finished cells and epoch heartbeats are
    # printed as lines instead, each once.
    with Progress(
        *columns, console=console, transient=False, disable=not console.is_terminal
    ) as progress:
        cells_bar = progress.add_task("cells", total=len(pending))
        epoch_bar = progress.add_task("", total=None, visible=False)

        def on_start(task: CellTask) -> None:
            progress.update(
                epoch_bar,
                visible=True,
                completed=0,
                description=f"{task.dataset}/{task.method}/seed {task.seed}",
            )

        last_print = time.monotonic()

        def on_epoch(task: CellTask, entry: EpochLog) -> None:
            nonlocal last_print
            shown = ", ".join(f"{k} {v:.4f}" for k, v in entry.values.items())
            domain = f" {entry.domain}" if entry.domain else ""
            line = f"{task.method}/seed {task.seed} {entry.stage}{domain} epoch {entry.epoch}"
            line = f"{line}: {shown}"
            progress.update(epoch_bar, description=line)
            now = time.monotonic()
            if not console.is_terminal and (
                entry.epoch % LOG_EVERY_EPOCHS == 0 or now - last_print >= LOG_EVERY_SECONDS
            ):
                console.print(line, highlight=False)  # logs get a heartbeat, not a live bar
                last_print = now

        for result in executor.run(pending, on_start, on_epoch):
            with store.held():
                _commit(store, run_id, result)
            if result.status == "pruned":
                summary.pruned += 1
                if not console.is_terminal:
                    where = result.notes.get("pruned", {})
                    console.print(
                        f"cell {summary.done + summary.failed + summary.pruned}/{len(pending)} "
                        f"pruned: {result.task.dataset}/{result.task.method}/seed "
                        f"{result.task.seed} at validation {where.get('validation')} of "
                        f"{where.get('stage')} ({result.train_s:.1f}s train)"
                    )
            elif result.status == "done":
                summary.done += 1
                if not console.is_terminal:
                    console.print(
                        f"cell {summary.done + summary.failed + summary.pruned}/{len(pending)} "
                        f"done: "
                        f"{result.task.dataset}/{result.task.method}/seed {result.task.seed} "
                        f"({result.train_s:.1f}s train, {result.infer_s:.2f}s eval)"
                    )
            else:
                summary.failed += 1
                first_line = (result.error or "").splitlines()[0] if result.error else "?"
                summary.failures.append(
                    f"{result.task.dataset}/{result.task.method}/"
                    f"seed {result.task.seed}: {first_line}"
                )
                console.print(f"[red]cell failed[/] {summary.failures[-1]}")

            # A machine-readable line per committed cell (tests and wrappers rely on it).
            print(
                f"cell {result.status} {result.task.cell_id} {result.task.dataset} "
                f"{result.task.method} seed={result.task.seed} train_s={result.train_s:.2f}",
                flush=True,
            )
            progress.advance(cells_bar)
            stop_if_interrupted()  # a Ctrl-C swallowed on its way up still stops the run


def _commit(store: Store, run_id: str, result: CellResult) -> None:
    task = result.task
    cls = get_method(task.kind)
    origin = method_origin(task.kind)  # a plugin's distribution and version (None: built-in)
    curves = pl.DataFrame(
        [
            {"stage": c.stage, "domain": c.domain, "epoch": c.epoch, "name": k, "value": float(v)}
            for c in result.curves
            for k, v in c.values.items()
        ],
        schema={
            "stage": pl.String,
            "domain": pl.String,
            "epoch": pl.Int32,
            "name": pl.String,
            "value": pl.Float64,
        },
    )
    values = (
        pl.concat(
            [
                pl.DataFrame(
                    {
                        "stage": v.stage,
                        "domain": v.domain,
                        "name": v.name,
                        "user_idx": np.arange(len(v.values), dtype=np.int32),
                        "value": np.asarray(v.values, dtype=np.float64),
                    },
                    schema_overrides={"domain": pl.String},
                )
                for v in result.user_values
            ]
        )
        if result.user_values
        else None
    )
    now = datetime.now()
    store.write_cell(
        {
            "cell_id": task.cell_id,
            "run_id": run_id,
            "dataset_fingerprint": task.prepared.fingerprint,
            "candidate_set_id": task.prepared.candidate_set_id,
            "kind": task.kind,
            "family": cls.family,
            "params": json.dumps(task.params.model_dump(mode="json")),
            "seed": task.seed,
            "code_version": code_version(task.kind),
            "status": result.status,
            "error": result.error,
            "started_at": result.started_at,
            "finished_at": now,
            "train_s": result.train_s,
            "infer_s": result.infer_s,
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "best_valid": result.best_valid,
            "device": result.device,
            "threads": result.threads,
            "hardware": result.hardware,
            "notes": json.dumps(result.notes, default=str),
            "method_distribution": origin.distribution,
            "method_distribution_version": origin.version,
        },
        result.metrics if result.status == "done" else None,
        curves,
        values,
    )
