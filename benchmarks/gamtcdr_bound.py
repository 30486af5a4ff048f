"""How close GA-MTCDR's training epoch is to what this CPU can do in float32 at all.

A GA-MTCDR step runs two towers [m, 2m, 4m, 8m, 4m, 2m, m] forward and backward, once per
distinct user and once per distinct item of the batch (already the minimum the model
defines). This script counts those rows on real batches of the chosen preset (the method's
own batch rule: ``batch_size`` instances, 1 positive : ``n_negatives`` shuffled), derives the
tower FLOPs of one epoch, times the towers alone on those row counts, and times one large
float32 GEMM as the CPU's attainable peak, all in the same process and thread count. Times
are CPU seconds (``time.process_time``: all threads of this process), so a loaded machine
changes them little; compare them with CPU seconds (``step_cpu_s`` of
``benchmarks/xdomain_speed.py``):

    python benchmarks/gamtcdr_bound.py --threads 1
    python benchmarks/gamtcdr_bound.py --threads 2 --dataset douban

``epoch_floor_cpu_s`` (tower FLOPs / peak) is the least CPU time any float32 implementation
of the model needs per epoch on this CPU. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def tower_flops_per_row(m: int) -> int:
    """Forward + backward (input and weight gradients) multiply-adds x 2 of one row."""
    widths = [m, 2 * m, 4 * m, 8 * m, 4 * m, 2 * m, m]
    return 3 * 2 * sum(a * b for a, b in itertools.pairwise(widths))


def distinct_rows(data, params, gen: torch.Generator, batches: int) -> dict[str, float]:
    """Mean distinct users and items per step and the steps of one epoch, per the method's
    batch rule (instances: shuffled positives and negatives together)."""
    from methods.training import NegativeSampler

    k, rows = params.n_negatives, params.batch_size
    users_per_step, items_per_step, steps = [], [], 0
    for d in data.domains:
        users, items = data.users[d].cpu(), data.items[d].cpu()
        if not len(users):
            continue
        negatives = NegativeSampler(users, items, data.n_items[d]).sample(
            users.repeat_interleave(k), gen
        )
        all_users = torch.cat([users, users.repeat_interleave(k)])
        all_items = torch.cat([items, negatives])
        order = torch.randperm(len(all_users), generator=gen)
        n_steps = -(-len(order) // rows)
        steps += n_steps
        for b in range(min(batches, n_steps)):
            sl = order[b * rows : (b + 1) * rows]
            users_per_step.append(len(torch.unique(all_users[sl])))
            items_per_step.append(len(torch.unique(all_items[sl])))
    return {
        "users_per_step": sum(users_per_step) / len(users_per_step),
        "items_per_step": sum(items_per_step) / len(items_per_step),
        "steps_per_epoch": steps,
    }


def time_towers(m: int, n_users: int, n_items: int, repeats: int) -> float:
    """Seconds of one step's tower work: both towers forward and backward, input gradients
    included (GA-MTCDR's inputs are trainable)."""
    from methods.gamtcdr import _tower

    gen = torch.Generator().manual_seed(0)
    towers = [_tower(m, True, gen), _tower(m, True, gen)]
    inputs = [torch.randn(n, m, requires_grad=True) for n in (n_users, n_items)]

    def step() -> None:
        loss = sum(t(x).sum() for t, x in zip(towers, inputs, strict=True))
        loss.backward()

    step()
    started = time.process_time()
    for _ in range(repeats):
        step()
    return (time.process_time() - started) / repeats


def peak_gflops(repeats: int) -> float:
    """Attainable float32 GEMM rate per CPU second: [4096, 1024] x [1024, 1024]."""
    a, b = torch.randn(4096, 1024), torch.randn(1024, 1024)
    a @ b
    started = time.process_time()
    for _ in range(repeats):
        a @ b
    seconds = (time.process_time() - started) / repeats
    return 2 * 4096 * 1024 * 1024 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon", choices=["amazon", "douban", "quickstart"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=50, help="batches sampled per domain")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from uclr_speed import load

    from methods.gamtcdr import GAMTCDRParams

    params = GAMTCDRParams()
    data, _ = load(args.dataset, torch.device("cpu"))
    rows = distinct_rows(data, params, torch.Generator().manual_seed(0), args.batches)
    m = params.embedding_size
    per_step_flops = tower_flops_per_row(m) * (rows["users_per_step"] + rows["items_per_step"])
    tower_s = time_towers(
        m, round(rows["users_per_step"]), round(rows["items_per_step"]), args.repeats
    )
    peak = peak_gflops(args.repeats)
    steps = rows["steps_per_epoch"]
    out = {
        "dataset": args.dataset,
        "threads": args.threads,
        **{k: round(v, 1) for k, v in rows.items()},
        "tower_gflop_per_step": round(per_step_flops / 1e9, 2),
        "tower_cpu_s_per_step": round(tower_s, 4),
        "tower_gflops": round(per_step_flops / tower_s / 1e9, 1),
        "peak_gflops": round(peak, 1),
        "tower_cpu_s_per_epoch": round(tower_s * steps, 1),
        "epoch_floor_cpu_s": round(per_step_flops * steps / (peak * 1e9), 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
