"""Seconds per training epoch of the expensive cross-domain baselines, and GA-MTCDR's node2vec.

HeroGraph, GA-MTCDR and Recsys-DAN's source phase (phase 1, per target domain) are timed on
one dataset with their default (paper) parameters. A full epoch of these methods takes minutes
on a loaded CPU, so ``--steps N`` times N optimiser steps after ``--warmup`` steps (one
method-specific step function is wrapped and training stops after them) and scales the mean
step time to the epoch's step count; ``--steps 0`` trains whole epochs and reports the
``train_s`` the shared training loop logs. GA-MTCDR's one-time node2vec is timed per domain
(``--n2v-walks`` walks per node instead of 10 scales it down linearly; 0 skips it and feeds
random inputs instead).

The script only uses the methods' public entry points and the step functions' names, so the
same file run against an older checkout of ``methods/`` (``--repo DIR``) times the old code:

    python benchmarks/xdomain_speed.py --threads 1                      # amazon preset, all three
    python benchmarks/xdomain_speed.py --methods herograph --steps 8 --threads 1
    python benchmarks/xdomain_speed.py --methods gamtcdr --n2v-walks 1 --n2v-domains electronics
    python benchmarks/xdomain_speed.py --dataset douban --threads 1

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


class _Stop(Exception):
    """Raised by the wrapped step function once the timed steps are done."""


class StepTimer:
    """Wraps ``owner.name``: times calls ``warmup + 1 .. warmup + steps``, then stops training."""

    def __init__(self, owner, name: str, warmup: int, steps: int):
        self.owner, self.name, self.real = owner, name, getattr(owner, name)
        self.warmup, self.steps, self.calls = warmup, steps, 0
        self.started = self.seconds = self.cpu_started = self.cpu_seconds = 0.0
        timer = self

        def wrapped(*args, **kwargs):
            if timer.steps and timer.calls == timer.warmup + timer.steps:
                timer.seconds = time.perf_counter() - timer.started
                timer.cpu_seconds = time.process_time() - timer.cpu_started
                raise _Stop
            if timer.calls == timer.warmup:
                timer.started = time.perf_counter()
                timer.cpu_started = time.process_time()
            timer.calls += 1
            return timer.real(*args, **kwargs)

        setattr(owner, name, wrapped)

    def restore(self) -> None:
        setattr(self.owner, self.name, self.real)

    @property
    def per_step(self) -> float:
        return self.seconds / max(self.steps, 1)


def steps_per_epoch(kind: str, data, params) -> dict[str, int]:
    """Optimiser steps of one epoch (per stage) at the method's batch rules."""
    sizes = {d: len(data.users[d]) for d in data.domains}
    if kind == "herograph":
        return {"herograph": max(1, math.ceil(max(sizes.values()) / params.batch_size))}
    if kind == "gamtcdr":
        rows = params.batch_size * (
            1 if params.batch_unit == "instances" else params.n_negatives + 1
        )
        return {
            "gamtcdr": sum(
                math.ceil(n * (params.n_negatives + 1) / rows) for n in sizes.values() if n
            )
        }
    # recsys_dan source phase: the other domains' pairs, per target domain
    total = sum(sizes.values())
    return {
        f"dan-source/{d}": math.ceil((total - sizes[d]) / params.batch_size) for d in data.domains
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon", choices=["amazon", "douban", "quickstart"])
    parser.add_argument(
        "--methods", nargs="*", default=["herograph", "gamtcdr", "recsys_dan"], help="kinds"
    )
    parser.add_argument("--steps", type=int, default=8, help="timed steps (0: whole epochs)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--epochs", type=int, default=1, help="whole epochs with --steps 0")
    parser.add_argument("--n2v-walks", type=int, default=10, help="node2vec walks per node")
    parser.add_argument("--n2v-domains", nargs="*", default=None, help="node2vec: these only")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repo", default=str(REPO), help="checkout whose methods/ to time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--matmul-precision",
        default="highest",
        choices=["highest", "high", "medium"],
        help="torch float32 matmul precision (the spec's matmul_precision)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    sys.path.insert(0, str(Path(args.repo) / "benchmarks"))
    sys.path.insert(0, args.repo)

    from uclr_speed import load

    import methods.gamtcdr as gamtcdr_module
    import methods.recsys_dan as dan_module
    from methods._cdr_graph import CSR
    from methods.base import EpochLog, FitContext
    from methods.registry import available
    from methods.training import seeded_generator

    device = torch.device("cpu")
    started = time.perf_counter()
    data, validator = load(args.dataset, device)
    pairs = {d: len(data.users[d]) for d in data.domains}
    print(
        f"{args.dataset}: {data.n_users} users, pairs {pairs}, "
        f"loaded in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    result: dict = {
        "dataset": args.dataset,
        "repo": args.repo,
        "threads": torch.get_num_threads(),
        "matmul_precision": args.matmul_precision,
        "steps": args.steps,
        "methods_file": str(Path(gamtcdr_module.__file__).parent),
        "methods": {},
    }
    registry = available()
    real_node2vec = gamtcdr_module.node2vec
    for kind in args.methods:
        cls = registry[kind]
        fields = cls.Params.model_fields
        update = {n: args.epochs for n in fields if n.endswith("max_epochs")}
        if kind == "recsys_dan":
            update |= {"source_selection": "fixed", "max_epochs": 1}
        params = cls.Params(**update)
        entry: dict = {"steps_per_epoch": steps_per_epoch(kind, data, params)}
        n2v_s: dict[str, float] = {}
        n2v_cpu: dict[str, float] = {}
        if kind == "gamtcdr":
            n2v_params = gamtcdr_module._n2v_config(params).model_copy(
                update={"walks_per_node": max(args.n2v_walks, 1)}
            )
            for index, d in enumerate(data.domains):
                if args.n2v_walks == 0 or (args.n2v_domains and d not in args.n2v_domains):
                    continue
                graph = CSR.symmetric(
                    data.users[d], data.items[d] + data.n_users, data.n_users + data.n_items[d]
                )
                t0, c0 = time.perf_counter(), time.process_time()
                emb = real_node2vec(
                    graph,
                    params.embedding_size,
                    n2v_params,
                    seeded_generator(args.seed, 10 + index),
                )
                n2v_s[d] = round(time.perf_counter() - t0, 2)
                n2v_cpu[d] = round(time.process_time() - c0, 2)
                print(
                    f"node2vec {d}: {n2v_s[d]}s ({args.n2v_walks} walks/node), "
                    f"checksum {float(emb.double().abs().sum()):.6f}",
                    flush=True,
                )
            entry["node2vec_s"] = n2v_s
            entry["node2vec_cpu_s"] = n2v_cpu
            entry["node2vec_walks_per_node"] = args.n2v_walks
            # The training epoch does not depend on how the fixed inputs were made.
            gamtcdr_module.node2vec = lambda g, m, _p, gen: torch.randn(g.n, m, generator=gen)
        method = cls(params, data.n_users, data.n_items)
        owner, name = {
            "herograph": (type(method), "_step_losses"),
            "gamtcdr": (type(method), "_batch_loss"),
            "recsys_dan": (dan_module._DANTarget, "source_step"),
        }[kind]
        timer = StepTimer(owner, name, args.warmup, args.steps) if args.steps else None
        logs: list[EpochLog] = []
        ctx = FitContext(seed=args.seed, device=device, validate=validator, log=logs.append)
        t0 = time.perf_counter()
        try:
            method.fit(data, ctx)
        except _Stop:
            pass
        finally:
            gamtcdr_module.node2vec = real_node2vec
            if timer:
                timer.restore()
        entry["wall_s"] = round(time.perf_counter() - t0, 2)
        if timer:
            entry["step_s"] = round(timer.per_step, 4)
            # CPU seconds of this process: less sensitive than wall time to other processes.
            entry["step_cpu_s"] = round(timer.cpu_seconds / max(args.steps, 1), 4)
            entry["epoch_s_estimate"] = {
                stage: round(timer.per_step * n, 1) for stage, n in entry["steps_per_epoch"].items()
            }
        else:
            per_stage: dict[str, list[float]] = {}
            for log in logs:
                if "train_s" in log.values:
                    key = log.stage + (f"/{log.domain}" if log.domain else "")
                    per_stage.setdefault(key, []).append(log.values["train_s"])
            entry["epoch_s"] = {k: round(sum(v) / len(v), 2) for k, v in per_stage.items()}
            entry["valid_ndcg"] = [
                round(log.values["valid_ndcg"], 5) for log in logs if "valid_ndcg" in log.values
            ]
        result["methods"][kind] = entry
        print(kind, json.dumps(entry), flush=True)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
