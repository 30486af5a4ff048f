"""Builders of the paper's tables (1-8) and of the statistics tables, from the report data.

Each builder returns a :class:`reports.model.Table` (or ``None`` when the run has nothing for
it); the SQL attached to a table reproduces its numbers from the documented views.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from scipy import stats

from reports.model import (
    MARK_DOWN,
    MARK_UP,
    Cell,
    Head,
    Row,
    Table,
    fmt_p,
    fmt_pm,
    signed,
    sql_lit,
)
from reports.options import ReportOptions
from reports.queries import METRICS, ReportData
from reports.stats import CORRECTION_NAMES, TEST_NAMES

__all__ = [
    "ABLATION_ONLY",
    "FAMILY_LABEL",
    "LADDER",
    "LADDER_LABEL",
    "METRIC_LABEL",
    "Context",
    "ablation_tables",
    "backbone_tables",
    "bucket_tables",
    "dataset_table",
    "leaderboard_table",
    "rank_agreement",
    "significance_tables",
    "sparse_table",
    "stage_timings_table",
    "timings_table",
]

METRIC_LABEL = {"mrr": "MRR", "hr": "HR", "ndcg": "NDCG"}
FAMILY_ORDER = {"single-domain": 0, "cross-domain": 1, "ours": 2}
FAMILY_LABEL = {"single-domain": "Single-domain", "cross-domain": "Cross-domain", "ours": "Ours"}
LADDER = ("pge", "pge_ae", "pge_cl_ae", "pge_ucl_ae", "uclr")
LADDER_LABEL = {
    "pge": "PGE",
    "pge_ae": "PGE+AE",
    "pge_cl_ae": "PGE+CL-AE",
    "pge_ucl_ae": "PGE+UCL-AE",
    "uclr": "UCLR",
}
ABLATION_ONLY = frozenset(LADDER) - {"uclr"}


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


@dataclass
class Context:
    data: ReportData
    options: ReportOptions
    references: dict[str, tuple[str, str]]  # dataset -> (method, why it was chosen)
    ladders: dict[str, list[list[str]]]  # dataset -> ladders (method names, rung order)
    sig: pl.DataFrame
    _index: dict[tuple, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for r in self.sig.iter_rows(named=True):
            key = (
                r["dataset"],
                r["ranking"],
                r["comparison"],
                r["subset"],
                r["bucket"],
                r["domain"],
                r["k"],
                r["metric"],
                r["method"],
            )
            self._index[key] = r

    def sig_row(self, dataset, ranking, comparison, subset, bucket, domain, k, metric, method):
        key = (dataset, ranking, comparison, subset, bucket, domain, k, metric, method)
        return self._index.get(key)

    def names(self, dataset: str) -> dict[str, str]:
        return self.data.display_names(dataset)

    def method_rows(self, dataset: str) -> list[dict]:
        return self.data.methods.filter(pl.col("dataset") == dataset).to_dicts()

    def kind_of(self, dataset: str) -> dict[str, str]:
        return {r["method"]: r["kind"] for r in self.method_rows(dataset)}

    def reference(self, dataset: str) -> str | None:
        ref = self.references.get(dataset)
        return ref[0] if ref else None

    def legend(self, dataset: str, subset_words: str) -> str:
        ref = self.reference(dataset)
        if not ref:
            return ""
        o = self.options
        return (
            f"{MARK_UP}/{MARK_DOWN}: significantly higher/lower than the reference "
            f"{self.names(dataset).get(ref, ref)} ({TEST_NAMES[o.test]}, two-sided, on per-user "
            f"values averaged over seeds, {subset_words}; {CORRECTION_NAMES[o.correction]}-"
            f"corrected over all methods × domains of this dataset for the same metric@K, "
            f"α = {o.alpha:g})."
        )

    def ks(self, dataset: str, ranking: str = "sampled") -> list[int]:
        lb = self.data.leaderboard.filter(
            (pl.col("dataset") == dataset) & (pl.col("ranking") == ranking)
        )
        return sorted(int(k) for k in lb["k"].unique().to_list())

    def rankings(self, dataset: str) -> list[str]:
        lb = self.data.leaderboard.filter(pl.col("dataset") == dataset)
        found = set(lb["ranking"].unique().to_list())
        return [r for r in ("sampled", "full") if r in found]


def _sig_tip(row: dict | None, ref_name: str) -> tuple[str, str]:
    """(mark, tooltip text) of one comparison row."""
    if row is None:
        return "", ""
    diff = 100 * row["mean_diff"]
    tip = (
        f"vs {ref_name}: Δ = {signed(diff)} (95% CI {signed(100 * row['ci_low'])} .. "
        f"{signed(100 * row['ci_high'])}), n = {row['n_users']} users; paired t p_adj = "
        f"{fmt_p(row['t_p_adj'])}, Wilcoxon p_adj = {fmt_p(row['w_p_adj'])}"
    )
    if not _nan(row["d_z"]):
        tip += f", d_z = {row['d_z']:.3f}"
    mark = ""
    if row["significant"]:
        mark = MARK_UP if row["mean_diff"] > 0 else MARK_DOWN if row["mean_diff"] < 0 else ""
    return mark, tip


def _mark_best(rows: list[Row], columns: range) -> None:
    for col in columns:
        values = sorted(
            {
                round(r.cells[col].value, 12)
                for r in rows
                if r.group is None and r.cells[col].value is not None
            },
            reverse=True,
        )
        for r in rows:
            if r.group is not None:
                continue
            cell = r.cells[col]
            if cell.value is None:
                continue
            position = values.index(round(cell.value, 12))
            cell.bold, cell.underline = position == 0, position == 1


def _ordered_methods(ctx: Context, dataset: str, methods: list[str]) -> list[dict]:
    info = {r["method"]: r for r in ctx.method_rows(dataset)}
    names = ctx.names(dataset)
    rows = [
        info.get(m, {"method": m, "family": "single-domain", "kind": m, "display_name": m})
        for m in methods
    ]
    return sorted(
        rows,
        key=lambda r: (FAMILY_ORDER.get(r["family"], 9), names.get(r["method"], r["method"])),
    )


def _exclude_ablation(ctx: Context, dataset: str, methods: list[str]) -> tuple[list[str], bool]:
    kinds = ctx.kind_of(dataset)
    ref = ctx.reference(dataset)
    keep = [m for m in methods if kinds.get(m) not in ABLATION_ONLY or m == ref]
    if not keep:
        return methods, False
    return keep, len(keep) < len(methods)


def _metric_table(
    ctx: Context,
    dataset: str,
    ranking: str,
    k: int,
    frame: pl.DataFrame,
    subset: str,
    table_id: str,
    title: str,
    caption: str,
    sql: str,
) -> Table | None:
    """Methods (grouped by family) × domains × (MRR, HR, NDCG) with marks vs the reference."""
    if frame.is_empty():
        return None
    names = ctx.names(dataset)
    ref = ctx.reference(dataset)
    ref_name = names.get(ref, ref) if ref else ""
    domains = sorted(frame["domain"].unique().to_list())
    methods, dropped = _exclude_ablation(ctx, dataset, frame["method"].unique().to_list())
    index = {(r["method"], r["domain"]): r for r in frame.iter_rows(named=True)}
    n_users = {d: frame.filter(pl.col("domain") == d)["n_users"].max() for d in domains}
    header = [
        [Head("Method", rowspan=2, sort=0)]
        + [Head(d, colspan=len(METRICS), note=f"n={n_users[d]}") for d in domains],
        [
            Head(f"{METRIC_LABEL[m]}@{k}", sort=1 + i * len(METRICS) + j)
            for i, _ in enumerate(domains)
            for j, m in enumerate(METRICS)
        ],
    ]
    rows: list[Row] = []
    family = None
    for info in _ordered_methods(ctx, dataset, methods):
        method = info["method"]
        if info["family"] != family:
            family = info["family"]
            rows.append(Row(group=FAMILY_LABEL.get(family, family or "other")))
        label = names.get(method, method)
        is_ref = method == ref
        cells = [
            Cell(
                label + (" (reference)" if is_ref else ""),
                numeric=False,
                cls="name ref" if is_ref else "name",
                title=f"method key {method}, kind {info.get('kind')}",
            )
        ]
        for d in domains:
            r = index.get((method, d))
            for m in METRICS:
                if r is None:
                    cells.append(Cell("–"))
                    continue
                mean, std = r[f"{m}_mean"], r[f"{m}_std"]
                tip = (
                    f"{label}, {d}, {METRIC_LABEL[m]}@{k}: {fmt_pm(mean, std, digits=3)} over "
                    f"{r['n_seeds']} seed(s), n = {r['n_users']} users"
                )
                mark = ""
                if ref and not is_ref:
                    row = ctx.sig_row(dataset, ranking, "reference", subset, None, d, k, m, method)
                    mark, sig_tip = _sig_tip(row, ref_name)
                    if sig_tip:
                        tip += "; " + sig_tip
                notes = []
                if r["n_users"] != n_users[d]:
                    notes.append(f"n={r['n_users']}")
                if r["n_seeds"] < len(ctx.data.seeds):
                    notes.append(f"{r['n_seeds']}/{len(ctx.data.seeds)} seeds")
                note = ", ".join(notes)
                cells.append(Cell(fmt_pm(mean, std), mean, mark=mark, note=note, title=tip))
        rows.append(Row(cells, cls="ref" if is_ref else ""))
    _mark_best(rows, range(1, 1 + len(domains) * len(METRICS)))
    notes = []
    if dropped:
        notes.append("Ablation variants (PGE, PGE+AE, ...) are in the ablation tables.")
    legend = ctx.legend(dataset, "same users in both methods")
    return Table(
        table_id, title, header, rows, caption + (" " + legend if legend else ""), notes, sql
    )


def leaderboard_table(ctx: Context, dataset: str, ranking: str, k: int) -> Table | None:
    frame = ctx.data.leaderboard.filter(
        (pl.col("dataset") == dataset) & (pl.col("ranking") == ranking) & (pl.col("k") == k)
    )
    paper = "Table 2" if k == 10 else "Table 8" if k == 20 else "Tables 2/8"
    what = (
        "sampled ranking (1 held-out item + stored negatives)"
        if ranking == "sampled"
        else ("full ranking (every item the user has not interacted with)")
    )
    seeds = ", ".join(str(s) for s in ctx.data.seeds)
    caption = (
        f"Metric@{k} ×100 on the {what}: mean ± sample std (ddof = 1) over seeds {seeds}. "
        f"Best per column in bold, runner-up underlined; n = test users of the domain."
    )
    sql = (
        f"SELECT method, domain, n_seeds, n_users,\n"
        f"       round(100*mrr_mean, 2) AS mrr, round(100*mrr_std, 2) AS mrr_sd,\n"
        f"       round(100*hr_mean, 2) AS hr, round(100*hr_std, 2) AS hr_sd,\n"
        f"       round(100*ndcg_mean, 2) AS ndcg, round(100*ndcg_std, 2) AS ndcg_sd\n"
        f"FROM leaderboard WHERE experiment = {sql_lit(ctx.data.experiment)} AND dataset = "
        f"{sql_lit(dataset)}\n  AND ranking = {sql_lit(ranking)} AND k = {k} "
        f"ORDER BY domain, method"
    )
    suffix = "" if ranking == "sampled" else "-full"
    title = (
        f"{paper}: {dataset} · Metric@{k}"
        if ranking == "sampled"
        else f"Full ranking: {dataset} · Metric@{k} (layout of {paper})"
    )
    return _metric_table(
        ctx,
        dataset,
        ranking,
        k,
        frame,
        "all",
        f"leaderboard-{dataset}-k{k}{suffix}",
        title,
        caption,
        sql,
    )


def sparse_table(ctx: Context, dataset: str, k: int) -> Table | None:
    frame = ctx.data.sparse.filter(
        (pl.col("dataset") == dataset) & (pl.col("ranking") == "sampled") & (pl.col("k") == k)
    )
    proto = ctx.data.protocol_of(dataset)
    smax = proto.get("sparse_max", 2)
    caption = (
        f"Sparse users: 1 to {smax} training interactions in the domain (users with none are the "
        f"'0' activity bucket below). Metric@{k} ×100, mean ± std over seeds; n = sparse users."
    )
    sql = (
        f"SELECT method, domain, n_users, round(100*mrr_mean, 2) AS mrr, round(100*hr_mean, 2) "
        f"AS hr,\n       round(100*ndcg_mean, 2) AS ndcg, round(100*ndcg_std, 2) AS ndcg_sd\n"
        f"FROM sparse_summary WHERE experiment = {sql_lit(ctx.data.experiment)} AND dataset = "
        f"{sql_lit(dataset)}\n  AND ranking = 'sampled' AND k = {k} ORDER BY domain, method"
    )
    return _metric_table(
        ctx,
        dataset,
        "sampled",
        k,
        frame,
        "sparse",
        f"sparse-{dataset}-k{k}",
        f"Table 3: {dataset} · sparse users · Metric@{k}",
        caption,
        sql,
    )


def bucket_tables(ctx: Context, dataset: str, k: int) -> list[Table]:
    frame = ctx.data.buckets.filter(
        (pl.col("dataset") == dataset) & (pl.col("ranking") == "sampled") & (pl.col("k") == k)
    )
    if frame.is_empty():
        return []
    names = ctx.names(dataset)
    ref = ctx.reference(dataset)
    ref_name = names.get(ref, ref) if ref else ""
    methods, _ = _exclude_ablation(ctx, dataset, frame["method"].unique().to_list())
    ordered = _ordered_methods(ctx, dataset, methods)
    tables = []
    for domain in sorted(frame["domain"].unique().to_list()):
        part = frame.filter(pl.col("domain") == domain)
        buckets = part.select("bucket", "bucket_label").unique().sort("bucket").rows()
        n_users = {b: part.filter(pl.col("bucket") == b)["n_users"].max() for b, _ in buckets}
        index = {(r["method"], r["bucket"]): r for r in part.iter_rows(named=True)}
        header = [
            [Head("Method", sort=0)]
            + [
                Head(label, note=f"n={n_users[b]}", sort=1 + i)
                for i, (b, label) in enumerate(buckets)
            ]
        ]
        rows: list[Row] = []
        for m in METRICS:
            rows.append(Row(group=f"{METRIC_LABEL[m]}@{k}"))
            block = []
            for info in ordered:
                method = info["method"]
                label = names.get(method, method)
                cells = [
                    Cell(
                        label + (" (reference)" if method == ref else ""), numeric=False, cls="name"
                    )
                ]
                for b, blabel in buckets:
                    r = index.get((method, b))
                    if r is None:
                        cells.append(Cell("–"))
                        continue
                    mark, tip = "", ""
                    if ref and method != ref:
                        sig = ctx.sig_row(
                            dataset, "sampled", "reference", "bucket", b, domain, k, m, method
                        )
                        mark, tip = _sig_tip(sig, ref_name)
                    text = f"{100 * r[f'{m}_mean']:.2f}"
                    cells.append(
                        Cell(
                            text,
                            r[f"{m}_mean"],
                            mark=mark,
                            note="" if r["n_users"] == n_users[b] else f"n={r['n_users']}",
                            title=f"{label}, bucket {blabel}: "
                            f"{fmt_pm(r[f'{m}_mean'], r[f'{m}_std'])} over {r['n_seeds']} "
                            f"seed(s), n = {r['n_users']}" + (f"; {tip}" if tip else ""),
                        )
                    )
                block.append(Row(cells))
            _mark_best(block, range(1, 1 + len(buckets)))
            rows += block
        legend = ctx.legend(dataset, "within each bucket")
        caption = (
            f"Metric@{k} ×100 (mean over seeds) by activity bucket = training interactions of the "
            f"user in {domain}; n = users in the bucket (the buckets add up to the domain's test "
            f"users). Bold/underline: best/runner-up per bucket. " + legend
        )
        sql = (
            f"SELECT method, bucket, bucket_label, n_users, round(100*ndcg_mean, 2) AS ndcg, "
            f"round(100*ndcg_std, 2) AS ndcg_sd\nFROM bucket_summary WHERE experiment = "
            f"{sql_lit(ctx.data.experiment)} AND dataset = {sql_lit(dataset)}\n  AND ranking = "
            f"'sampled' AND domain = {sql_lit(domain)} AND k = {k} ORDER BY method, bucket"
        )
        tables.append(
            Table(
                f"buckets-{dataset}-{domain}-k{k}",
                f"Activity buckets: {dataset} · {domain} · Metric@{k}",
                header,
                rows,
                caption,
                sql=sql,
                sortable=False,
            )
        )
    return tables


def _backbone(info: dict) -> str:
    if info.get("backbone"):
        return str(info["backbone"])
    try:
        params = json.loads(info.get("params") or "{}")
    except json.JSONDecodeError:
        params = {}
    return str(params.get("backbone", "bprmf" if info.get("kind") in LADDER else "")) or "-"


def find_ladders(data: ReportData) -> dict[str, list[list[str]]]:
    """Per dataset: ablation ladders (one per backbone) with at least two rungs present."""
    out: dict[str, list[list[str]]] = {}
    for dataset in data.datasets:
        rows = data.methods.filter(
            (pl.col("dataset") == dataset) & pl.col("kind").is_in(list(LADDER))
        ).to_dicts()
        by_backbone: dict[str, dict[str, str]] = {}
        for r in sorted(rows, key=lambda r: r["method"]):
            by_backbone.setdefault(_backbone(r), {}).setdefault(r["kind"], r["method"])
        ladders = []
        for _, rungs in sorted(by_backbone.items()):
            ladder = [rungs[k] for k in LADDER if k in rungs]
            if len(ladder) >= 2:
                ladders.append(ladder)
        if ladders:
            out[dataset] = ladders
    return out


def _sampled_slice(
    ctx: Context, dataset: str, k: int, methods: list[str]
) -> tuple[pl.DataFrame, list[str], dict[tuple[str, str], dict]]:
    """Sampled-protocol leaderboard rows of ``methods`` at K, their domains, and a
    (method, domain) -> row index (shared by the ablation and backbone tables)."""
    frame = ctx.data.leaderboard.filter(
        (pl.col("dataset") == dataset)
        & (pl.col("ranking") == "sampled")
        & (pl.col("k") == k)
        & pl.col("method").is_in(methods)
    )
    domains = sorted(frame["domain"].unique().to_list())
    index = {(r["method"], r["domain"]): r for r in frame.iter_rows(named=True)}
    return frame, domains, index


def ablation_tables(ctx: Context, dataset: str) -> list[Table]:
    tables = []
    names = ctx.names(dataset)
    info = {r["method"]: r for r in ctx.method_rows(dataset)}
    for ladder in ctx.ladders.get(dataset, []):
        backbone = _backbone(info[ladder[0]])
        for k in ctx.ks(dataset):
            frame, domains, index = _sampled_slice(ctx, dataset, k, ladder)
            if frame.is_empty():
                continue
            header = [
                [Head("Model", rowspan=2)] + [Head(d, colspan=len(METRICS)) for d in domains],
                [Head(f"{METRIC_LABEL[m]}@{k}") for _ in domains for m in METRICS],
            ]
            rows = []
            for i, method in enumerate(ladder):
                kind = info[method]["kind"]
                label = LADDER_LABEL.get(kind, kind)
                if names.get(method, method) != label:
                    label += f" ({names.get(method, method)})"
                cells = [Cell(label, numeric=False, cls="name")]
                for d in domains:
                    r = index.get((method, d))
                    prev = index.get((ladder[i - 1], d)) if i else None
                    for m in METRICS:
                        if r is None:
                            cells.append(Cell("–"))
                            continue
                        note, mark, tip = "", "", ""
                        if prev is not None:
                            note = f"Δ {signed(100 * (r[f'{m}_mean'] - prev[f'{m}_mean']))}"
                            sig = ctx.sig_row(
                                dataset, "sampled", "ladder", "all", None, d, k, m, method
                            )
                            prev_name = names.get(ladder[i - 1], ladder[i - 1])
                            mark, tip = _sig_tip(sig, prev_name)
                        cells.append(
                            Cell(
                                fmt_pm(r[f"{m}_mean"], r[f"{m}_std"]),
                                r[f"{m}_mean"],
                                mark=mark,
                                note=note,
                                title=tip,
                            )
                        )
                rows.append(Row(cells))
            _mark_best(rows, range(1, 1 + len(domains) * len(METRICS)))
            o = ctx.options
            caption = (
                f"UCLR ablation ladder with the {backbone} backbone, Metric@{k} ×100, mean ± std "
                f"over seeds. Δ: difference to the previous rung (points); {MARK_UP}/{MARK_DOWN}: "
                f"the step is significant ({TEST_NAMES[o.test]} on per-user values averaged over "
                f"seeds, {CORRECTION_NAMES[o.correction]}-corrected over the ladder's steps × "
                f"domains for the same metric@K, α = {o.alpha:g})."
            )
            sql = (
                f"SELECT i.kind, l.method, l.domain, round(100*l.ndcg_mean, 2) AS ndcg,\n"
                f"       round(100*(l.ndcg_mean - lag(l.ndcg_mean) OVER (PARTITION BY l.domain "
                f"ORDER BY list_position({list(LADDER)!r}, i.kind))), 2) AS step\n"
                f"FROM leaderboard l JOIN method_info i USING (experiment, dataset, method)\n"
                f"WHERE l.experiment = {sql_lit(ctx.data.experiment)} AND l.dataset = "
                f"{sql_lit(dataset)} AND l.ranking = 'sampled' AND l.k = {k}\n"
                f"  AND l.method IN ({', '.join(sql_lit(m) for m in ladder)})\n"
                f"ORDER BY l.domain, list_position({list(LADDER)!r}, i.kind)"
            )
            tables.append(
                Table(
                    f"ablation-{dataset}-{backbone}-k{k}",
                    f"Tables 4/5: {dataset} · ablation ladder ({backbone}) · Metric@{k}",
                    header,
                    rows,
                    caption,
                    sql=sql,
                    sortable=False,
                )
            )
    return tables


def backbone_tables(ctx: Context, dataset: str) -> list[Table]:
    rows_info = [r for r in ctx.method_rows(dataset) if r["kind"] == "uclr"]
    if not rows_info:
        return []
    methods = [r["method"] for r in rows_info]
    labels = {r["method"]: _backbone(r) for r in rows_info}
    tables = []
    for k in ctx.ks(dataset):
        frame, domains, index = _sampled_slice(ctx, dataset, k, methods)
        if frame.is_empty():
            continue
        header = [
            [Head("Model", rowspan=2, sort=0)] + [Head(d, colspan=len(METRICS)) for d in domains],
            [
                Head(f"{METRIC_LABEL[m]}@{k}", sort=1 + i * len(METRICS) + j)
                for i, _ in enumerate(domains)
                for j, m in enumerate(METRICS)
            ],
        ]
        rows = []
        names = ctx.names(dataset)
        for method in sorted(methods, key=lambda m: (labels[m], m)):
            cells = [
                Cell(
                    f"UCLR with {labels[method]} ({names.get(method, method)})",
                    numeric=False,
                    cls="name",
                )
            ]
            for d in domains:
                r = index.get((method, d))
                for m in METRICS:
                    cells.append(
                        Cell(fmt_pm(r[f"{m}_mean"], r[f"{m}_std"]), r[f"{m}_mean"])
                        if r
                        else Cell("–")
                    )
            rows.append(Row(cells))
        _mark_best(rows, range(1, 1 + len(domains) * len(METRICS)))
        notes = []
        if len({labels[m] for m in methods}) == 1:
            notes.append(f"Only one pretraining backbone ({labels[methods[0]]}) in this run.")
        sql = (
            f"SELECT i.backbone, l.method, l.domain, round(100*l.mrr_mean, 2) AS mrr, "
            f"round(100*l.hr_mean, 2) AS hr,\n       round(100*l.ndcg_mean, 2) AS ndcg\n"
            f"FROM leaderboard l JOIN method_info i USING (experiment, dataset, method)\n"
            f"WHERE l.experiment = {sql_lit(ctx.data.experiment)} AND l.dataset = "
            f"{sql_lit(dataset)} AND i.kind = 'uclr'\n  AND l.ranking = 'sampled' AND l.k = {k} "
            f"ORDER BY i.backbone, l.domain"
        )
        tables.append(
            Table(
                f"backbones-{dataset}-k{k}",
                f"Table 6: {dataset} · UCLR per pretraining backbone · Metric@{k}",
                header,
                rows,
                f"Metric@{k} ×100, mean ± std over seeds; the backbone is the `backbone` parameter "
                f"of each UCLR method (cells' params).",
                notes,
                sql,
            )
        )
    return tables


def timings_table(ctx: Context, dataset: str) -> Table | None:
    frame = ctx.data.timings.filter(pl.col("dataset") == dataset)
    if frame.is_empty():
        return None
    names = ctx.names(dataset)
    header = [
        [
            Head("Method", sort=0),
            Head("Training s (own)", sort=1),
            Head("Training s (full cost)", sort=2),
            Head("Inference s", sort=3),
            Head("Epochs", sort=4),
            Head("s / epoch", sort=5),
            Head("Seeds", sort=6),
            Head("Device", sort=7),
        ]
    ]
    rows = []
    methods = _ordered_methods(ctx, dataset, frame["method"].to_list())
    index = {r["method"]: r for r in frame.iter_rows(named=True)}
    for info in methods:
        r = index[info["method"]]
        full = r.get("train_s_full")
        if full is None or _nan(full):  # a store whose views predate the column
            full = r["train_s"]
        rows.append(
            Row(
                [
                    Cell(names.get(r["method"], r["method"]), numeric=False, cls="name"),
                    Cell(fmt_pm(r["train_s"], r["train_s_std"], 1, 1), r["train_s"]),
                    Cell(fmt_pm(full, r.get("train_s_full_std"), 1, 1), full),
                    Cell(fmt_pm(r["infer_s"], r["infer_s_std"], 1, 2), r["infer_s"]),
                    Cell("" if _nan(r["epochs"]) else f"{r['epochs']:.1f}", r["epochs"]),
                    Cell(
                        "" if _nan(r["train_s_per_epoch"]) else f"{r['train_s_per_epoch']:.2f}",
                        r["train_s_per_epoch"],
                    ),
                    Cell(str(r["n_seeds"]), r["n_seeds"]),
                    Cell(r["devices"] or r["device"] or "", numeric=False),
                ]
            )
        )
    sql = (
        f"SELECT method, n_seeds, round(train_s, 1) AS train_s, round(train_s_std, 1) AS sd,\n"
        f"       round(train_s_full, 1) AS train_s_full, round(reused_s, 1) AS reused_s,\n"
        f"       round(infer_s, 2) AS infer_s, epochs, round(train_s_per_epoch, 2) AS s_per_epoch,"
        f" devices\nFROM timings WHERE experiment = {sql_lit(ctx.data.experiment)} AND dataset = "
        f"{sql_lit(dataset)} ORDER BY method"
    )
    return Table(
        f"timings-{dataset}",
        f"Table 7: {dataset} · training and inference time",
        header,
        rows,
        "Wall-clock seconds per cell, mean ± std over seeds (training includes validation for "
        "early stopping; inference = scoring every test and full-ranking case). 'Own' is what "
        "the cell itself spent; 'full cost' adds the stages it reused from an earlier cell of "
        "the same run (UCLR's ladder shares stages A/B through the stage cache), i.e. what the "
        "method costs on its own, comparable across methods. Timings from different devices or "
        "concurrent load are not comparable.",
        sql=sql,
    )


def stage_timings_table(ctx: Context, dataset: str) -> Table | None:
    """Seconds per training epoch of each method's stages (and domains), from the curves."""
    frame = ctx.data.epoch_timings.filter(pl.col("dataset") == dataset)
    if frame.is_empty():
        return None
    names = ctx.names(dataset)
    header = [
        [
            Head("Method", sort=0),
            Head("Stage", sort=1),
            Head("Domain", sort=2),
            Head("s / epoch", sort=3),
            Head("median", sort=4),
            Head("Epochs", sort=5),
            Head("Seeds", sort=6),
        ]
    ]
    rows = []
    methods = frame["method"].unique(maintain_order=True).to_list()
    order = [m["method"] for m in _ordered_methods(ctx, dataset, methods)]
    for method in order:
        part = frame.filter(pl.col("method") == method).sort(["stage", "domain"], nulls_last=False)
        for r in part.iter_rows(named=True):
            rows.append(
                Row(
                    [
                        Cell(names.get(method, method), numeric=False, cls="name"),
                        Cell(r["stage"], numeric=False),
                        Cell(r["domain"] or "", numeric=False),
                        Cell(f"{r['train_s_per_epoch']:.2f}", r["train_s_per_epoch"]),
                        Cell(f"{r['train_s_per_epoch_median']:.2f}", r["train_s_per_epoch_median"]),
                        Cell(str(r["n_epochs"]), r["n_epochs"]),
                        Cell(str(r["n_seeds"]), r["n_seeds"]),
                    ]
                )
            )
    sql = (
        "SELECT method, stage, domain, round(train_s_per_epoch, 2) AS s_per_epoch, n_epochs,\n"
        f"       n_seeds FROM epoch_timings WHERE experiment = {sql_lit(ctx.data.experiment)} "
        f"AND dataset = {sql_lit(dataset)} ORDER BY method, stage, domain"
    )
    return Table(
        f"stage-timings-{dataset}",
        f"{dataset} · seconds per training epoch, by stage",
        header,
        rows,
        "Wall-clock seconds of one training epoch (validation excluded), mean and median over "
        "the epochs of every seed; a stage taken from UCLR's stage cache repeats the timings of "
        "the cell that computed it. Cells stored before this was recorded have no rows.",
        sql=sql,
    )


