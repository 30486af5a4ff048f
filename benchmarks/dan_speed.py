"""Recsys-DAN seconds per training step of each phase and target, against the v1 path.

Recsys-DAN trains, per target domain, a source model (phase 1) and an adversarial adaptation
(phase 2). Every step of both reads user vectors as the mean of an item table over each user's
history; on Douban the histories are long (books: 501 items per sampled pair on average). The
reference is version 1 of that code in the same process: the mean per row of the batch as a
sparse product over the gathered unique rows, and the frozen source side recomputed every
adaptation step, and the interaction layer over [u; i; u*i] with the user repeated for every
item. The current code takes the mean once per distinct user through one ``embedding_bag`` over
the whole table, looks the frozen source vectors up, and applies the layer's user part once.

    python benchmarks/dan_speed.py --dataset douban --threads 1
    python benchmarks/dan_speed.py --dataset amazon --steps 10

Per target it prints step seconds of both phases for both paths, and a per-seed estimate:
steps per epoch x seconds per step x the epochs that phase ran in a published v1 cell
(``--epochs``; Douban seed 0: 84 / 13 epochs for target books, 17 / 30 for music). The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from uclr_speed import load

from methods._xdomain import EmbeddingTable, UserHistory
from methods.recsys_dan import (
    RecsysDANParams,
    _DANTarget,
    _Predictor,
    _SourceSampler,
)
from methods.training import NegativeSampler, seeded_generator

# Epochs per (target, phase) of the published v1 Douban seed 0 cell (its fit notes).
DOUBAN_SEED0_EPOCHS = {"books": (84, 13), "music": (17, 30)}


def v1_mean(
    self: UserHistory,
    users: torch.Tensor,
    table: EmbeddingTable | torch.Tensor,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Version 1: every row of the batch, a sparse product over the gathered unique rows."""
    rows, cols, weights = self.segments(users, exclude)
    dim = table.weight.shape[1] if isinstance(table, EmbeddingTable) else table.shape[1]
    if len(cols) == 0:
        return torch.zeros(len(users), dim, device=users.device)
    if isinstance(table, EmbeddingTable):
        unique_rows, inverse = table.gather_unique(cols)
    else:
        unique, inverse = torch.unique(cols, return_inverse=True)
        unique_rows = table[unique]
    pattern = torch.sparse_coo_tensor(
        torch.stack([rows, inverse]),
        weights.to(unique_rows.dtype),
        (len(users), unique_rows.shape[0]),
        check_invariants=False,
    )
    return torch.sparse.mm(pattern, unique_rows)


def v1_represent(self: _Predictor, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """Version 1: the user broadcast over every item, one Linear over [u; i; u*i]."""
    u = u.expand_as(i)
    return torch.relu(self.interaction(torch.cat([u, i, u * i], -1)))


@contextmanager
def v1_path():
    """Version 1's history mean, interaction layer and per-step frozen source side."""
    saved = (UserHistory.mean, _DANTarget._frozen_source_tables, _Predictor.represent)
    UserHistory.mean = v1_mean  # type: ignore[method-assign]
    _DANTarget._frozen_source_tables = lambda self: None  # type: ignore[method-assign]
    _Predictor.represent = v1_represent  # type: ignore[method-assign]
    try:
        yield
    finally:
        UserHistory.mean, _DANTarget._frozen_source_tables, _Predictor.represent = saved


def per_step(fn, steps: int) -> float:
    fn(1)  # warm-up: first allocations, lazy initialisation
    start = time.perf_counter()
    fn(steps)
    return (time.perf_counter() - start) / steps


def time_target(data, target: str, p: RecsysDANParams, steps: int) -> dict[str, float]:
    """Seconds per source step and per adaptation step for ``target`` (fresh model, seed 0)."""
    gen = seeded_generator(0, 0)
    model = _DANTarget(data, target, p, gen, torch.device("cpu"))
    parts = [(model.offsets[d], data.n_items[d]) for d in model.sources]
    sampler = _SourceSampler(model.src_users, model.src_items, parts)
    n_src, n_tgt, b = len(model.src_users), len(model.tgt_users), p.batch_size
    order = torch.randperm(n_src, generator=gen)
    users, items = model.src_users[order], model.src_items[order]
    neg = sampler.sample(users, items, p.n_negatives, gen)

    def source(k: int) -> None:
        for s in range(0, k * b, b):
            model.source_step(users[s : s + b], items[s : s + b], neg[s : s + b], None)

    source_s = per_step(source, steps)
    model.freeze_source_and_start_adaptation()
    tgt_sampler = NegativeSampler(model.tgt_users, model.tgt_items, model.n_target_items)
    order = torch.randperm(n_tgt, generator=gen)
    t_users, t_pos = model.tgt_users[order], model.tgt_items[order]
    t_neg = tgt_sampler.sample(t_users.repeat_interleave(p.n_negatives), gen).view(n_tgt, -1)
    src = torch.randint(n_src, (n_tgt,), generator=gen)
    s_users, s_items = model.src_users[src], model.src_items[src]

    def adapt(k: int) -> None:
        for s in range(0, k * b, b):
            sl = slice(s, s + b)
            model.adaptation_step(s_users[sl], s_items[sl], t_users[sl], t_pos[sl], t_neg[sl])

    adapt_s = per_step(adapt, steps)
    return {
        "source_step_s": source_s,
        "adapt_step_s": adapt_s,
        "source_steps_per_epoch": -(-n_src // b),
        "adapt_steps_per_epoch": -(-n_tgt // b),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="douban", choices=["douban", "amazon", "quickstart"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per phase")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, _ = load(args.dataset, torch.device("cpu"))
    p = RecsysDANParams()
    out: dict = {"dataset": args.dataset, "threads": args.threads, "targets": {}}
    seed_s = {"v1": 0.0, "v2": 0.0}
    for target in data.domains:
        with v1_path():
            v1 = time_target(data, target, p, args.steps)
        v2 = time_target(data, target, p, args.steps)
        row = {
            "steps_per_epoch": [v2["source_steps_per_epoch"], v2["adapt_steps_per_epoch"]],
            "v1_step_s": [round(v1["source_step_s"], 4), round(v1["adapt_step_s"], 4)],
            "v2_step_s": [round(v2["source_step_s"], 4), round(v2["adapt_step_s"], 4)],
            "speedup": [
                round(v1["source_step_s"] / v2["source_step_s"], 2),
                round(v1["adapt_step_s"] / v2["adapt_step_s"], 2),
            ],
        }
        epochs = DOUBAN_SEED0_EPOCHS.get(target) if args.dataset == "douban" else None
        if epochs:
            for name, r in (("v1", v1), ("v2", v2)):
                seed_s[name] += epochs[0] * r["source_steps_per_epoch"] * r["source_step_s"]
                seed_s[name] += epochs[1] * r["adapt_steps_per_epoch"] * r["adapt_step_s"]
        print(f"{target}: {row}", flush=True)
        out["targets"][target] = row
    if args.dataset == "douban":
        out["seed0_training_steps_s"] = {k: round(v, 1) for k, v in seed_s.items()}
        out["seed0_speedup"] = round(seed_s["v1"] / seed_s["v2"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
