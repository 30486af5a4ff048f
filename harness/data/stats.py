"""Per-domain statistics and user-activity histograms of a Dataset (Table 1, Figs 3/4).

Counts include a pre-split held-out item, so the numbers describe the data as released.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import polars as pl

from harness.data.dataset import Dataset, DomainData

__all__ = [
    "DEFAULT_EDGES",
    "activity_histogram",
    "cold_test_cases",
    "dataset_statistics",
    "preprocessing_funnel",
    "user_activity",
]

# Lower bounds of the activity buckets: 1, 2, 3, 4, 5, 6-10, 11-20, 21-50, 51+.
DEFAULT_EDGES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 11, 21, 51)


def _domain_users(domain: DomainData) -> np.ndarray:
    if domain.fixed_test is None:
        return domain.users
    return np.concatenate([domain.users, domain.fixed_test.users])


def user_activity(ds: Dataset) -> pl.DataFrame:
    """Long frame (domain, user, n_interactions) over users with >= 1 interaction."""
    frames = []
    for name, domain in ds.domains.items():
        counts = np.bincount(_domain_users(domain), minlength=ds.n_users)
        active = np.flatnonzero(counts)
        frames.append(
            pl.DataFrame(
                {"domain": name, "user": active.astype(np.int64), "n_interactions": counts[active]},
                schema={"domain": pl.String, "user": pl.Int64, "n_interactions": pl.Int64},
            )
        )
    if not frames:
        schema = {"domain": pl.String, "user": pl.Int64, "n_interactions": pl.Int64}
        return pl.DataFrame(schema=schema)
    return pl.concat(frames)


def _activity_row(counts: pl.Series) -> dict[str, float]:
    n = max(len(counts), 1)
    return {
        "act_min": counts.min() if len(counts) else 0,
        "act_median": float(counts.median() or 0.0),
        "act_mean": float(counts.mean() or 0.0),
        "act_p90": float(counts.quantile(0.9, "linear") or 0.0),
        "act_max": counts.max() if len(counts) else 0,
        "share_users_1": float((counts == 1).sum() / n),
        "share_users_2": float((counts == 2).sum() / n),
        "share_users_le5": float((counts <= 5).sum() / n),
    }


def cold_test_cases(domain: DomainData) -> int:
    """Pre-split test items with no training interaction in the domain (every model misses
    them: nothing was learnt about the item)."""
    if domain.fixed_test is None:
        return 0
    return int(np.isin(domain.fixed_test.items, domain.items, invert=True).sum())


def preprocessing_funnel(ds: Dataset) -> pl.DataFrame:
    """Per domain: rows read, rows rejected (in total, then one ``rejected: <rule>`` column per
    rule), items before and after an item deletion, then users, items and interactions left
    after the user filter. Steps a loader does not have are null."""
    funnel = ds.funnel or {}
    steps = [(name, funnel.get(name, {}), domain) for name, domain in ds.domains.items()]
    whole_file = funnel.get("(file)")  # loaders reading one file for all domains
    rules = sorted(
        {r for _, step, _ in steps for r in step.get("rows_rejected", {})}
        | set((whole_file or {}).get("rows_rejected", {}))
    )

    def row(name: str, step: dict, users: int, items: int, inter: int) -> dict:
        rejected = step.get("rows_rejected", {})
        return {
            "domain": name,
            "rows_read": step.get("rows_read"),
            "rows_rejected": sum(rejected.values()) if step else None,
            **{f"rejected: {r}": rejected.get(r, 0) if step else None for r in rules},
            "items_before_drop": step.get("items_before_drop"),
            "items_after_drop": step.get("items_after_drop"),
            "users_after_filter": users,
            "items_after_filter": items,
            "interactions": inter,
        }

    rows = [
        row(name, step, len(domain.all_users()), domain.n_items, domain.n_interactions)
        for name, step, domain in steps
    ]
    if whole_file is not None:
        rows.append(
            row(
                "all",
                whole_file,
                ds.n_users,
                sum(d.n_items for d in ds.domains.values()),
                sum(d.n_interactions for d in ds.domains.values()),
            )
        )
    schema = {"domain": pl.String, "rows_read": pl.Int64, "rows_rejected": pl.Int64}
    schema.update({f"rejected: {r}": pl.Int64 for r in rules})
    schema.update(
        {
            k: pl.Int64
            for k in (
                "items_before_drop",
                "items_after_drop",
                "users_after_filter",
                "items_after_filter",
                "interactions",
            )
        }
    )
    return pl.DataFrame(rows, schema=schema)


def dataset_statistics(ds: Dataset) -> pl.DataFrame:
    """One row per domain plus "all": users, items, interactions, density, activity.

    ``users`` counts users with >= 1 interaction in the domain; activity columns describe
    interactions per such user. In "all", users are distinct over domains, items and
    interactions are summed, and activity is a user's total over domains. A column
    ``cold_test_cases`` (pre-split test items never seen in the domain's training data) is
    added whenever there are any.
    """
    activity = user_activity(ds)
    rows = []
    for name, domain in ds.domains.items():
        counts = activity.filter(pl.col("domain") == name)["n_interactions"]
        users, items, inter = len(counts), domain.n_items, domain.n_interactions
        rows.append(
            {
                "domain": name,
                "users": users,
                "items": items,
                "interactions": inter,
                "density": inter / (users * items) if users and items else 0.0,
                **_activity_row(counts),
            }
        )
    totals = activity.group_by("user").agg(pl.col("n_interactions").sum())["n_interactions"]
    users = len(totals)
    items = sum(d.n_items for d in ds.domains.values())
    inter = sum(d.n_interactions for d in ds.domains.values())
    rows.append(
        {
            "domain": "all",
            "users": users,
            "items": items,
            "interactions": inter,
            "density": inter / (users * items) if users and items else 0.0,
            **_activity_row(totals),
        }
    )
    schema = {
        "domain": pl.String,
        "users": pl.Int64,
        "items": pl.Int64,
        "interactions": pl.Int64,
        "density": pl.Float64,
        "act_min": pl.Int64,
        "act_median": pl.Float64,
        "act_mean": pl.Float64,
        "act_p90": pl.Float64,
        "act_max": pl.Int64,
        "share_users_1": pl.Float64,
        "share_users_2": pl.Float64,
        "share_users_le5": pl.Float64,
    }
    frame = pl.DataFrame(rows, schema=schema)
    cold = [cold_test_cases(d) for d in ds.domains.values()]
    if any(cold):
        frame = frame.with_columns(pl.Series("cold_test_cases", [*cold, sum(cold)], dtype=pl.Int64))
    return frame


def activity_histogram(ds: Dataset, edges: Sequence[int] = DEFAULT_EDGES) -> pl.DataFrame:
    """Users per activity bucket and domain: (domain, bucket, lo, hi, n_users).

    ``edges`` are increasing bucket lower bounds starting at 1; the last bucket is open
    (``hi`` null). Empty buckets are kept so plots share their x axis.
    """
    edges = list(edges)
    if not edges or edges[0] != 1 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"edges must be increasing lower bounds starting at 1, got {edges}")
    highs = [e - 1 for e in edges[1:]] + [None]
    labels = [
        f"{lo}+" if hi is None else (str(lo) if lo == hi else f"{lo}-{hi}")
        for lo, hi in zip(edges, highs, strict=True)
    ]
    activity = user_activity(ds)
    bucket = np.searchsorted(np.asarray(edges), activity["n_interactions"].to_numpy(), "right") - 1
    counted = (
        activity.with_columns(_b=pl.Series(bucket, dtype=pl.Int64))
        .group_by("domain", "_b")
        .agg(pl.len().cast(pl.Int64).alias("n_users"))
    )
    grid = pl.DataFrame(
        {
            "domain": [d for d in ds.domains for _ in edges],
            "_b": [b for _ in ds.domains for b in range(len(edges))],
        },
        schema={"domain": pl.String, "_b": pl.Int64},
    )
    buckets = pl.DataFrame(
        {"_b": list(range(len(edges))), "bucket": labels, "lo": edges, "hi": highs},
        schema={"_b": pl.Int64, "bucket": pl.String, "lo": pl.Int64, "hi": pl.Int64},
    )
    return (
        grid.join(buckets, on="_b", how="left")
        .join(counted, on=["domain", "_b"], how="left")
        .with_columns(pl.col("n_users").fill_null(0))
        .sort(pl.col("domain").cast(pl.Enum(list(ds.domains))), "_b")
        .drop("_b")
    )