def _sources(ctx: Context, datasets: list[str]) -> dict[str, dict]:
    """Dataset -> its loader's source record (parsed from the store's JSON)."""
    out: dict[str, dict] = {}
    protocol = ctx.data.protocol
    if "source" not in protocol.columns:
        return out
    for r in protocol.filter(pl.col("dataset").is_in(datasets)).iter_rows(named=True):
        source = r["source"]
        if isinstance(source, str):
            try:
                source = json.loads(source)
            except ValueError:
                continue
        if isinstance(source, dict):
            out[r["dataset"]] = source
    return out


def _cold_test_cases(ctx: Context, datasets: list[str]) -> dict[tuple[str, str], int]:
    """(dataset, domain) -> pre-split test items never seen in training (from the loader's
    ``cold_test_cases`` in the dataset source); empty when no dataset has any."""
    out = {
        (dataset, domain): int(n)
        for dataset, source in _sources(ctx, datasets).items()
        for domain, n in (source.get("cold_test_cases") or {}).items()
    }
    return out if any(out.values()) else {}


def _skipped_rows_note(ctx: Context, datasets: list[str]) -> str:
    """A sentence per dataset whose loader skipped malformed rows (``on_bad_rows = "skip"``)."""
    notes = []
    for dataset, source in _sources(ctx, datasets).items():
        bad = source.get("bad_rows") or {}
        total = sum(n for rules in bad.values() for n in rules.values())
        if total:
            detail = "; ".join(
                f"{file}: {rule} ×{n}" for file, rules in bad.items() for rule, n in rules.items()
            )
            notes.append(f" {dataset}: {total:,} malformed rows skipped ({detail}).")
    return "".join(notes)


