"""Build the static report: ``index.html``, one page per dataset, and table exports.

Reads the DuckDB store only (its documented views), writes the report settings and the
significance rows back into the store so that ``harness sql`` sees exactly what the pages show.
Everything is self-contained: CSS, the table-sorting script and the SVG figures are inline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from harness.store.store import Store, StoreLocked, connect_read_only, fetch
from reports.compare import Pair, compute_significance
from reports.exports import to_csv, to_latex, to_markdown
from reports.figures import (
    activity_figure,
    bucket_figures,
    curve_figures,
    rank_figures,
    temperature_figures,
)
from reports.model import Table
from reports.options import ReportOptions
from reports.paper import PAPER, paper_deltas, protocol_differences
from reports.queries import ReportData, load_report_data
from reports.stats import CORRECTION_NAMES, TEST_NAMES
from reports.tables import (
    Context,
    ablation_tables,
    backbone_tables,
    bucket_tables,
    dataset_table,
    find_ladders,
    leaderboard_table,
    rank_agreement,
    significance_tables,
    sparse_table,
    stage_timings_table,
    timings_table,
)
from reports.tuning import has_search, tuning_blocks, tuning_page_name

__all__ = ["Block", "build_report", "choose_references", "page_name", "write_report"]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "x"


def page_name(dataset: str) -> str:
    return f"dataset-{safe_name(dataset)}.html"


@dataclass
class Block:
    kind: str  # table | figure | text | link | bullets | details
    payload: Any = None
    summary: str = ""
    children: list[Block] = field(default_factory=list)


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


# -- choices -------------------------------------------------------------------------------------
def choose_references(data: ReportData, options: ReportOptions) -> dict[str, tuple[str, str]]:
    """Per dataset: (reference method, why). Spec's reference_method, else UCLR, else the best."""
    out: dict[str, tuple[str, str]] = {}
    for dataset in data.datasets:
        board = data.leaderboard.filter(
            (pl.col("dataset") == dataset) & (pl.col("ranking") == "sampled")
        )
        present = set(board["method"].unique().to_list())
        if not present:
            continue
        note = ""
        if options.reference:
            if options.reference in present:
                out[dataset] = (options.reference, "set by experiment.reference_method")
                continue
            note = f"the requested reference '{options.reference}' has no results here; "
        info = data.methods.filter(
            (pl.col("dataset") == dataset)
            & (pl.col("kind") == "uclr")
            & pl.col("method").is_in(list(present))
        ).to_dicts()
        if info:
            info.sort(key=lambda r: (r["backbone"] not in (None, "bprmf"), r["method"]))
            out[dataset] = (info[0]["method"], note + "the UCLR method of the run (kind uclr)")
            continue
        k = min(board["k"].to_list())
        best = (
            board.filter(pl.col("k") == k)
            .group_by("method")
            .agg(pl.col("ndcg_mean").mean().alias("score"))
            .sort(["score", "method"], descending=[True, False])
        )
        out[dataset] = (
            best["method"][0],
            note + f"no UCLR in this run: the best method by NDCG@{k} averaged over domains",
        )
    return out


def _pairs(data: ReportData, refs, ladders) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {}
    for dataset, (ref, _) in refs.items():
        present = sorted(
            data.leaderboard.filter(pl.col("dataset") == dataset)["method"].unique().to_list()
        )
        pairs = [Pair(m, ref, "reference") for m in present if m != ref]
        for ladder in ladders.get(dataset, []):
            pairs += [Pair(ladder[i], ladder[i - 1], "ladder") for i in range(1, len(ladder))]
        out[dataset] = pairs
    return out


# -- store access ----------------------------------------------------------------------------------
def _open(store_path: Path, persist: bool) -> tuple[duckdb.DuckDBPyConnection, Store | None, str]:
    if not store_path.exists():
        raise FileNotFoundError(f"no results store at {store_path}; run `harness run` first")
    why = ""
    if persist:
        try:
            store = Store(store_path)
            store.con.execute("SET enable_progress_bar = false")
            return store.con, store, ""
        except StoreLocked:
            why = "the store is in use by another process"
        except (duckdb.Error, OSError) as exc:  # e.g. a read-only file
            why = f"the store cannot be written ({type(exc).__name__})"
    con = connect_read_only(store_path)
    con.execute("SET enable_progress_bar = false")
    return con, None, why


def _latest_spec_text(con: duckdb.DuckDBPyConnection, experiment: str) -> str | None:
    rows = con.execute(
        "SELECT spec_text FROM runs WHERE experiment = ? ORDER BY started_at DESC LIMIT 1",
        [experiment],
    ).fetchall()
    return rows[0][0] if rows else None


