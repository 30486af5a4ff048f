"""``harness`` command line: run, validate, plan, report, sql, data stats, methods."""

from __future__ import annotations

import functools
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Declarative, reproducible cross-domain recommendation benchmarks.",
)
data_app = typer.Typer(
    no_args_is_help=True,
    help="Registered datasets (list, fetch into the data home) and statistics of a spec's data.",
)
app.add_typer(data_app, name="data")

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

SpecArg = Annotated[Path, typer.Argument(help="experiment spec (TOML)")]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", help="output folder (default: spec's experiment.output, else results/<name>)"
    ),
]


def friendly(func):
    """Turn expected user errors into one-line messages and distinct exit codes."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from harness.errors import HarnessError
        from harness.spec.load import DataMissing, SpecError

        try:
            return func(*args, **kwargs)
        except SpecError as exc:
            for issue in exc.issues:
                err.print(f"[red]error[/] {escape(str(issue))}", highlight=False, soft_wrap=True)
            raise typer.Exit(3 if isinstance(exc, DataMissing) else 2) from None
        except (HarnessError, FileNotFoundError) as exc:
            err.print(f"[red]error[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: finished cells are stored; rerun to resume")
            raise typer.Exit(130) from None
        except Exception as exc:
            from harness.store.store import damaged_store_error

            damaged = damaged_store_error(exc)  # a damaged block met after opening
            if damaged is None:
                raise
            err.print(f"[red]error[/] {damaged}", highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None

    return wrapper


def _interrupt(_signum: int, _frame: object) -> None:
    from harness.runner.executor import INTERRUPT

    INTERRUPT.set()  # kept even if a library swallows the exception below
    raise KeyboardInterrupt


def _drain(_signum: int, _frame: object) -> None:
    from harness.runner.executor import DRAIN

    DRAIN.set()
    err.print("[yellow]drain requested[/]: running cells finish and are stored; no new cell starts")


def _load(spec: Path, check_files: bool = True):
    from harness.spec.load import load_spec

    return load_spec(spec, check_files=check_files)


@app.command()
@friendly
def validate(spec: SpecArg) -> None:
    """Check a spec (keys, types, methods, parameters, files, cross-references) and, when the
    data files exist, what needs the data (domains of methods, enough items for negatives)."""
    from harness.search.space import describe as describe_search
    from harness.spec.load import check_against_data

    loaded = _load(spec)
    check_against_data(loaded)
    s = loaded.spec
    n_cells = sum(len(loaded.datasets_of(m)) for m in s.methods) * len(s.experiment.seeds)
    out.print(
        f"[green]ok[/] {spec}: {len(s.datasets)} dataset(s), {len(s.methods)} method(s), "
        f"{len(s.experiment.seeds)} seed(s) -> {n_cells} cells; spec hash {loaded.spec_hash}"
        + describe_search(s)
    )


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


@app.command()
@friendly
def plan(spec: SpecArg, out_dir: OutOpt = None) -> None:
    """Show the cell matrix (dataset x method x seed) and which cells are already done."""
    import polars as pl

    from harness.runner.runner import output_dir, plan_status

    loaded = _load(spec, check_files=False)
    frame = plan_status(loaded, output_dir(loaded, out_dir) / "results.duckdb")
    table = Table(title=f"{loaded.spec.experiment.name}: {len(frame)} cells")
    shown = frame.select(
        "dataset",
        "method",
        "seed",
        pl.col("cell_id").str.slice(0, 8).alias("cell"),
        "status",
        "origin",
        pl.col("seconds").alias("s"),
        pl.col("estimate_s").alias("est. s"),
    )
    if frame["checkpoint"].is_not_null().any():  # a killed long cell continues from there
        shown = shown.with_columns(frame["checkpoint"])
    for col in shown.columns:
        table.add_column(col, no_wrap=True)
    for row in shown.iter_rows():
        table.add_row(*map(_cell_text, row))
    out.print(table)
    counts = frame.group_by("status").len().sort("status").iter_rows()
    out.print(", ".join(f"{s}: {n}" for s, n in counts))
    reduced = {m: loaded.matmul_precision(m) for m in loaded.spec.methods}
    reduced = {m: p for m, p in reduced.items() if p != "highest"}
    if reduced:
        out.print(
            "reduced float32 matmul precision (other numbers, other cell ids): "
            + ", ".join(f"{m} {p}" for m, p in reduced.items())
        )
    unchecked = frame.filter(~pl.col("data_checked"))["dataset"].unique(maintain_order=True)
    for name in unchecked:
        out.print(
            f"[yellow]not yet checked against the data[/]: dataset {name!r} is absent here; its "
            f"published cells come from bundles checked against their data card only "
            f"(`harness run --fetch` or `harness data fetch`, then `harness report` checks them)",
            highlight=False,
        )
    todo = frame.filter(~pl.col("status").is_in(["done", "pruned", "in bundle"]))
    if len(todo):
        timed = todo.filter(pl.col("estimate_s").is_not_null())
        unproposed = todo.filter(pl.col("cell_id").is_null()).height
        budget = (
            f"; {unproposed} of them are search trials or selection runs not proposed yet, "
            f"estimated at a finished cell's full cost (an upper bound where trials get pruned)"
            if unproposed
            else ""
        )
        if not len(timed):
            out.print(
                f"{len(todo)} unfinished cells: no estimate yet (estimates come from finished "
                f"cells of the same method and dataset){budget}"
            )
            return
        hours = (timed["estimate_s"].sum() or 0.0) / 3600
        out.print(
            f"estimated compute for {len(timed)} of {len(todo)} unfinished cells: "
            f"{hours:.2f} h in one process (median of finished cells of the same method; "
            f"{len(todo) - len(timed)} have none yet){budget}"
        )
        per_method = (
            timed.group_by("dataset", "method", maintain_order=True)
            .agg(pl.len().alias("cells"), (pl.col("estimate_s").sum() / 3600).alias("h"))
            .iter_rows()
        )
        out.print(
            "by method: " + ", ".join(f"{d}/{m} {n} cells {h:.2f} h" for d, m, n, h in per_method),
            highlight=False,
        )


@app.command()
@friendly
def run(
    spec: SpecArg,
    out_dir: OutOpt = None,
    device: Annotated[
        str | None, typer.Option(help="auto | cpu | cuda (overrides the spec)")
    ] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="skip the HTML report")] = False,
    keep_failed: Annotated[
        bool, typer.Option("--keep-failed", help="do not retry cells that failed before")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="run only this method (repeatable); others stay pending"),
    ] = None,
    seed: Annotated[
        list[int] | None,
        typer.Option("--seed", help="run only this seed (repeatable); others stay pending"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="cells run side by side in this many processes (results identical)"
        ),
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="torch threads per worker (default: cores / workers)"),
    ] = None,
    checkpoint_every: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="seconds between mid-training checkpoints of methods that can resume "
            "(GA-MTCDR); a rerun continues a killed cell from its last one (0: every epoch)",
        ),
    ] = 600.0,
    shard: Annotated[
        str | None,
        typer.Option(
            help="I/N: run only the I-th of N deterministic slices of the plan and export "
            "their bundles (shared-nothing runs; merge with `harness import`)"
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            help="after the run, write a bundle of every finished cell this run was given "
            "into this folder (default with --shard: <out>/bundles)"
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            help="inprocess | pool | ray (default: pool when --workers > 1, else inprocess)"
        ),
    ] = None,
    address: Annotated[
        str,
        typer.Option(
            help="ray: 'local' starts a private Ray instance; 'auto', HOST:PORT or "
            "ray://HOST:PORT joins a running cluster"
        ),
    ] = "local",
    cpus_per_cell: Annotated[
        float, typer.Option(min=0.01, help="ray: CPUs per cell (torch threads = its floor)")
    ] = 1.0,
    gpus_per_cell: Annotated[
        float, typer.Option(min=0.0, help="ray: GPUs per cell (0.5 = two cells per GPU)")
    ] = 0.0,
    max_retries: Annotated[
        int,
        typer.Option(min=0, help="ray: reruns of a cell whose worker or node died"),
    ] = 2,
    fetch: Annotated[
        bool,
        typer.Option(
            "--fetch",
            help="first fetch the registered data files the spec needs and the data home "
            "lacks (harness data fetch; $HARNESS_DATA_MIRROR is tried first)",
        ),
    ] = False,
) -> None:
    """Run every pending cell of a spec, store per-user results, write the report."""
    from harness.runner.threads import apply_threads, thread_policy

    # Thread policy first: the pool sizes are fixed before torch starts its runtimes.
    policy = thread_policy(workers, threads)
    apply_threads(policy.threads)
    if policy.source == "free cores/workers":
        err.print(
            f"[yellow]note[/] {policy.busy:.1f} of {policy.cores} cores are busy with other "
            f"processes: {policy.threads} thread(s) per training process (--threads overrides)",
            highlight=False,
        )

    from harness.runner.executor import InProcessExecutor
    from harness.runner.pool import PoolExecutor
    from harness.runner.publish import export_cells, method_labels, parse_shard
    from harness.runner.runner import output_dir, run_spec
    from harness.store.store import Store

    signal.signal(signal.SIGINT, _interrupt)  # Ctrl-C
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`/`timeout` stop it like Ctrl-C
    signal.signal(signal.SIGUSR1, _drain)  # `kill -USR1`: finish running cells, start none

    if device not in (None, "auto", "cpu", "cuda"):
        raise typer.BadParameter("use auto, cpu or cuda", param_hint="--device")
    kind = executor or ("pool" if workers > 1 else "inprocess")
    if kind not in ("inprocess", "pool", "ray"):
        raise typer.BadParameter("use inprocess, pool or ray", param_hint="--executor")
    if kind == "ray":
        from harness.runner.ray_executor import RayMissing, import_ray

        try:
            import_ray()
        except RayMissing as exc:
            from rich.markup import escape

            err.print(f"[red]error[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
    if fetch:
        _fetch_for(spec)
    loaded = _load(spec)
    target = output_dir(loaded, out_dir)
    slice_ = parse_shard(shard) if shard else None
    if kind == "ray":
        from harness.runner.ray_executor import RayExecutor

        chosen = RayExecutor(
            address,
            cpus_per_cell,
            gpus_per_cell,
            max_retries,
            device=device or loaded.spec.experiment.device,
        )
    elif kind == "pool":
        chosen = PoolExecutor(workers, policy.threads)
    else:
        chosen = InProcessExecutor()
    summary = run_spec(
        loaded,
        target,
        device=device,
        console=err,
        retry_failed=not keep_failed,
        only_methods=only,
        only_seeds=seed,
        executor=chosen,
        shard=slice_,
        checkpoint_every_s=checkpoint_every,
    )
    destination = export or (target / "bundles" if slice_ else None)
    if destination is not None:
        with Store(summary.store_path, read_only=True, wait_s=120.0) as store:
            paths = export_cells(
                store,
                summary.selected,
                destination,
                loaded.spec.experiment.name,
                method_labels(loaded),
            )
        err.print(f"exported {len(paths)} bundle(s) to {destination}", highlight=False)
    err.print(
        f"[bold]done[/] {summary.done} ran, {summary.skipped} reused, "
        f"{summary.failed} failed; store {summary.store_path}"
    )
    report_failed = False
    if not no_report:
        report_failed = not _write_run_report(loaded, target)
    if summary.failed:
        for line in summary.failures:
            err.print(f"[red]failed[/] {line}", highlight=False)
        raise typer.Exit(1)
    if report_failed:
        raise typer.Exit(1)


def _fetch_for(spec: Path) -> None:
    """``--fetch``: place the registered files the spec's datasets read, verified."""
    from harness.data.fetch import fetch_missing

    loaded = _load(spec, check_files=False)
    needed = [
        path
        for config in loaded.loader_configs.values()
        for path, _hint in config.required_files(loaded.base_dir)
    ]
    for report in fetch_missing(needed, console=err):
        err.print(f"fetched: {report.summary()}", highlight=False)