def dataset_table(ctx: Context, datasets: list[str]) -> Table | None:
    frame = ctx.data.table1.filter(pl.col("dataset").is_in(datasets))
    if frame.is_empty():
        return None
    cold_items = _cold_test_cases(ctx, datasets)
    cases = {
        (r["dataset"], r["domain"]): r["n_test_cases"]
        for r in ctx.data.test_cases.iter_rows(named=True)
    }
    header = [
        [
            Head("Dataset", sort=0),
            Head("Domain", sort=1),
            Head("#Users", sort=2),
            Head("#Items", sort=3),
            Head("#Interactions", sort=4),
            Head("Density", sort=5),
            Head("Test users", sort=6),
            Head("Median train / user", sort=7),
            Head("Sparse users", sort=8),
            Head("Cold users", sort=9),
        ]
        + ([Head("Cold-item test cases", sort=10)] if cold_items else [])
    ]
    rows = []
    for r in frame.sort("dataset", "domain").iter_rows(named=True):
        smax = r["sparse_max"]
        rows.append(
            Row(
                [
                    Cell(r["dataset"], numeric=False),
                    Cell(r["domain"], numeric=False),
                    Cell(f"{r['n_users']:,}", r["n_users"]),
                    Cell(f"{r['n_items']:,}", r["n_items"]),
                    Cell(f"{r['n_interactions']:,}", r["n_interactions"]),
                    Cell(f"{100 * r['density']:.3f}%", r["density"]),
                    Cell(
                        f"{cases.get((r['dataset'], r['domain']), 0):,}",
                        cases.get((r["dataset"], r["domain"])),
                    ),
                    Cell(
                        "" if _nan(r["median_train"]) else f"{r['median_train']:g}",
                        r["median_train"],
                    ),
                    Cell(
                        f"{r['n_sparse']:,}",
                        r["n_sparse"],
                        title=f"1..{smax} training interactions in the domain",
                    ),
                    Cell(
                        f"{r['n_cold']:,}",
                        r["n_cold"],
                        title="no training interaction in the domain (test item only)",
                    ),
                ]
                + (
                    [
                        Cell(
                            f"{cold_items.get((r['dataset'], r['domain']), 0):,}",
                            cold_items.get((r["dataset"], r["domain"]), 0),
                            title="pre-split test items with no training interaction in the "
                            "domain (every model ranks them near chance)",
                        )
                    ]
                    if cold_items
                    else []
                )
            )
        )
    for d in datasets:
        users = ctx.data.protocol.filter(pl.col("dataset") == d)["n_users"].to_list()
        if users:
            rows.append(
                Row(
                    [
                        Cell(d, numeric=False),
                        Cell("all (distinct users)", numeric=False),
                        Cell(f"{users[0]:,}", users[0]),
                    ]
                    + [Cell("") for _ in range(7 + bool(cold_items))],
                    cls="total",
                )
            )
    sql = (
        f"SELECT d.domain, d.n_users, d.n_items, d.n_interactions FROM experiment_protocol e\n"
        f"JOIN dataset_domains d USING (dataset_fingerprint) WHERE e.experiment = "
        f"{sql_lit(ctx.data.experiment)};\n"
        f"-- activity columns:\nSELECT domain, median(n_train) AS median_train,\n"
        f"       count(*) FILTER (WHERE n_train = 0) AS cold FROM user_activity\n"
        f"WHERE experiment = {sql_lit(ctx.data.experiment)} AND n_interactions > 0 GROUP BY "
        f"domain"
    )
    ident = "datasets" if len(datasets) != 1 else f"datasets-{datasets[0]}"
    return Table(
        ident,
        "Table 1: dataset statistics" + ("" if len(datasets) != 1 else f" · {datasets[0]}"),
        header,
        rows,
        "Users with at least one interaction in the domain, items and interactions of the data as "
        "loaded (held-out items included). Test users: users with a test case (leave-one-out). "
        "Training activity after the split: median, sparse users (1 to sparse_max training "
        "interactions) and cold users (test item only)."
        + (
            " Cold-item test cases: pre-split test items that never occur in the domain's "
            "training data (source: the loader's cold_test_cases)."
            if cold_items
            else ""
        )
        + _skipped_rows_note(ctx, datasets),
        sql=sql,
    )


