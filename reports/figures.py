"""The report's figures as inline SVG: Figs. 3/4 (activity), Fig. 5 (temperatures), metric by
activity bucket, training curves and the sampled-vs-full rank agreement."""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl
from markupsafe import Markup
from scipy import stats

from reports.model import sql_lit
from reports.svg import Chart
from reports.tables import METRIC_LABEL, Context, _exclude_ablation

__all__ = [
    "Figure",
    "activity_figure",
    "bucket_figures",
    "curve_figures",
    "rank_figures",
    "temperature_figures",
]


@dataclass
class Figure:
    id: str
    title: str
    svg: Markup
    caption: str = ""
    sql: str = ""


def _finite(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def activity_figure(ctx: Context, dataset: str) -> Figure | None:
    frame = ctx.data.activity.filter(pl.col("dataset") == dataset)
    if frame.is_empty() or frame["n_users"].sum() == 0:
        return None
    buckets = frame.select("bucket", "bucket_label").unique().sort("bucket")
    chart = Chart(
        f"Users per activity bucket · {dataset}",
        xlabel="training interactions in the domain",
        ylabel="users",
        categories=buckets["bucket_label"].to_list(),
    )
    for domain in sorted(frame["domain"].unique().to_list()):
        part = {
            r["bucket"]: r["n_users"]
            for r in frame.filter(pl.col("domain") == domain).iter_rows(named=True)
        }
        counts = [part.get(b, 0) for b in buckets["bucket"].to_list()]
        total = sum(counts) or 1
        titles = [
            f"{domain}, {label}: {c} users ({100 * c / total:.1f}%)"
            for label, c in zip(buckets["bucket_label"].to_list(), counts, strict=True)
        ]
        chart.bars(domain, counts, titles)
    return Figure(
        f"fig-activity-{dataset}",
        f"Figs. 3/4: user activity distribution · {dataset}",
        chart.render(),
        "Users with at least one interaction in the domain by number of training interactions "
        "after the leave-one-out split (held-out items excluded); the imbalance the paper's "
        "Figs. 3/4 illustrate.",
        f"SELECT domain, bucket_label, n_users FROM activity_distribution\nWHERE experiment = "
        f"{sql_lit(ctx.data.experiment)} AND dataset = {sql_lit(dataset)} ORDER BY domain, bucket",
    )


def temperature_figures(ctx: Context, dataset: str) -> list[Figure]:
    frame = ctx.data.temperatures.filter(pl.col("dataset") == dataset)
    if frame.is_empty():
        return []
    names = ctx.names(dataset)
    figures = []
    for method in sorted(frame["method"].unique().to_list()):
        part = frame.filter(pl.col("method") == method)
        # most to least active, as in the paper's Fig. 5
        buckets = part.select("bucket", "bucket_label").unique().sort("bucket", descending=True)
        order = buckets["bucket"].to_list()
        chart = Chart(
            f"Temperature by activity group · {names.get(method, method)}",
            xlabel="training interactions over all domains (most → least active)",
            ylabel="temperature τ",
            categories=buckets["bucket_label"].to_list(),
        )
        series = part.select("stage", "domain").unique().sort("stage", "domain", nulls_last=True)
        for stage, domain in series.iter_rows():
            sub = part.filter(
                (pl.col("stage") == stage)
                & (pl.col("domain").is_null() if domain is None else pl.col("domain") == domain)
            )
            index = {r["bucket"]: r for r in sub.iter_rows(named=True)}
            ys = [_finite(index[b]["temperature_mean"]) if b in index else None for b in order]
            errs = [_finite(index[b]["temperature_std"]) if b in index else None for b in order]
            titles = [
                f"{stage}{' ' + domain if domain else ''}, {index[b]['bucket_label']}: "
                f"{index[b]['temperature_mean']:.4f} ± {index[b]['temperature_std'] or 0:.4f} "
                f"(n = {index[b]['n_users']})"
                if b in index
                else ""
                for b in order
            ]
            name = stage + (f" / {domain}" if domain else "")
            chart.line(name, list(range(len(order))), ys, errs, titles)
        figures.append(
            Figure(
                f"fig-temperature-{dataset}-{method}",
                f"Fig. 5: user temperatures · {dataset} · {names.get(method, method)}",
                chart.render(),
                "Per-user temperatures averaged over seeds, then mean ± std over the users of "
                "each activity group (buckets over the user's training interactions in all "
                "domains).",
                f"SELECT stage, domain, bucket_label, n_users, temperature_mean, temperature_std\n"
                f"FROM temperature_summary WHERE experiment = {sql_lit(ctx.data.experiment)}\n"
                f"  AND dataset = {sql_lit(dataset)} AND method = {sql_lit(method)} ORDER BY "
                f"stage, domain, bucket DESC",
            )
        )
    return figures


def bucket_figures(ctx: Context, dataset: str, metric: str = "ndcg") -> list[Figure]:
    ks = ctx.ks(dataset)
    if not ks:
        return []
    k = ks[0]
    frame = ctx.data.buckets.filter(
        (pl.col("dataset") == dataset) & (pl.col("ranking") == "sampled") & (pl.col("k") == k)
    )
    if frame.is_empty():
        return []
    names = ctx.names(dataset)
    methods, _ = _exclude_ablation(ctx, dataset, frame["method"].unique().to_list())
    frame = frame.filter(pl.col("method").is_in(methods))
    figures = []
    for domain in sorted(frame["domain"].unique().to_list()):
        part = frame.filter(pl.col("domain") == domain)
        buckets = part.select("bucket", "bucket_label").unique().sort("bucket")
        order = buckets["bucket"].to_list()
        chart = Chart(
            f"{METRIC_LABEL[metric]}@{k} by activity bucket · {domain}",
            xlabel="training interactions in the domain",
            ylabel=f"{METRIC_LABEL[metric]}@{k} ×100",
            categories=buckets["bucket_label"].to_list(),
            y_from_zero=True,
            width=max(640, 60 * len(order) + 260),
        )
        for method in sorted(part["method"].unique().to_list(), key=lambda m: names.get(m, m)):
            index = {
                r["bucket"]: r
                for r in part.filter(pl.col("method") == method).iter_rows(named=True)
            }
            ys = [100 * index[b][f"{metric}_mean"] if b in index else None for b in order]
            errs = [
                100 * index[b][f"{metric}_std"]
                if b in index and _finite(index[b][f"{metric}_std"]) is not None
                else None
                for b in order
            ]
            titles = [
                f"{names.get(method, method)}, {index[b]['bucket_label']}: {ys[i]:.2f} "
                f"(n = {index[b]['n_users']})"
                if b in index
                else ""
                for i, b in enumerate(order)
            ]
            chart.line(names.get(method, method), list(range(len(order))), ys, errs, titles)
        figures.append(
            Figure(
                f"fig-buckets-{dataset}-{domain}",
                f"Metric by activity bucket · {dataset} · {domain}",
                chart.render(),
                f"Mean over seeds ± std over seeds of {METRIC_LABEL[metric]}@{k} within each "
                f"activity bucket.",
                f"SELECT method, bucket_label, n_users, 100*{metric}_mean, 100*{metric}_std FROM "
                f"bucket_summary\nWHERE experiment = {sql_lit(ctx.data.experiment)} AND dataset = "
                f"{sql_lit(dataset)} AND ranking = 'sampled'\n  AND domain = {sql_lit(domain)} "
                f"AND k = {k} ORDER BY method, bucket",
            )
        )
    return figures


def curve_figures(ctx: Context, dataset: str) -> dict[str, list[Figure]]:
    """Per method: one small chart per (stage, domain, curve), a line per seed."""
    frame = ctx.data.curves.filter(pl.col("dataset") == dataset)
    out: dict[str, list[Figure]] = {}
    if frame.is_empty():
        return out
    names = ctx.names(dataset)
    for method in sorted(frame["method"].unique().to_list()):
        part = frame.filter(pl.col("method") == method)
        figures = []
        keys = part.select("stage", "domain", "name").unique().sort("stage", "domain", "name")
        for stage, domain, name in keys.iter_rows():
            sub = part.filter(
                (pl.col("stage") == stage) & (pl.col("domain") == domain) & (pl.col("name") == name)
            )
            title = f"{name} · {stage}" + (f" · {domain}" if domain else "")
            chart = Chart(title, xlabel="epoch", width=340, height=210)
            for seed in sorted(sub["seed"].unique().to_list()):
                s = sub.filter(pl.col("seed") == seed).sort("epoch")
                chart.line(
                    f"seed {seed}", s["epoch"].to_list(), [_finite(v) for v in s["value"].to_list()]
                )
            figures.append(
                Figure(
                    f"fig-curve-{dataset}-{method}-{stage}-{domain}-{name}",
                    title,
                    chart.render(),
                    sql=f"SELECT seed, epoch, value FROM training_curves WHERE experiment = "
                    f"{sql_lit(ctx.data.experiment)}\n  AND dataset = {sql_lit(dataset)} AND "
                    f"method = {sql_lit(method)} AND stage = {sql_lit(stage)} AND name = "
                    f"{sql_lit(name)}",
                )
            )
        out[names.get(method, method)] = figures
    return out


def rank_figures(ctx: Context, dataset: str, metric: str = "ndcg") -> list[Figure]:
    lb = ctx.data.leaderboard.filter(pl.col("dataset") == dataset)
    if set(lb["ranking"].unique().to_list()) != {"sampled", "full"}:
        return []
    k = ctx.ks(dataset)[0]
    names = ctx.names(dataset)
    s = lb.filter((pl.col("ranking") == "sampled") & (pl.col("k") == k))
    f = lb.filter((pl.col("ranking") == "full") & (pl.col("k") == k))
    joined = s.join(f, on=["method", "domain"], suffix="_full")
    figures = []
    for domain in sorted(joined["domain"].unique().to_list()):
        part = joined.filter(pl.col("domain") == domain).sort("method")
        xs = [100 * v for v in part[f"{metric}_mean"].to_list()]
        ys = [100 * v for v in part[f"{metric}_mean_full"].to_list()]
        labels = [names.get(m, m) for m in part["method"].to_list()]
        tau = float("nan")
        if len(xs) >= 2:
            tau = float(stats.kendalltau(xs, ys).statistic)
        chart = Chart(
            f"{METRIC_LABEL[metric]}@{k}: sampled vs full · {domain}",
            xlabel=f"sampled {METRIC_LABEL[metric]}@{k} ×100",
            ylabel=f"full-ranking {METRIC_LABEL[metric]}@{k} ×100",
            width=420,
            height=300,
            note="Kendall τ = " + ("n/a" if math.isnan(tau) else f"{tau:.3f}"),
        )
        chart.points("", xs, ys, labels)
        figures.append(
            Figure(
                f"fig-rank-{dataset}-{domain}",
                f"Sampled vs full ranking · {dataset} · {domain}",
                chart.render(),
                "Each point is a method; a perfect agreement of the two protocols orders the "
                "points monotonically (τ = 1).",
            )
        )
    return figures