def _write_run_report(loaded, target: Path) -> bool:
    """The report at the end of ``harness run`` (the runner itself never imports reports/);
    False, with one line saying so, if it could not be written (the results stay stored)."""
    from reports.leaderboard import ReportOptions, write_report

    try:
        path = write_report(
            target / "results.duckdb",
            target / "report",
            experiment=loaded.spec.experiment.name,
            options=ReportOptions.from_spec(loaded.spec),
        )
    except Exception as exc:  # the stored results stay valid; the report can be redone
        first = str(exc).splitlines()[0] if str(exc) else ""
        err.print(
            f"[red]report failed[/]: {type(exc).__name__}: {first}; the results are stored, "
            f"rerun `harness report` after fixing it",
            highlight=False,
        )
        return False
    err.print(f"report {path}")
    return True


@app.command()
@friendly
def export(
    spec: SpecArg,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="bundle folder (default: leaderboard/<experiment name>)"),
    ] = None,
    results: Annotated[
        Path | None, typer.Option(help="results folder holding the store (default as for run)")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="export only this method (repeatable)")
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(help="delete bundles in the folder that are not finished cells of the plan"),
    ] = False,
) -> None:
    """Write one result bundle (Parquet, named by cell id) per finished cell of the spec."""
    from harness.runner.cells import plan_cells
    from harness.runner.prepare import check_readable, prepare_for_reading
    from harness.runner.publish import export_cells, method_labels, write_index
    from harness.runner.runner import output_dir
    from harness.search.driver import Search
    from harness.store.datacard import card_declaration, write_card
    from harness.store.store import Store

    loaded = _load(spec, check_files=False)
    check_readable(loaded)
    store_path = output_dir(loaded, results) / "results.duckdb"
    _check_methods(loaded, only)
    destination = out_dir or Path("leaderboard") / loaded.spec.experiment.name
    with Store(store_path, read_only=True, wait_s=120.0) as store:
        prepared = {name: prepare_for_reading(loaded, name, None) for name in loaded.spec.datasets}
        proposed = Search(loaded, plan_cells(loaded, prepared, "cpu")).propose(store)
        # cells published in another of the spec's results folders (a tuning spec reuses the
        # paper-settings leaderboard) are not written twice
        elsewhere = {
            path.stem
            for folder in loaded.spec.experiment.results
            if (loaded.base_dir / folder).resolve() != destination.resolve()
            for path in (loaded.base_dir / folder).glob("*.parquet")
        }
        tasks = [  # search trials too
            t for t in proposed if (not only or t.method in only) and t.cell_id not in elsewhere
        ]
        paths = export_cells(
            store, tasks, destination, loaded.spec.experiment.name, method_labels(loaded)
        )
        exported = {t.prepared.name for t in tasks if destination / f"{t.cell_id}.parquet" in paths}
        cards = [  # what the folder needs to be browsed where the raw data is absent
            write_card(
                store,
                destination,
                prepared[name].candidate_set_id,
                card_declaration(loaded.loader_configs[name]),
            )
            for name in sorted(exported)
        ]
    if prune:
        keep = {p.name for p in paths} if not only else None
        removed = [
            p for p in destination.glob("*.parquet") if keep is not None and p.name not in keep
        ]
        for path in removed:
            path.unlink()
        err.print(f"pruned {len(removed)} bundle(s) not in the plan", highlight=False)
    index = write_index(
        destination,
        f"Result bundles of {spec.as_posix()} ({loaded.spec.experiment.name})",
        [
            f"harness import {destination.as_posix()} --spec {spec.as_posix()}",
            f"harness report {spec.as_posix()}",
            f"harness verify {spec.as_posix()} --sample 1",
        ],
    )
    err.print(
        f"exported {len(paths)} bundle(s) and {len(cards)} data card(s) to {destination}; "
        f"index {index}",
        highlight=False,
    )