def significance_tables(ctx: Context, dataset: str) -> list[Table]:
    sig = ctx.sig.filter(pl.col("dataset") == dataset)
    if sig.is_empty():
        return []
    names = ctx.names(dataset)
    tables = []
    groups = [
        ("sampled", "reference", "all", "all users"),
        ("sampled", "reference", "sparse", "sparse users"),
        ("sampled", "reference", "bucket", "activity buckets"),
        ("full", "reference", "all", "all users, full ranking"),
        ("sampled", "ladder", "all", "ablation steps"),
        ("full", "ladder", "all", "ablation steps, full ranking"),
    ]
    for ranking, comparison, subset, words in groups:
        part = sig.filter(
            (pl.col("ranking") == ranking)
            & (pl.col("comparison") == comparison)
            & (pl.col("subset") == subset)
        ).sort("domain", "bucket", "k", "metric", "method", nulls_last=True)
        if part.is_empty():
            continue
        with_bucket = subset == "bucket"
        heads = (
            ["Domain"]
            + (["Bucket"] if with_bucket else [])
            + [
                "K",
                "Metric",
                "Method",
                "Against",
                "n",
                "Method",
                "Against",
                "Δ",
                "95% CI",
                "t",
                "p (t, adj.)",
                "p (W, adj.)",
                "d_z",
                "seed sd",
                "Family size",
                "Sig.",
            ]
        )
        header = [[Head(h, sort=i) for i, h in enumerate(heads)]]
        rows = []
        for r in part.iter_rows(named=True):
            cells = [Cell(r["domain"], numeric=False)]
            if with_bucket:
                cells.append(Cell(r["bucket_label"] or "", r["bucket"], numeric=False))
            sd = f"{fmt_pm(r['method_seed_std'], None)} / {fmt_pm(r['reference_seed_std'], None)}"
            mark = ""
            if r["significant"]:
                mark = MARK_UP if r["mean_diff"] > 0 else MARK_DOWN
            cells += [
                Cell(str(r["k"]), r["k"]),
                Cell(METRIC_LABEL[r["metric"]], numeric=False),
                Cell(names.get(r["method"], r["method"]), numeric=False, cls="name"),
                Cell(names.get(r["reference"], r["reference"]), numeric=False),
                Cell(str(r["n_users"]), r["n_users"]),
                Cell(f"{100 * r['method_mean']:.2f}", r["method_mean"]),
                Cell(f"{100 * r['reference_mean']:.2f}", r["reference_mean"]),
                Cell(signed(100 * r["mean_diff"]), r["mean_diff"]),
                Cell(f"[{signed(100 * r['ci_low'])}, {signed(100 * r['ci_high'])}]", r["ci_low"]),
                Cell("n/a" if _nan(r["t_stat"]) else f"{r['t_stat']:.2f}", r["t_stat"]),
                Cell(fmt_p(r["t_p_adj"]), r["t_p_adj"], title=f"raw p = {fmt_p(r['t_p'])}"),
                Cell(fmt_p(r["w_p_adj"]), r["w_p_adj"], title=f"raw p = {fmt_p(r['w_p'])}"),
                Cell("n/a" if _nan(r["d_z"]) else f"{r['d_z']:.3f}", r["d_z"]),
                Cell(
                    sd,
                    r["method_seed_std"],
                    title="std over seeds of the subset mean ×100: "
                    "method / the method it is compared with",
                ),
                Cell(str(r["family_size"]), r["family_size"], title=r["family"]),
                Cell(mark or "–", 1.0 if r["significant"] else 0.0),
            ]
            rows.append(Row(cells))
        o = ctx.options
        what = "the previous ablation rung" if comparison == "ladder" else "the reference"
        caption = (
            f"Paired comparisons against {what} on {words}: per-user values averaged over seeds "
            f"and matched by user; Δ = method − {what.split()[-1]} ×100 with a {o.confidence:.0%} "
            f"paired percentile bootstrap CI ({o.n_boot} resamples, seeded from the comparison's "
            f"identity); scipy.stats.ttest_rel and wilcoxon (two-sided), Cohen's d_z; p-values "
            f"{CORRECTION_NAMES[o.correction]}-adjusted within each family (dataset × ranking × "
            f"subset × metric@K, across domains{', buckets' if with_bucket else ''} and methods). "
            f"Sig. uses the {TEST_NAMES[o.test]} at α = {o.alpha:g}. Seed sd: std over seeds of "
            f"each side's subset mean (seed-to-seed variation, not used by the tests)."
        )
        sql = (
            f"SELECT domain, k, metric, method, reference, n_users, round(100*mean_diff, 2) AS "
            f"diff,\n       round(100*ci_low, 2) AS lo, round(100*ci_high, 2) AS hi, t_p_adj, "
            f"w_p_adj, d_z, significant\nFROM significance WHERE experiment = "
            f"{sql_lit(ctx.data.experiment)} AND dataset = {sql_lit(dataset)}\n  AND ranking = "
            f"{sql_lit(ranking)} AND comparison = {sql_lit(comparison)} AND subset = "
            f"{sql_lit(subset)}"
        )
        tables.append(
            Table(
                f"significance-{dataset}-{ranking}-{comparison}-{subset}",
                f"Significance: {dataset} · {words}",
                header,
                rows,
                caption,
                sql=sql,
            )
        )
    return tables


