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
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Declarative, reproducible cross-domain recommendation benchmarks.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets declared in a spec.")
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
        from harness.spec.load import SpecError

        try:
            return func(*args, **kwargs)
        except SpecError as exc:
            for issue in exc.issues:
                err.print(f"[red]error[/] {issue}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (HarnessError, FileNotFoundError) as exc:
            err.print(f"[red]error[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: finished cells are stored; rerun to resume")
            raise typer.Exit(130) from None

    return wrapper


def _interrupt(_signum: int, _frame: object) -> None:
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
    """Check a spec (keys, types, methods, parameters, files, cross-references)."""
    from harness.search.space import describe as describe_search

    loaded = _load(spec)
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

    loaded = _load(spec)
    frame = plan_status(loaded, output_dir(loaded, out_dir) / "results.duckdb")
    table = Table(title=f"{loaded.spec.experiment.name}: {len(frame)} cells")
    shown = frame.select(
        "dataset",
        "method",
        "seed",
        pl.col("cell_id").str.slice(0, 8).alias("cell"),
        "status",
        pl.col("seconds").alias("s"),
        pl.col("estimate_s").alias("est. s"),
    )
    for col in shown.columns:
        table.add_column(col, no_wrap=True)
    for row in shown.iter_rows():
        table.add_row(*map(_cell_text, row))
    out.print(table)
    counts = frame.group_by("status").len().sort("status").iter_rows()
    out.print(", ".join(f"{s}: {n}" for s, n in counts))
    todo = frame.filter(pl.col("status") != "done")
    if len(todo):
        timed = todo.filter(pl.col("estimate_s").is_not_null())
        hours = (timed["estimate_s"].sum() or 0.0) / 3600
        out.print(
            f"estimated compute for {len(timed)} of {len(todo)} unfinished cells: "
            f"{hours:.2f} h in one process (median of finished cells of the same method; "
            f"{len(todo) - len(timed)} have none yet)"
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
) -> None:
    """Run every pending cell of a spec, store per-user results, write the report."""
    from harness.runner.executor import InProcessExecutor
    from harness.runner.pool import PoolExecutor
    from harness.runner.runner import output_dir, run_spec

    signal.signal(signal.SIGTERM, _interrupt)  # `kill`/`timeout` stop it like Ctrl-C
    signal.signal(signal.SIGUSR1, _drain)  # `kill -USR1`: finish running cells, start none

    if device not in (None, "auto", "cpu", "cuda"):
        raise typer.BadParameter("use auto, cpu or cuda", param_hint="--device")
    loaded = _load(spec)
    target = output_dir(loaded, out_dir)
    summary = run_spec(
        loaded,
        target,
        device=device,
        console=err,
        retry_failed=not keep_failed,
        make_report=not no_report,
        only_methods=only,
        only_seeds=seed,
        executor=PoolExecutor(workers, threads) if workers > 1 else InProcessExecutor(),
    )
    err.print(
        f"[bold]done[/] {summary.done} ran, {summary.skipped} reused, "
        f"{summary.failed} failed; store {summary.store_path}"
    )
    if summary.report_path:
        err.print(f"report {summary.report_path}")
    if summary.failed:
        for line in summary.failures:
            err.print(f"[red]failed[/] {line}", highlight=False)
        raise typer.Exit(1)


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

    from harness.runner.runner import output_dir
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
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    limit: Annotated[int, typer.Option(help="rows shown in table format")] = 50,
) -> None:
    """Query the results store read-only (views: per_user, leaderboard, plan, timings, ...)."""
    import duckdb

    from harness.runner.runner import output_dir
    from harness.store.store import StoreLocked, connect_read_only, fetch

    if store is None:
        if spec is None:
            raise typer.BadParameter("give --store FILE or --spec SPEC", param_hint="--store")
        store = output_dir(_load(spec, check_files=False)) / "results.duckdb"
    if not store.exists():
        raise FileNotFoundError(f"no results store at {store}; run `harness run` first")
    try:
        con = connect_read_only(store)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise StoreLocked(
            f"results store {store} is being written by another process (a running "
            f"`harness run`?); DuckDB allows no reader beside a writer: wait for it to finish"
        ) from None
    try:
        frame = fetch(con, query)
    except duckdb.Error as exc:
        err.print(f"[red]sql error[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        con.close()
    if fmt == "csv":
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
    """Per-domain users, items, interactions (paper Table 1) and the activity distribution."""
    from harness.data.stats import dataset_statistics
    from harness.runner.prepare import load_dataset

    loaded = _load(spec)
    for name in loaded.spec.datasets:
        frame = dataset_statistics(load_dataset(loaded, name))
        # One column per domain keeps the many activity statistics readable in a terminal.
        table = Table(title=f"dataset {name}")
        table.add_column("statistic")
        for domain in frame["domain"]:
            table.add_column(str(domain), justify="right")
        for col in frame.columns[1:]:
            table.add_row(
                col, *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in frame[col])
            )
        out.print(table)


@app.command()
def methods() -> None:
    """List registered methods and their typed parameters with defaults."""
    from methods.registry import available

    for kind, cls in available().items():
        out.print(f"[bold]{kind}[/] ({cls.family}, v{cls.version}): {(cls.__doc__ or '').strip()}")
        for name, info in cls.Params.model_fields.items():
            out.print(f"    {name} = {info.default!r}  {info.description or ''}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
