"""Seconds per training epoch of every registered method, stage by stage, on one dataset.

Each method is fitted with its default (paper) parameters except that every ``*max_epochs``
field is capped at ``--epochs`` (and UCLR's stage-B step budget accordingly), so a run costs a
few epochs per stage. The times come from the per-epoch ``train_s`` that the shared training
loop logs (the same numbers the store's ``epoch_timings`` view shows for real runs);
validation is timed separately (``valid_s``). One-off work outside the epoch loop (graph
building, node2vec walks, stage caches) is the difference between ``fit_s`` and the sum of the
epoch times.

    python benchmarks/methods_speed.py                       # Amazon-shaped preset, all methods
    python benchmarks/methods_speed.py --methods lightgcn neumf --epochs 2 --threads 1
    python benchmarks/methods_speed.py --dataset douban      # the data home's Douban (fetched)

The last line is one JSON object: {method: {fit_s, stages: {stage[/domain]: {...}}}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from uclr_speed import CONFIGS, load  # noqa: E402

from methods.base import EpochLog, FitContext, MethodParams  # noqa: E402
from methods.registry import available  # noqa: E402
from uclr.cache import STAGE_CACHE  # noqa: E402


def capped_params(cls, epochs: int) -> MethodParams:
    """Default parameters with every epoch budget capped at ``epochs``."""
    fields = cls.Params.model_fields
    update = {name: epochs for name in fields if name.endswith("max_epochs")}
    if "ae_max_steps" in fields:
        update["ae_max_steps"] = 1  # stage B then runs exactly ae_max_epochs epochs
    for name in ("ae_eval_every_epochs", "ae_eval_every_steps"):
        if name in fields:
            update[name] = 1
    return cls.Params(**update)


def stage_table(logs: list[EpochLog]) -> dict:
    """Per stage (and domain): epochs, mean and last train seconds, mean validation seconds."""
    groups: dict[str, list[EpochLog]] = defaultdict(list)
    for entry in logs:
        key = entry.stage + (f"/{entry.domain}" if entry.domain else "")
        groups[key].append(entry)
    out = {}
    for key, entries in groups.items():
        train = [e.values["train_s"] for e in entries if "train_s" in e.values]
        valid = [e.values["valid_s"] for e in entries if "valid_s" in e.values]
        out[key] = {
            "epochs": len(entries),
            "train_s_per_epoch": round(sum(train) / max(len(train), 1), 3),
            "train_s_last_epoch": round(train[-1], 3) if train else None,
            "valid_s": round(sum(valid) / max(len(valid), 1), 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon", choices=sorted(CONFIGS))
    parser.add_argument("--methods", nargs="*", default=None, help="kinds (default: all)")
    parser.add_argument("--epochs", type=int, default=1, help="epoch cap per stage")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    start = time.perf_counter()
    data, validator = load(args.dataset, device)
    pairs = {d: len(data.users[d]) for d in data.domains}
    print(
        f"{args.dataset}: {data.n_users} users, pairs {pairs}, "
        f"loaded in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    registry = available()
    kinds = args.methods or sorted(registry)
    result: dict = {
        "dataset": args.dataset,
        "users": data.n_users,
        "pairs": pairs,
        "threads": torch.get_num_threads(),
        "epoch_cap": args.epochs,
        "methods": {},
    }
    for kind in kinds:
        cls = registry[kind]
        STAGE_CACHE.clear()  # time every stage, never a cached one
        params = capped_params(cls, args.epochs)
        method = cls(params, data.n_users, data.n_items)
        logs: list[EpochLog] = []
        ctx = FitContext(seed=0, device=device, validate=validator, log=logs.append)
        started = time.perf_counter()
        method.fit(data, ctx)
        fit_s = time.perf_counter() - started
        entry = {"fit_s": round(fit_s, 2), "stages": stage_table(logs)}
        result["methods"][kind] = entry
        print(kind, json.dumps(entry), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