def rank_agreement(ctx: Context, dataset: str) -> Table | None:
    """Kendall's tau between the method orders under sampled and full ranking."""
    lb = ctx.data.leaderboard.filter(pl.col("dataset") == dataset)
    if set(lb["ranking"].unique().to_list()) != {"sampled", "full"}:
        return None
    names = ctx.names(dataset)
    s = lb.filter(pl.col("ranking") == "sampled")
    f = lb.filter(pl.col("ranking") == "full")
    joined = s.join(f, on=["method", "domain", "k"], suffix="_full")
    if joined.is_empty():
        return None
    header = [
        [
            Head(h, sort=i)
            for i, h in enumerate(
                [
                    "Domain",
                    "K",
                    "Metric",
                    "Methods",
                    "Kendall τ",
                    "p",
                    "Order flips (sampled → full)",
                ]
            )
        ]
    ]
    rows = []
    for (domain, k), part in sorted(joined.group_by(["domain", "k"]), key=lambda g: g[0]):
        part = part.sort("method")  # group_by and join keep no order: the flips list would vary
        for m in METRICS:
            a = part[f"{m}_mean"].to_list()
            b = part[f"{m}_mean_full"].to_list()
            methods = part["method"].to_list()
            tau, p = (float("nan"), float("nan"))
            if len(methods) >= 2:
                res = stats.kendalltau(a, b)
                tau, p = float(res.statistic), float(res.pvalue)
            flips = [
                f"{names.get(methods[i], methods[i])} vs {names.get(methods[j], methods[j])}"
                for i in range(len(methods))
                for j in range(i + 1, len(methods))
                if (a[i] - a[j]) * (b[i] - b[j]) < 0
            ]
            rows.append(
                Row(
                    [
                        Cell(domain, numeric=False),
                        Cell(str(k), k),
                        Cell(METRIC_LABEL[m], numeric=False),
                        Cell(str(len(methods)), len(methods)),
                        Cell("n/a" if _nan(tau) else f"{tau:.3f}", tau),
                        Cell(fmt_p(p), p),
                        Cell(
                            "; ".join(flips) or "none",
                            len(flips),
                            numeric=False,
                            cls="flip" if flips else "",
                        ),
                    ]
                )
            )
    sql = (
        f"SELECT s.domain, s.k, s.method, round(100*s.ndcg_mean, 2) AS sampled, "
        f"round(100*f.ndcg_mean, 2) AS full\nFROM leaderboard s JOIN leaderboard f USING "
        f"(experiment, dataset, method, domain, k)\nWHERE s.ranking = 'sampled' AND f.ranking = "
        f"'full' AND s.experiment = {sql_lit(ctx.data.experiment)}\n  AND s.dataset = "
        f"{sql_lit(dataset)} ORDER BY s.domain, s.k, sampled DESC"
    )
    return Table(
        f"rank-agreement-{dataset}",
        f"Sampled vs full ranking: {dataset} · method-rank agreement",
        header,
        rows,
        "Kendall's τ (scipy.stats.kendalltau, τ-b) between the methods' mean metric under the "
        "sampled protocol and under full ranking; a flip is a pair of methods whose order "
        "differs (Krichene & Rendle, KDD'20: sampled metrics need not preserve the order).",
        sql=sql,
    )
