"""A fabricated results store that exercises every table and figure of the report.

FOR TESTS AND PREVIEWS ONLY: no model is trained; per-user ranks are drawn at random from a
simple skill model (UCLR best, activity helps) so that the ablation ladder, the backbones table,
temperatures, paper deltas and significance marks all have something to show before the real
methods exist. The store is written through the same ``Store`` API as the runner, so the views
and the report see exactly the layout of a real run. ``python -m tests.demo_store OUT`` writes
``OUT/results.duckdb`` and ``OUT/report/``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from harness.protocol.candidates import CandidateSet, DomainCandidates
from harness.store.store import Store

__all__ = ["DEMO_EXPERIMENT", "DEMO_METHODS", "SCRIPT_LABEL", "make_demo_store"]

DEMO_EXPERIMENT = "demo-fabricated"
SCRIPT_LABEL = '<script>alert("x")</script> & co'
# method key -> (kind, family, display name, skill, params)
DEMO_METHODS: dict[str, tuple[str, str, str, float, dict]] = {
    "bprmf": ("bprmf", "single-domain", "BPRMF", 0.0, {"embedding_size": 64}),
    "lightgcn": ("lightgcn", "single-domain", "LightGCN", 0.1, {"embedding_size": 128}),
    "catart": ("catart", "cross-domain", "CAT-ART", 0.3, {"embedding_size": 128}),
    "scripted": ("gamtcdr", "cross-domain", SCRIPT_LABEL, 0.25, {}),
    "pge": ("pge", "ours", "PGE", 0.05, {"backbone": "bprmf"}),
    "pge_ae": ("pge_ae", "ours", "PGE+AE", 0.15, {"backbone": "bprmf"}),
    "pge_cl_ae": ("pge_cl_ae", "ours", "PGE+CL-AE", 0.2, {"backbone": "bprmf"}),
    "pge_ucl_ae": ("pge_ucl_ae", "ours", "PGE+UCL-AE", 0.35, {"backbone": "bprmf"}),
    "uclr": ("uclr", "ours", "UCLR", 0.45, {"backbone": "bprmf"}),
    "uclr_lgcn": ("uclr", "ours", "UCLR-LightGCN", 0.4, {"backbone": "lightgcn"}),
}
DOMAINS = {"books": 400, "music": 300}
NEGATIVES = 99
KS = (10, 20)
BUCKETS = [0, 2, 4, 8, 16, 32, 64, 128]


def _hash(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _metrics(rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hit = rank <= k
    return (
        hit.astype(float),
        np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0),
        np.where(hit, 1.0 / rank, 0.0),
    )


def make_demo_store(
    path: Path,
    n_users: int = 240,
    seeds: tuple[int, ...] = (0, 1, 2),
    methods: dict | None = None,
    seed: int = 0,
) -> str:
    """Write a fabricated store at ``path``; return its experiment name."""
    methods = DEMO_METHODS if methods is None else methods
    rng = np.random.default_rng(seed)
    user_ids = np.array([f"u{u:04d}" for u in range(n_users)], dtype=object)
    fingerprint = _hash("demo", n_users, seed)
    totals = {}
    for domain in DOMAINS:
        t = np.floor(np.exp(rng.normal(1.3, 1.3, n_users))).astype(int)
        t[rng.random(n_users) < 0.08] = 0  # some users never touched this domain
        totals[domain] = np.clip(t, 0, 300)
    train_counts, cands_valid, cands_test = {}, {}, {}
    for domain, n_items in DOMAINS.items():
        t = totals[domain]
        valid = (t >= 3).astype(int)
        train = np.where(t >= 1, t - 1 - valid, 0)
        train_counts[domain] = train
        test_users = np.flatnonzero(t >= 1)
        valid_users = np.flatnonzero(valid)
        cands_test[domain] = DomainCandidates(
            test_users.astype(np.int64),
            rng.integers(0, n_items, len(test_users)).astype(np.int64),
            rng.integers(0, n_items, (len(test_users), NEGATIVES)).astype(np.int64),
        )
        cands_valid[domain] = DomainCandidates(
            valid_users.astype(np.int64),
            rng.integers(0, n_items, len(valid_users)).astype(np.int64),
            rng.integers(0, n_items, (len(valid_users), NEGATIVES)).astype(np.int64),
        )
    cands = CandidateSet(valid=cands_valid, test=cands_test, n_negatives=NEGATIVES, seed=0)
    protocol = {
        "split": "leave_one_out",
        "split_seed": 0,
        "negatives": NEGATIVES,
        "ks": list(KS),
        "ties": "expected",
        "validation_k": 10,
        "full_ranking": True,
        "sparse_max": 2,
        "buckets": BUCKETS,
    }
    set_id = _hash(fingerprint, json.dumps(protocol, sort_keys=True))
    spec_text = (
        "# FABRICATED demo store (tests/demo_store.py): random numbers, no model was trained.\n"
        f'[experiment]\nname = "{DEMO_EXPERIMENT}"\nseeds = {list(seeds)}\n'
        'description = "Fabricated numbers that exercise every table and figure of the report."'
        '\n\n[datasets.douban]\nloader = "douban"\n\n[protocol]\nks = [10, 20]\n'
        "full_ranking = true\n"
    )
    with Store(path) as store:
        run_id = "demo-" + _hash(seed, n_users)
        store.start_run(
            run_id,
            {
                "experiment": DEMO_EXPERIMENT,
                "spec_path": "specs/demo.toml",
                "spec_hash": _hash(spec_text),
                "spec_text": spec_text,
                "git_sha": None,
                "git_dirty": None,
                "versions": json.dumps({"demo": "1"}),
                "device": "none (fabricated)",
                "hostname": "demo",
                "python": sys.version.split()[0],
                "platform": "demo",
                "argv": "python -m tests.demo_store",
            },
        )
        domains_df = pl.DataFrame(
            {
                "domain": list(DOMAINS),
                "n_users": [int((totals[d] >= 1).sum()) for d in DOMAINS],
                "n_items": list(DOMAINS.values()),
                "n_interactions": [int(totals[d].sum()) for d in DOMAINS],
            }
        )
        store.save_dataset(fingerprint, "douban", "douban", {"demo": True}, user_ids, domains_df)
        store.save_candidates(
            set_id,
            cands,
            {
                "dataset_fingerprint": fingerprint,
                "protocol_fingerprint": _hash(json.dumps(protocol, sort_keys=True)),
                "protocol": protocol,
                "split_rule": "fabricated leave-one-out (demo)",
            },
            train_counts=train_counts,
        )
        plan = []
        user_skill = rng.normal(0, 0.6, n_users)
        for method, (kind, family, label, skill, params) in methods.items():
            for s in seeds:
                cell_id = _hash("cell", method, s, seed)
                plan.append(
                    {
                        "experiment": DEMO_EXPERIMENT,
                        "dataset": "douban",
                        "method": method,
                        "seed": s,
                        "cell_id": cell_id,
                        "kind": kind,
                        "family": family,
                        "display_name": label,
                        "domains": json.dumps(list(DOMAINS)),
                    }
                )
                crng = np.random.default_rng(int(_hash("rng", method, s, seed), 16) % 2**32)
                frames = []
                total_train = sum(train_counts.values())
                for domain, c in cands_test.items():
                    users = c.users
                    act = train_counts[domain][users]
                    logit = (
                        1.0
                        + 2 * skill
                        + 0.35 * np.log1p(act)
                        + user_skill[users]
                        + crng.normal(0, 0.25, len(users))
                    )
                    if kind == "uclr":  # the point of the paper: sparse users gain most
                        logit += 0.3 * (act <= 2)
                    p = 1 / (1 + np.exp(-logit))
                    rank_s = 1 + crng.binomial(NEGATIVES, 1 - p)
                    rank_f = 1 + crng.binomial(DOMAINS[domain] - 1, (1 - p) ** 1.5)
                    for ranking, rank in (("sampled", rank_s), ("full", rank_f)):
                        for k in KS:
                            hr, ndcg, mrr = _metrics(rank.astype(float), k)
                            frames.append(
                                pl.DataFrame(
                                    {
                                        "ranking": ranking,
                                        "domain": domain,
                                        "user_idx": users.astype(np.int32),
                                        "k": k,
                                        "hr": hr,
                                        "ndcg": ndcg,
                                        "mrr": mrr,
                                        "rank": rank.astype(float),
                                        "ties": 0,
                                        "n_train_domain": act.astype(np.int32),
                                        "n_train_total": total_train[users].astype(np.int32),
                                    },
                                    schema_overrides={"k": pl.Int32, "ties": pl.Int32},
                                )
                            )
                epochs = 12
                curves = pl.DataFrame(
                    [
                        {"stage": kind, "domain": d, "epoch": e, "name": name, "value": float(v)}
                        for d in DOMAINS
                        for e in range(1, epochs + 1)
                        for name, v in (
                            ("loss", 0.7 * np.exp(-e / 5) + crng.normal(0, 0.01)),
                            ("valid_ndcg", 0.3 + skill * 0.2 - 0.2 * np.exp(-e / 3)),
                        )
                    ]
                )
                values = None
                if kind in ("pge_ucl_ae", "uclr"):
                    tau = np.clip(
                        0.05 + 0.02 * np.log1p(total_train) + crng.normal(0, 0.01, n_users),
                        1e-5,
                        1.0,
                    )
                    values = pl.DataFrame(
                        {
                            "stage": "contrastive",
                            "domain": None,
                            "name": "temperature",
                            "user_idx": np.arange(n_users, dtype=np.int32),
                            "value": tau,
                        },
                        schema_overrides={"domain": pl.String},
                    )
                store.write_cell(
                    {
                        "cell_id": cell_id,
                        "run_id": run_id,
                        "dataset_fingerprint": fingerprint,
                        "candidate_set_id": set_id,
                        "kind": kind,
                        "family": family,
                        "params": json.dumps(params),
                        "seed": s,
                        "code_version": f"{kind} v1",
                        "status": "done",
                        "error": None,
                        "started_at": datetime.now(),
                        "finished_at": datetime.now(),
                        "train_s": float(10 + 5 * skill + s),
                        "infer_s": 0.5,
                        "epochs": epochs,
                        "best_epoch": epochs - 2,
                        "best_valid": 0.3,
                        "device": "cpu (fabricated)",
                        "notes": "{}",
                    },
                    pl.concat(frames),
                    curves,
                    values,
                )
        store.replace_plan(DEMO_EXPERIMENT, plan)
        store.finish_run(run_id, "finished", len(plan), 0)
    return DEMO_EXPERIMENT


def main(argv: list[str] | None = None) -> int:
    from reports.site import write_report

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "results/demo")
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.duckdb"
    if store.exists():
        store.unlink()
    experiment = make_demo_store(store)
    print(write_report(store, out / "report", experiment))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
