"""Which comparisons the report makes, and their statistics (the ``significance`` rows).

Two kinds of paired comparison, each on per-user values averaged over seeds:

* ``reference``: every method against the dataset's reference method, on all users, on sparse
  users and within each activity bucket (sampled ranking), and on all users (full ranking);
* ``ladder``: each rung of the UCLR ablation ladder against the previous rung (all users).

Correction family: all comparisons of one dataset, ranking, comparison kind, user subset
(all / sparse / buckets) and metric@K, across domains, methods and buckets. Holm controls the
family-wise error rate within it; BH the false discovery rate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from reports.options import ReportOptions
from reports.queries import METRICS, ReportData
from reports.stats import adjust, bootstrap_mean_ci, comparison_seed, paired_tests

__all__ = ["SIGNIFICANCE_SCHEMA", "Pair", "compute_significance", "family_key"]


@dataclass(frozen=True)
class Pair:
    method: str
    reference: str
    comparison: str  # reference | ladder


SIGNIFICANCE_SCHEMA: dict[str, pl.DataType] = {
    "experiment": pl.String,
    "dataset": pl.String,
    "ranking": pl.String,
    "comparison": pl.String,
    "subset": pl.String,
    "bucket": pl.Int32,
    "bucket_label": pl.String,
    "domain": pl.String,
    "k": pl.Int32,
    "metric": pl.String,
    "method": pl.String,
    "reference": pl.String,
    "n_users": pl.Int32,
    "method_mean": pl.Float64,
    "reference_mean": pl.Float64,
    "mean_diff": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "t_stat": pl.Float64,
    "t_p": pl.Float64,
    "t_p_adj": pl.Float64,
    "w_stat": pl.Float64,
    "w_p": pl.Float64,
    "w_p_adj": pl.Float64,
    "d_z": pl.Float64,
    "family": pl.String,
    "family_size": pl.Int32,
    "test": pl.String,
    "correction": pl.String,
    "alpha": pl.Float64,
    "significant": pl.Boolean,
    "n_boot": pl.Int32,
    "boot_seed": pl.Int64,
    "method_seed_std": pl.Float64,
    "reference_seed_std": pl.Float64,
    "n_seeds": pl.Int32,
}


def family_key(dataset: str, ranking: str, comparison: str, subset: str, metric: str, k: int):
    return f"{dataset} | {ranking} | {comparison} | {subset} | {metric}@{k}"


def _seed_std(frame: pl.DataFrame, keys: list[str]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for r in frame.iter_rows(named=True):
        out[tuple(r[k] for k in keys)] = r
    return out


def _wide(part: pl.DataFrame) -> tuple[pl.DataFrame, dict[tuple[str, int, str], np.ndarray]]:
    """Users (sorted by id) with their bucket, and one value vector per (method, k, metric)."""
    users = (
        part.select("user_id", "bucket", "bucket_label", "is_sparse")
        .unique("user_id", keep="first")
        .sort("user_id")
    )
    long = part.unpivot(
        index=["user_id", "method", "k"], on=list(METRICS), variable_name="metric"
    ).with_columns(
        key=pl.concat_str(
            [pl.col("method"), pl.col("k").cast(pl.String), pl.col("metric")], separator="\x1f"
        )
    )
    wide = long.pivot(on="key", index="user_id", values="value", aggregate_function="first")
    wide = users.select("user_id").join(wide, on="user_id", how="left")
    vectors = {}
    for col in wide.columns:
        if col == "user_id":
            continue
        method, k, metric = col.split("\x1f")
        vectors[(method, int(k), metric)] = wide[col].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return users, vectors


def _subsets(users: pl.DataFrame, ranking: str) -> list[tuple[str, int | None, str, np.ndarray]]:
    n = len(users)
    subsets: list[tuple[str, int | None, str, np.ndarray]] = [("all", None, "", np.ones(n, bool))]
    if ranking != "sampled":
        return subsets
    subsets.append(("sparse", None, "", users["is_sparse"].fill_null(False).to_numpy()))
    buckets = users.select("bucket", "bucket_label").unique().sort("bucket")
    bucket_ids = users["bucket"].to_numpy()
    for b, label in buckets.iter_rows():
        subsets.append(("bucket", int(b), label, bucket_ids == b))
    return subsets


def compute_significance(
    data: ReportData, pairs: dict[str, list[Pair]], options: ReportOptions
) -> pl.DataFrame:
    """One row per comparison (see ``significance_results`` in the store schema)."""
    std_all = _seed_std(data.leaderboard, ["dataset", "ranking", "domain", "k", "method"])
    std_sparse = _seed_std(data.sparse, ["dataset", "ranking", "domain", "k", "method"])
    std_bucket = _seed_std(data.buckets, ["dataset", "ranking", "domain", "k", "method", "bucket"])
    rows: list[dict] = []
    um = data.user_means
    if um.is_empty():
        return pl.DataFrame(schema=SIGNIFICANCE_SCHEMA)
    groups = sorted(um.group_by(["dataset", "ranking", "domain"]), key=lambda g: g[0])
    for (dataset, ranking, domain), part in groups:
        todo = pairs.get(dataset, [])
        if not todo:
            continue
        users, vectors = _wide(part)
        user_ids = users["user_id"].to_list()
        ks = sorted({k for (_, k, _) in vectors})
        for subset, bucket, label, mask in _subsets(users, ranking):
            columns = []  # (pair, k, metric, method vector, reference vector)
            for pair in todo:
                if pair.comparison == "ladder" and subset != "all":
                    continue
                for k in ks:
                    for metric in METRICS:
                        x = vectors.get((pair.method, k, metric))
                        y = vectors.get((pair.reference, k, metric))
                        if x is None or y is None:
                            continue
                        columns.append((pair, k, metric, x, y))
            # Columns with the same complete users share one resampling plan.
            by_users: dict[bytes, list] = {}
            for col in columns:
                ok = mask & ~np.isnan(col[3]) & ~np.isnan(col[4])
                by_users.setdefault(np.packbits(ok).tobytes(), []).append((ok, col))
            for members in by_users.values():
                ok = members[0][0]
                n = int(ok.sum())
                if n == 0:
                    continue
                chosen = [u for u, keep in zip(user_ids, ok, strict=True) if keep]
                digest = hashlib.sha256("\x1f".join(chosen).encode()).hexdigest()[:16]
                seed = comparison_seed(dataset, ranking, domain, subset, bucket, digest)
                xs = np.column_stack([c[3][ok] for _, c in members])
                ys = np.column_stack([c[4][ok] for _, c in members])
                res = paired_tests(xs, ys)
                low, high = bootstrap_mean_ci(xs - ys, seed, options.n_boot, options.confidence)
                for j, (_, (pair, k, metric, _, _)) in enumerate(members):
                    if subset == "all":
                        ms = std_all.get((dataset, ranking, domain, k, pair.method), {})
                        rs = std_all.get((dataset, ranking, domain, k, pair.reference), {})
                    elif subset == "sparse":
                        ms = std_sparse.get((dataset, ranking, domain, k, pair.method), {})
                        rs = std_sparse.get((dataset, ranking, domain, k, pair.reference), {})
                    else:
                        ms = std_bucket.get((dataset, ranking, domain, k, pair.method, bucket), {})
                        rs = std_bucket.get(
                            (dataset, ranking, domain, k, pair.reference, bucket), {}
                        )
                    rows.append(
                        {
                            "experiment": data.experiment,
                            "dataset": dataset,
                            "ranking": ranking,
                            "comparison": pair.comparison,
                            "subset": subset,
                            "bucket": bucket,
                            "bucket_label": label or None,
                            "domain": domain,
                            "k": k,
                            "metric": metric,
                            "method": pair.method,
                            "reference": pair.reference,
                            "n_users": n,
                            "method_mean": float(res.method_mean[j]),
                            "reference_mean": float(res.reference_mean[j]),
                            "mean_diff": float(res.mean_diff[j]),
                            "ci_low": float(low[j]),
                            "ci_high": float(high[j]),
                            "t_stat": float(res.t_stat[j]),
                            "t_p": float(res.t_p[j]),
                            "w_stat": float(res.w_stat[j]),
                            "w_p": float(res.w_p[j]),
                            "d_z": float(res.d_z[j]),
                            "family": family_key(
                                dataset, ranking, pair.comparison, subset, metric, k
                            ),
                            "n_boot": options.n_boot,
                            "boot_seed": seed,
                            "method_seed_std": ms.get(f"{metric}_std"),
                            "reference_seed_std": rs.get(f"{metric}_std"),
                            "n_seeds": ms.get("n_seeds"),
                        }
                    )
    if not rows:
        return pl.DataFrame(schema=SIGNIFICANCE_SCHEMA)
    frame = pl.DataFrame(rows, schema={k: v for k, v in SIGNIFICANCE_SCHEMA.items()}, strict=False)
    return _correct(frame, options)


def _correct(frame: pl.DataFrame, options: ReportOptions) -> pl.DataFrame:
    t_adj = np.empty(len(frame))
    w_adj = np.empty(len(frame))
    size = np.empty(len(frame), dtype=np.int32)
    families = frame["family"].to_numpy()
    t_p = frame["t_p"].fill_null(np.nan).to_numpy()
    w_p = frame["w_p"].fill_null(np.nan).to_numpy()
    for fam in np.unique(families):
        idx = np.flatnonzero(families == fam)
        t_adj[idx] = adjust(t_p[idx], options.correction)
        w_adj[idx] = adjust(w_p[idx], options.correction)
        size[idx] = len(idx)
    decisive = t_adj if options.test == "t" else w_adj
    return frame.with_columns(
        t_p_adj=pl.Series(t_adj),
        w_p_adj=pl.Series(w_adj),
        family_size=pl.Series(size, dtype=pl.Int32),
        test=pl.lit(options.test),
        correction=pl.lit(options.correction),
        alpha=pl.lit(options.alpha),
        significant=pl.Series(decisive < options.alpha),
    ).select(list(SIGNIFICANCE_SCHEMA))