@app.command("import")
@friendly
def import_(
    paths: Annotated[list[Path], typer.Argument(help="bundle files or folders of bundles")],
    spec: Annotated[
        Path | None, typer.Option(help="spec whose data the bundles must match (prepared first)")
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="results.duckdb to import into (data already prepared)")
    ] = None,
    out_dir: OutOpt = None,
) -> None:
    """Import result bundles after checking each one (cell id, digest, data, code version)."""
    from harness.runner.prepare import check_readable
    from harness.runner.publish import bundle_files, import_bundles
    from harness.runner.runner import output_dir, prepare_data, record_plan
    from harness.store.lock import WriterLock
    from harness.store.store import Store

    if (spec is None) == (store is None):
        raise typer.BadParameter("give exactly one of --spec SPEC or --store FILE")
    files = bundle_files(paths)
    if spec is not None:
        loaded = _load(spec, check_files=False)
        check_readable(loaded)
        store_path = output_dir(loaded, out_dir) / "results.duckdb"
    else:
        loaded, store_path = None, store
        if not store_path.exists():
            raise FileNotFoundError(f"no results store at {store_path}")
    with WriterLock(store_path, "import"), Store(store_path, wait_s=120.0) as db:
        prepared = prepare_data(loaded, db, reading=True) if loaded is not None else None
        result = import_bundles(db, files, prepared)
        if loaded is not None:
            record_plan(loaded, db, prepared)
    for _path, reason in result.rejected:
        err.print(f"[red]rejected[/] {reason}", highlight=False)
    err.print(f"{len(files)} bundle(s): {result.summary()}; store {store_path}", highlight=False)
    if result.rejected:
        raise typer.Exit(3)