def _write_settings(store: Store, experiment: str, options: ReportOptions) -> None:
    store.con.execute(
        "INSERT OR REPLACE INTO report_settings VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?)",
        [
            experiment,
            list(options.buckets) if options.buckets is not None else None,
            options.sparse_max,
            options.test,
            options.correction,
            options.alpha,
            options.n_boot,
            datetime.now(),
        ],
    )


def _persist(store: Store, experiment: str, refs: dict, sig: pl.DataFrame) -> None:
    with store.transaction():
        store.con.execute(
            "UPDATE report_settings SET reference = ? WHERE experiment = ?",
            [json.dumps({d: r[0] for d, r in refs.items()}), experiment],
        )
        store.con.execute("DELETE FROM significance_results WHERE experiment = ?", [experiment])
        if len(sig):
            store.con.register("sig_df", sig)
            columns = ", ".join(sig.columns)
            store.con.execute(
                f"INSERT INTO significance_results ({columns}) SELECT {columns} FROM sig_df"
            )
            store.con.unregister("sig_df")


# -- pages ---------------------------------------------------------------------------------------
def _provenance(con: duckdb.DuckDBPyConnection, data: ReportData) -> dict:
    cells = data.cells
    devices = sorted({d for d in data.plan["device"].to_list() if d})
    versions = sorted(
        {
            f"{r['method']}: {r['code_version']}"
            for r in data.plan.join(cells, on="cell_id", how="inner").iter_rows(named=True)
            if r.get("code_version")
        }
    )
    runs = fetch(
        con,
        "SELECT run_id, started_at, finished_at, status, cells_done, cells_failed, git_sha, "
        "git_dirty, device FROM runs WHERE experiment = ? ORDER BY started_at DESC",
        [data.experiment],
    )
    verifications = fetch(
        con,
        "SELECT p.dataset, coalesce(p.display_name, p.method) AS method, p.seed, v.cell_id, "
        "v.verified_at, v.rule, v.reason, v.margin, v.n_rows_differ, v.n_rows, "
        "v.max_mean_ndcg_diff, v.tost_p, v.ok, v.device, v.stored_device "
        "FROM verifications v JOIN plan_cells p USING (cell_id) WHERE p.experiment = ? "
        "ORDER BY p.dataset, p.method, p.seed, v.verified_at",
        [data.experiment],
    )
    return {
        "run": data.run,
        "versions": data.versions,
        "seeds": data.seeds,
        "devices": devices,
        "code_versions": versions,
        "datasets": data.protocol.to_dicts(),
        "runs": runs.to_dicts(),
        "verifications": verifications.to_dicts(),
    }


def _dataset_sections(ctx: Context, dataset: str) -> list[Section]:
    ks = ctx.ks(dataset)
    sections: list[Section] = []

    def add(section_id: str, title: str, blocks: list[Block], missing: str) -> None:
        blocks = [b for b in blocks if b.payload is not None or b.children or b.kind == "text"]
        if not [b for b in blocks if b.kind != "text"]:
            blocks = [*blocks, Block("text", f"Not in this run: {missing}", summary="missing")]
        sections.append(Section(section_id, title, blocks))

    ref = ctx.references.get(dataset)
    intro = []
    if ref:
        intro.append(
            Block(
                "text",
                f"Reference method: {ctx.names(dataset).get(ref[0], ref[0])} "
                f"({ref[1]}). Significance marks compare every method with it.",
            )
        )
    t1 = dataset_table(ctx, [dataset])
    add(
        "data",
        "Data (Table 1, Figs. 3/4)",
        [*intro, Block("table", t1), Block("figure", activity_figure(ctx, dataset))],
        "no dataset statistics",
    )

    boards = []
    for ranking in ctx.rankings(dataset):
        for k in ctx.ks(dataset, ranking):
            boards.append(Block("table", leaderboard_table(ctx, dataset, ranking, k)))
    add("leaderboard", "Leaderboards (Tables 2/8)", boards, "no finished cells yet")

    sig_tables = significance_tables(ctx, dataset)
    add(
        "significance",
        "Statistics",
        [Block("details", summary=t.title, children=[Block("table", t)]) for t in sig_tables],
        "no comparisons (a reference and at least one other method are needed)",
    )

    sparse = [Block("table", sparse_table(ctx, dataset, k)) for k in ks]
    buckets = [Block("figure", f) for f in bucket_figures(ctx, dataset)]
    bucket_blocks = [Block("table", t) for k in ks for t in bucket_tables(ctx, dataset, k)]
    add(
        "sparse",
        "Sparse users and activity buckets (Table 3)",
        sparse
        + buckets
        + (
            [Block("details", summary="Tables per activity bucket", children=bucket_blocks)]
            if bucket_blocks
            else []
        ),
        "no per-user results",
    )

    add(
        "ablation",
        "Ablation ladder (Tables 4/5)",
        [Block("table", t) for t in ablation_tables(ctx, dataset)],
        "no UCLR ablation variants (kinds pge, pge_ae, pge_cl_ae, pge_ucl_ae with uclr)",
    )
    add(
        "backbones",
        "Pretraining backbones (Table 6)",
        [Block("table", t) for t in backbone_tables(ctx, dataset)],
        "no UCLR method (kind uclr)",
    )
    add(
        "timings",
        "Running time (Table 7)",
        [
            Block("table", timings_table(ctx, dataset)),
            Block("table", stage_timings_table(ctx, dataset)),
        ],
        "no finished cells",
    )
    add(
        "temperatures",
        "User temperatures (Fig. 5)",
        [Block("figure", f) for f in temperature_figures(ctx, dataset)],
        "no per-user temperatures (UCLR's user-aware contrastive stage stores them)",
    )

    agreement = rank_agreement(ctx, dataset)
    add(
        "agreement",
        "Sampled vs full ranking",
        [Block("table", agreement)] + [Block("figure", f) for f in rank_figures(ctx, dataset)],
        "full-ranking metrics (protocol.full_ranking = true)",
    )

    curves = curve_figures(ctx, dataset)
    add(
        "curves",
        "Training curves",
        [
            Block(
                "details",
                summary=f"{method} ({len(figs)} curves)",
                children=[Block("figure", f) for f in figs],
            )
            for method, figs in curves.items()
        ],
        "no training curves",
    )

    diffs = protocol_differences(ctx, dataset)
    add(
        "paper",
        "Paper deltas",
        [
            Block("text", "Protocol differences to the paper:"),
            Block("bullets", diffs),
            Block("table", paper_deltas(ctx, dataset)),
        ],
        "no paper counterpart",
    )
    return sections