@app.command()
@friendly
def verify(
    spec: SpecArg,
    cell: Annotated[
        list[str] | None, typer.Option(help="cell id or unique prefix (repeatable)")
    ] = None,
    sample: Annotated[int, typer.Option(min=0, help="also verify N random finished cells")] = 0,
    sample_seed: Annotated[int, typer.Option(help="seed of the random draw")] = 0,
    std_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="equivalence rule (other float kernels than the stored cell's): margin as a "
            "fraction of the seed std of the domain mean",
        ),
    ] = 0.5,
    min_margin: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="equivalence rule: smallest margin of a domain mean (absolute, metric units; "
            "0.002 = 0.2 points of NDCG x 100)",
        ),
    ] = 0.002,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="intra-op threads (default: what the stored cell used, else 1)"),
    ] = None,
    out_dir: OutOpt = None,
) -> None:
    """Retrain stored (e.g. published) cells and compare their per-user rows: exactly where
    this machine selects the same float kernels as the stored cell (CPU model and instruction
    set, torch / BLAS / oneDNN, threads, GPU), else by an equivalence test with a stated
    margin. Exit 0: exact or equivalent; 1: a real difference. The spec's published bundles
    are imported first."""
    from harness.runner.publish import sample_cells
    from harness.runner.runner import output_dir, prepare_data, record_plan, sync_published
    from harness.runner.verify import EquivalenceRule, verify_cell
    from harness.runner.work import resolve_device
    from harness.store.lock import WriterLock
    from harness.store.store import Store

    loaded = _load(spec)
    store_path = output_dir(loaded, out_dir) / "results.duckdb"
    sync_published(loaded, store_path, err)
    if not store_path.exists():
        raise FileNotFoundError(
            f"no results store at {store_path}; import the bundles first (harness import)"
        )
    margins = EquivalenceRule(std_fraction=std_fraction, min_margin=min_margin)
    target = str(resolve_device(device or loaded.spec.experiment.device))
    outcomes = []
    with WriterLock(store_path, "verify"), Store(store_path, wait_s=120.0) as db:
        tasks = record_plan(loaded, db, prepare_data(loaded, db), target)
        done_ids = {c for c, s in db.cell_status([t.cell_id for t in tasks]).items() if s == "done"}
        done = [t for t in tasks if t.cell_id in done_ids]
        chosen = []
        for prefix in cell or []:
            match = {t.cell_id: t for t in done if t.cell_id.startswith(prefix)}
            if len(match) != 1:
                raise typer.BadParameter(
                    f"{prefix!r} matches {len(match)} finished cells of the plan; give a "
                    f"longer prefix (harness plan lists them)",
                    param_hint="--cell",
                )
            chosen.extend(match.values())
        chosen += [t for t in sample_cells(done, sample, sample_seed) if t not in chosen]
        if not chosen:
            raise typer.BadParameter("name cells with --cell ID or draw some with --sample N")
        for task in chosen:
            err.print(f"retraining {task.dataset}/{task.method}/seed {task.seed} ...")
            outcome = verify_cell(db, task, margins, threads)
            outcomes.append(outcome)
            out.print(outcome.line(), highlight=False)
            if outcome.error:
                err.print(outcome.error.splitlines()[0], highlight=False)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