def _collect_tables(sections: list[Section]) -> list[Table]:
    out: list[Table] = []

    def walk(blocks: list[Block]) -> None:
        for b in blocks:
            if b.kind == "table" and b.payload is not None:
                out.append(b.payload)
            walk(b.children)

    for s in sections:
        walk(s.blocks)
    return out


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("reports", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["safe_name"] = safe_name
    env.globals["Markup"] = Markup
    return env


def build_report(
    store_path: Path, out_dir: Path, experiment: str, options: ReportOptions | None = None
) -> dict[str, Any]:
    """Write the site; return a summary (paths, references, tables, notes)."""
    store_path, out_dir = Path(store_path), Path(out_dir)
    persist = options.persist if options is not None else True
    con, store, not_persisted = _open(store_path, persist)
    try:
        if options is None:
            options = ReportOptions.from_spec_text(_latest_spec_text(con, experiment))
        if store is not None:
            _write_settings(store, experiment, options)
        data = load_report_data(con, experiment)
        refs = choose_references(data, options)
        ladders = find_ladders(data)
        sig = compute_significance(data, _pairs(data, refs, ladders), options)
        if store is not None:
            _persist(store, experiment, refs, sig)
        ctx = Context(data, options, refs, ladders, sig)
        prov = _provenance(con, data)
        tuning = {d: tuning_blocks(con, experiment, d) for d in has_search(con, experiment)}
    finally:
        con.close()

    env = _environment()
    out_dir.mkdir(parents=True, exist_ok=True)
    exports = out_dir / "exports"
    exports.mkdir(exist_ok=True)
    common = {
        "experiment": experiment,
        "options": options,
        "test_name": TEST_NAMES[options.test],
        "correction_name": CORRECTION_NAMES[options.correction],
        "prov": prov,
        "paper": PAPER,
        "datasets": [(d, page_name(d)) for d in data.datasets],
        "not_persisted": not_persisted,
        "generated": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        # datasets known here only from a published data card (harness/store/datacard.py)
        "unchecked": data.protocol.filter(~pl.col("data_checked"))["dataset"].to_list(),
    }
    all_tables: list[Table] = []
    pages = {}
    for dataset in data.datasets:
        sections = _dataset_sections(ctx, dataset)
        if dataset in tuning:
            link = (tuning_page_name(dataset, safe_name), "Hyperparameter search and selection")
            sections[0].blocks.insert(0, Block("link", link))
        all_tables += _collect_tables(sections)
        html = env.get_template("dataset.html.j2").render(
            **common,
            dataset=dataset,
            sections=sections,
            reference=(ctx.names(dataset).get(refs[dataset][0], refs[dataset][0]), refs[dataset][1])
            if dataset in refs
            else None,
        )
        path = out_dir / page_name(dataset)
        path.write_text(html, encoding="utf-8")
        pages[dataset] = path

    for dataset, parts in tuning.items():  # reports/tuning.py: one page per searched dataset
        sections = [
            Section(f"tuning-{i}", title, [Block(_kind(b), b) for b in blocks])
            for i, (title, blocks) in enumerate(parts)
        ]
        all_tables += _collect_tables(sections)
        html = env.get_template("tuning.html.j2").render(
            **common, dataset=dataset, sections=sections, dataset_page=page_name(dataset)
        )
        path = out_dir / tuning_page_name(dataset, safe_name)
        path.write_text(html, encoding="utf-8")
        pages[f"tuning:{dataset}"] = path

    index_sections = []
    for dataset in data.datasets:
        # full ranking beside sampled: sampled metrics can reorder methods (Krichene and
        # Rendle, KDD 2020), so the index shows both wherever the protocol ranked both
        boards = [
            Block("table", leaderboard_table(ctx, dataset, ranking, k))
            for ranking in ("sampled", "full")
            for k in ctx.ks(dataset)
        ]
        boards = [b for b in boards if b.payload is not None]
        if boards:
            link = Block(
                "link", (page_name(dataset), f"{dataset}: all tables, statistics and figures")
            )
            links = [link]
            if dataset in tuning:
                tuned = (tuning_page_name(dataset, safe_name), f"{dataset}: hyperparameter search")
                links.append(Block("link", tuned))
            index_sections.append(
                Section(f"board-{safe_name(dataset)}", f"Leaderboard: {dataset}", [*boards, *links])
            )
    t1 = dataset_table(ctx, data.datasets)
    index_sections.append(Section("datasets", "Datasets (Table 1)", [Block("table", t1)]))
    timing_blocks = [Block("table", timings_table(ctx, d)) for d in data.datasets]
    index_sections.append(
        Section("timings", "Running time (Table 7)", [b for b in timing_blocks if b.payload])
    )
    index_tables = _collect_tables(index_sections)
    all_tables += [t for t in index_tables if t.id not in {x.id for x in all_tables}]
    summaries = []
    for dataset in data.datasets:
        board = data.leaderboard.filter(pl.col("dataset") == dataset)
        ref = refs.get(dataset)
        headline = sig.filter(
            (pl.col("dataset") == dataset)
            & (pl.col("ranking") == "sampled")
            & (pl.col("subset") == "all")
            & (pl.col("comparison") == "reference")
        )
        summaries.append(
            {
                "dataset": dataset,
                "page": page_name(dataset),
                "domains": sorted(board["domain"].unique().to_list()),
                "methods": len(board["method"].unique()),
                "reference": ctx.names(dataset).get(ref[0], ref[0]) if ref else None,
                "reason": ref[1] if ref else "",
                "n_sig": int(headline.filter(pl.col("significant")).height),
                "n_comparisons": int(headline.height),
            }
        )
    plan = data.plan.to_dicts()
    index_html = env.get_template("index.html.j2").render(
        **common,
        sections=index_sections,
        summaries=summaries,
        plan=plan,
        description=_description(data.run.get("spec_text")),
    )
    index = out_dir / "index.html"
    index.write_text(index_html, encoding="utf-8")

    written = []
    md_all, tex_all = [], []
    for table in all_tables:
        stem = safe_name(table.id)
        md, tex = to_markdown(table), to_latex(table)
        (exports / f"{stem}.md").write_text(md, encoding="utf-8")
        (exports / f"{stem}.tex").write_text(tex, encoding="utf-8")
        (exports / f"{stem}.csv").write_text(to_csv(table), encoding="utf-8")
        md_all.append(md)
        tex_all.append(tex)
        written.append(stem)
    (exports / "all_tables.md").write_text(
        f"# {experiment}: report tables\n\n" + "\n".join(md_all), encoding="utf-8"
    )
    (exports / "all_tables.tex").write_text("\n".join(tex_all), encoding="utf-8")
    return {
        "index": index,
        "pages": pages,
        "references": refs,
        "tables": written,
        "significance_rows": len(sig),
        "persisted": store is not None,
        "options": options,
    }


def _kind(block: object) -> str:
    return "table" if isinstance(block, Table) else "figure"


def _description(spec_text: str | None) -> str:
    import tomllib

    try:
        return str(tomllib.loads(spec_text or "").get("experiment", {}).get("description", ""))
    except tomllib.TOMLDecodeError:
        return ""


def write_report(
    store_path: Path, out_dir: Path, experiment: str, options: ReportOptions | None = None
) -> Path:
    """Render the report into ``out_dir``; return the path of ``index.html``."""
    return build_report(store_path, out_dir, experiment, options)["index"]