def _check_methods(loaded, only: list[str] | None) -> None:
    from harness.spec.load import SpecError, SpecIssue

    unknown = sorted(set(only or ()) - set(loaded.spec.methods))
    if unknown:
        raise SpecError(
            [SpecIssue(str(loaded.path), ("methods",), f"--only names undeclared {unknown}")]
        )


@app.command()
@friendly
def report(
    spec: SpecArg,
    out_dir: OutOpt = None,
    reference: Annotated[
        str | None,
        typer.Option(help="reference method (default: experiment.reference_method, else UCLR)"),
    ] = None,
    correction: Annotated[
        str, typer.Option(help="multiple-comparison correction: holm | bh")
    ] = "holm",
    test: Annotated[str, typer.Option(help="test behind the marks: t | wilcoxon")] = "t",
    alpha: Annotated[float, typer.Option(help="significance level")] = 0.05,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the CIs")] = 2000,
) -> None:
    """(Re)write the HTML report, its statistics and table exports from the store."""
    import difflib

    from harness.runner.runner import output_dir, sync_published
    from reports.leaderboard import ReportOptions, build_report

    loaded = _load(spec, check_files=False)
    if reference is not None and reference not in loaded.spec.methods:
        close = difflib.get_close_matches(reference, list(loaded.spec.methods), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise typer.BadParameter(
            f"no method {reference!r} in the spec{hint}", param_hint="--reference"
        )
    try:
        options = ReportOptions.from_spec(
            loaded.spec,
            reference=reference,
            correction=correction,
            test=test,
            alpha=alpha,
            n_boot=bootstrap,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    target = output_dir(loaded, out_dir)
    sync_published(loaded, target / "results.duckdb", err)
    result = build_report(
        target / "results.duckdb",
        target / "report",
        experiment=loaded.spec.experiment.name,
        options=options,
    )
    for dataset, (method, why) in result["references"].items():
        err.print(f"reference for {dataset}: {method} ({why})", highlight=False)
    if not result["persisted"]:
        err.print("[yellow]note[/] statistics were not written to the store (it is in use)")
    err.print(
        f"{len(result['tables'])} tables exported to {result['index'].parent / 'exports'}",
        highlight=False,
    )
    out.print(f"report {result['index']}")


@app.command()
@friendly
def sql(
    query: Annotated[
        str, typer.Argument(help="SQL to run read-only, e.g. 'SELECT * FROM leaderboard'")
    ],
    store: Annotated[Path | None, typer.Option(help="results.duckdb file")] = None,
    spec: Annotated[Path | None, typer.Option(help="spec whose store to query")] = None,
    out_dir: OutOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    limit: Annotated[int, typer.Option(help="rows shown in table format")] = 50,
) -> None:
    """Query the results store read-only (views: per_user, leaderboard, plan, timings, ...).

    The query runs in a sandbox: it can read this store and nothing else (DuckDB external
    access disabled and configuration locked: no other files, no writes, no extensions)."""
    import duckdb
    import polars as pl

    from harness.store.store import StoreLocked, connect_sandbox, fetch

    if store is None:
        if out_dir is not None:
            store = out_dir / "results.duckdb"
        elif spec is not None:
            from harness.runner.runner import output_dir, sync_published

            loaded = _load(spec, check_files=False)
            store = output_dir(loaded) / "results.duckdb"
            if not store.exists():  # a fresh clone: the published results are the store
                sync_published(loaded, store, err)
        else:
            raise typer.BadParameter(
                "give --store FILE, --out DIR or --spec SPEC", param_hint="--store"
            )
    if not store.exists():
        raise FileNotFoundError(f"no results store at {store}; run `harness run` first")
    try:
        con = connect_sandbox(store)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise StoreLocked(
            f"results store {store} is being written by another process (a running "
            f"`harness run`?); DuckDB allows no reader beside a writer: wait for it to finish"
        ) from None
    try:
        if not con.execute("SELECT count(*) FROM cells").fetchall()[0][0]:
            err.print(
                f"[yellow]note[/] the store {store} holds no cells yet (`harness run SPEC`, or "
                f"`harness report SPEC` for a spec with published results)",
                highlight=False,
            )
        frame = fetch(con, query)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err.print(f"[red]sql error[/] {first}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        con.close()
    if fmt == "csv":  # CSV has no lists or structs: such cells are written as JSON text
        nested = [c for c, dtype in frame.schema.items() if dtype.is_nested()]
        frame = frame.with_columns(
            pl.Series(c, [json.dumps(v, default=str) for v in frame[c].to_list()]) for c in nested
        )
        sys.stdout.write(frame.write_csv())
    elif fmt == "json":
        sys.stdout.write(json.dumps(frame.to_dicts(), default=str, indent=1) + "\n")
    else:
        table = Table(show_lines=False)
        wide = Console(soft_wrap=True, width=None if out.is_terminal else 1000)
        for col in frame.columns:
            table.add_column(col)
        for row in frame.head(limit).iter_rows():
            table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
        wide.print(table)
        if len(frame) > limit:
            out.print(f"... {len(frame) - limit} more rows (use --limit or --format csv)")


@data_app.command("stats")
@friendly
def data_stats(spec: SpecArg) -> None:
    """Per-domain users, items, interactions (paper Table 1), the activity distribution and
    the preprocessing funnel (rows read, rows rejected by rule, items kept, users kept)."""
    from harness.data.stats import dataset_statistics, preprocessing_funnel
    from harness.runner.prepare import load_dataset

    loaded = _load(spec)
    for name in loaded.spec.datasets:
        dataset = load_dataset(loaded, name)
        for title, frame in (
            (f"dataset {name}", dataset_statistics(dataset)),
            (f"dataset {name}: preprocessing funnel", preprocessing_funnel(dataset)),
        ):
            # One column per domain keeps the many statistics readable in a terminal.
            table = Table(title=title)
            table.add_column("statistic")
            for domain in frame["domain"]:
                table.add_column(str(domain), justify="right")
            for col in frame.columns[1:]:
                if frame[col].null_count() == len(frame):
                    continue  # a step this loader does not have (e.g. no item deletion)
                table.add_row(col, *(_stat_text(v) for v in frame[col]))
            out.print(table)
        if dataset.source.get("bad_rows"):
            out.print(f"rows skipped (on_bad_rows = skip): {dataset.source['bad_rows']}")


@data_app.command("list")
@friendly
def data_list() -> None:
    """Registered datasets: files, size, licence and whether the data home holds each file
    (present, missing, corrupt, or unpinned: no checksum known, recorded on first fetch)."""
    from harness.data.home import data_home, entry_states
    from harness.data.registry import DATASETS

    home = data_home()
    table = Table(title=f"registered datasets (data home {home}; set $HARNESS_DATA to move it)")
    for col in ("dataset", "files", "size", "state", "licence"):
        table.add_column(col, overflow="fold")
    for entry in DATASETS.values():
        states = entry_states(entry, home=home)
        counts: dict[str, int] = {}
        for state in states:
            counts[state.state] = counts.get(state.state, 0) + 1
        sizes = [f.size for f in entry.files]
        size = f"{sum(s for s in sizes if s) / 1e6:.1f} MB" if all(sizes) else "unknown"
        table.add_row(
            f"[bold]{entry.name}[/]\n{escape(entry.title)}",
            str(len(entry.files)),
            size,
            ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
            escape(entry.licence),
        )
    out.print(table)
    for entry in DATASETS.values():
        for state in entry_states(entry, home=home):
            if state.state == "corrupt":
                out.print(
                    f"[red]corrupt[/] {state.path}: {state.detail}; fetch it again with "
                    f"`harness data fetch {entry.name}`",
                    highlight=False,
                )


@data_app.command("fetch")
@friendly
def data_fetch(
    name: Annotated[str, typer.Argument(help="registered dataset (harness data list)")],
    mirror: Annotated[
        str | None,
        typer.Option(
            help="folder or URL laid out like the data home, tried before the upstream URL "
            "(default: $HARNESS_DATA_MIRROR)"
        ),
    ] = None,
    part: Annotated[
        list[str] | None,
        typer.Option("--part", help="fetch only this part (repeatable), e.g. one Amazon pair"),
    ] = None,
    retries: Annotated[int, typer.Option(min=0, help="retries per file after a failure")] = 4,
) -> None:
    """Download a registered dataset into the data home, each file verified against its pinned
    SHA-256 before it is moved into place; an interrupted download resumes."""
    from harness.data.fetch import fetch_entry, mirror_from_env
    from harness.data.home import entry_dir
    from harness.data.registry import get_entry

    try:
        entry = get_entry(name)
    except KeyError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME") from None
    report = fetch_entry(entry, part, mirror or mirror_from_env(), console=err, retries=retries)
    for path, size, sha in report.unpinned:
        err.print(
            f"[yellow]unpinned[/] {entry.name}/{path}: {size} bytes, sha256 {sha} (recorded in "
            f"the data home; pin it in harness/data/registry.py)",
            highlight=False,
        )
    out.print(f"{entry.name}: {report.summary()}; in {entry_dir(entry)}", highlight=False)
    out.print(f"licence: {entry.licence}\ncite: {entry.citation}", highlight=False)


def _stat_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


@app.command()
def methods() -> None:
    """List methods (built-in and installed plugins) with their origin and typed parameters,
    then plugins that failed to load and kinds claimed twice."""
    from methods.registry import (
        available,
        broken_plugins,
        conflicts,
        describe_parameters,
        method_origin,
    )

    for kind, cls in available().items():
        origin = method_origin(kind)
        label = f" {cls.display_name}" if cls.display_name else ""
        summary = (cls.__doc__ or "").strip().split("\n\n")[0]  # the first paragraph
        out.print(
            f"[bold]{kind}[/]{escape(label)} ({cls.family}, v{cls.version}; "
            f"{escape(str(origin))}): {escape(summary)}"
        )
        for param in describe_parameters(cls):
            default = param.default if param.default == "(required)" else f"= {param.default}"
            bounds = f" ({param.constraints})" if param.constraints else ""
            out.print(
                f"    {param.name}: {param.type} {default}{bounds}  {param.description}",
                highlight=False,
                markup=False,
            )
    for kind, origins in conflicts().items():
        claimants = " and ".join(origin.detailed() for origin in origins)
        out.print(f"[red]kind {kind!r} claimed twice[/] (unusable): {escape(claimants)}")
    broken = broken_plugins()
    if broken:
        out.print(f"[red]{len(broken)} plugin(s) failed to load[/] (their methods are missing):")
        for plugin in broken:
            out.print(f"    {plugin}", highlight=False, markup=False)


if __name__ == "__main__":  # pragma: no cover
    app()
