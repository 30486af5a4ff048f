"""Speed benchmark on the Amazon-shaped synthetic preset (26,507 users, ~584k interactions).

Prints BPRMF seconds per epoch (one pass over every domain's training pairs, m=128, batch 2048,
row-wise Adam), the time to evaluate every (user, domain) test case at K=10 and 20 (scoring
included), the validation NDCG@10 curve, and peak memory. The last line is one JSON object.

    python benchmarks/speed.py                 # defaults: amazon preset, 5 epochs
    python benchmarks/speed.py --epochs 20     # a longer quality curve
    python benchmarks/speed.py --reference     # also time autograd + torch.optim.SparseAdam

Every registered method (``--methods all`` or a list of kinds): each is fitted in its own child
process (so peak RSS is its own) with default parameters and every epoch budget capped at
``--epochs`` (default 1), and reports seconds per training epoch of every stage and domain
(UCLR: stage A ``pge``, B ``cdcae``, C ``lora``), validation seconds, the evaluation of every
test case at K=10 and 20, and peak RSS. Where a plain reference of the same computation
exists it is timed in the same child and reported as a ratio: BPRMF (autograd + SparseAdam),
LightGCN (autograd through full-graph propagation + Adam) and UCLR stage C (the [B, B]
full-matrix contrastive term).

    python benchmarks/speed.py --methods all --epochs 1 --threads 1
    python benchmarks/speed.py --methods lightgcn neumf uclr --busy   # a CPU-bound neighbour

Without ``--threads`` the thread count is what ``harness run`` would choose (the thread
policy: cores less busy ones, so one thread beside ``--busy``'s neighbour on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as `harness` sets it; read at torch's import

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.data.loaders import get_loader
from harness.evaluation.evaluator import (
    CandidateValidator,
    TensorCandidates,
    rank_candidates,
)
from harness.evaluation.metrics import metrics_from_ranks
from harness.protocol.candidates import build_candidates
from harness.protocol.split import leave_one_out
from harness.runner.threads import thread_policy
from methods.bprmf import BPRMFParams, MFTables, bpr_step
from methods.scoring import DotScorer, gathered_dot
from methods.training import NegativeSampler, seeded_generator


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def reference_epoch(users, items, negatives, n_users, n_items, params) -> float:
    """Autograd + SparseAdam on nn.Embedding: the plain PyTorch loop, for comparison."""
    user_emb = torch.nn.Embedding(n_users, params.embedding_size, sparse=True)
    item_emb = torch.nn.Embedding(n_items, params.embedding_size, sparse=True)
    opt = torch.optim.SparseAdam([user_emb.weight, item_emb.weight], lr=params.learning_rate)
    start = time.perf_counter()
    for s in range(0, len(users), params.batch_size):
        u = user_emb(users[s : s + params.batch_size])
        i = item_emb(items[s : s + params.batch_size])
        j = item_emb(negatives[s : s + params.batch_size])
        loss = torch.nn.functional.softplus(-(u * (i - j)).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="amazon", choices=["amazon", "quickstart"])
    parser.add_argument(
        "--epochs", type=int, default=None, help="BPRMF epochs (5); per-method epoch cap (1)"
    )
    parser.add_argument("--eval-batch", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--scorer",
        default="auto",
        choices=["auto", "gather"],
        help="auto: SDDMM on CPU (the harness default); gather: gather + bmm",
    )
    parser.add_argument("--reference", action="store_true", help="also time SparseAdam autograd")
    parser.add_argument(
        "--methods", nargs="+", default=None, help="'all' or kinds: time every method instead"
    )
    parser.add_argument(
        "--busy", action="store_true", help="run a CPU-bound neighbour process meanwhile"
    )
    parser.add_argument(
        "--matmul-precision",
        default="highest",
        choices=["highest", "high", "medium"],
        help="torch float32 matmul precision (the spec's matmul_precision); medium = bf16 products",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    if args.child:
        print(json.dumps(method_child(args)))
        return
    neighbour = start_neighbour() if args.busy else None
    args.thread_source = "--threads"
    if args.threads is None:  # decided as `harness run` decides it: the thread policy
        if neighbour is not None:
            time.sleep(0.5)  # the neighbour has taken its core
        policy = thread_policy()
        args.threads, args.thread_source = policy.threads, policy.describe()
        torch.set_num_threads(args.threads)
    try:
        if args.methods:
            print(json.dumps(run_methods(args)))
        else:
            bprmf_benchmark(args)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def start_neighbour() -> subprocess.Popen:
    """A CPU-bound process on the same machine: the loaded case of a shared box."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_methods(args) -> dict:
    """Fit each method in a child process and collect the children's JSON lines."""
    from methods.registry import available

    kinds = sorted(available()) if args.methods == ["all"] else args.methods
    epochs = args.epochs or 1
    result: dict = {
        "preset": args.preset,
        "threads": args.threads,
        "thread_source": args.thread_source,
        "epoch_cap": epochs,
        "busy": args.busy,
        "matmul_precision": args.matmul_precision,
        "methods": {},
    }
    env = dict(os.environ)
    if args.threads:
        env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    for kind in kinds:
        command = [sys.executable, __file__, "--child", kind, "--preset", args.preset]
        command += ["--epochs", str(epochs), "--eval-batch", str(args.eval_batch)]
        command += ["--matmul-precision", args.matmul_precision]
        if args.threads:
            command += ["--threads", str(args.threads)]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            entry = {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
        else:
            entry = json.loads(lines[-1])
        entry["wall_s"] = round(time.perf_counter() - started, 1)
        result["methods"][kind] = entry
        print(kind, json.dumps(entry), flush=True)
    return result


def load_preset(preset: str, device: torch.device):
    """(TrainingData, validator, test candidates) of a synthetic preset, as the runner has them."""
    from methods.base import TrainingData

    loader = get_loader("synthetic")
    dataset = loader.load(
        loader.config_model.model_validate({"loader": "synthetic", "preset": preset}), Path(".")
    )
    split = leave_one_out(dataset, 0)
    cands = build_candidates(dataset, split, 99, 0)
    data = TrainingData(
        n_users=dataset.n_users,
        domains=dataset.domain_names,
        n_items={d: dataset.domains[d].n_items for d in dataset.domain_names},
        users={
            d: torch.as_tensor(split.domains[d].train_users, device=device) for d in split.domains
        },
        items={
            d: torch.as_tensor(split.domains[d].train_items, device=device) for d in split.domains
        },
    )
    validator = CandidateValidator(
        {d: TensorCandidates.from_numpy(c, device) for d, c in cands.valid.items()}
    )
    test = {d: TensorCandidates.from_numpy(c, device) for d, c in cands.test.items()}
    return data, validator, test


def method_child(args) -> dict:
    """One method: capped fit, per-stage epoch seconds, evaluation, references, peak RSS."""
    from methods_speed import capped_params, stage_table

    from methods.base import EpochLog, FitContext
    from methods.registry import available
    from uclr.cache import STAGE_CACHE

    device = torch.device("cpu")
    data, validator, test = load_preset(args.preset, device)
    cls = available()[args.child]
    params = capped_params(cls, args.epochs)
    method = cls(params, data.n_users, data.n_items)
    logs: list[EpochLog] = []
    ctx = FitContext(seed=0, device=device, validate=validator, log=logs.append)
    STAGE_CACHE.clear()
    _, fit_s = timed(lambda: method.fit(data, ctx))

    def evaluate_all():
        for name, c in test.items():
            g, t = rank_candidates(method.score, name, c, batch_size=args.eval_batch)
            metrics_from_ranks(g, t, [10, 20])

    evaluate_all()  # warm-up (first-use costs, lazily built score tables)
    eval_s = min(timed(evaluate_all)[1] for _ in range(2))
    out = {
        "fit_s": round(fit_s, 2),
        "stages": stage_table(logs),
        "eval_s": round(eval_s, 3),
        "test_cases": sum(len(c.users) for c in test.values()),
    }
    reference = REFERENCES.get(args.child)
    if reference is not None:
        out["reference"] = reference(data, ctx, params, logs)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def _bprmf_reference(data, ctx, params, logs) -> dict:
    """Row-wise Adam step (the method) against autograd + SparseAdam, first domain."""
    name = data.domains[0]
    users, items = data.users[name], data.items[name]
    gen = seeded_generator(0)
    negatives = NegativeSampler(users, items, data.n_items[name]).sample(users, gen)
    ref_s = reference_epoch(users, items, negatives, data.n_users, data.n_items[name], params)
    fast = [e.values["train_s"] for e in logs if e.domain == name and "train_s" in e.values]
    fast_s = sum(fast) / max(len(fast), 1)
    return {
        "domain": name,
        "reference": "autograd + SparseAdam",
        "reference_epoch_s": round(ref_s, 3),
        "epoch_s": round(fast_s, 3),
        "speedup": round(ref_s / fast_s, 2) if fast_s else None,
    }


def _lightgcn_reference(data, ctx, params, logs, steps: int = 5) -> dict:
    """Analytic step with reused buffers against autograd through full-graph propagation."""
    from methods.graph import propagate_layers
    from methods.lightgcn import (
        _adam,
        build_adjacency,
        init_ego_embeddings,
        lightgcn_gradient,
        row_of_nonzero,
    )
    from methods.training import Workspace

    name = data.domains[0]
    users, items = data.users[name], data.items[name]
    n_users, n_items, b = data.n_users, data.n_items[name], params.batch_size
    adjacency = build_adjacency(users, items, n_users, n_items)
    gen = seeded_generator(0)
    negatives = NegativeSampler(users, items, n_items).sample(users, gen)
    order = torch.randperm(len(users), generator=gen)[: steps * b]
    u, i, j = users[order], items[order] + n_users, negatives[order] + n_users

    def fast() -> None:
        ego = torch.nn.Parameter(init_ego_embeddings(n_users, n_items, params, gen))
        opt, workspace, nonzero = (
            _adam(ego, params.learning_rate),
            Workspace(),
            row_of_nonzero(adjacency),
        )
        for s in range(0, len(u), b):
            with torch.no_grad():
                grad, _, _ = lightgcn_gradient(
                    adjacency,
                    ego,
                    u[s : s + b],
                    i[s : s + b],
                    j[s : s + b],
                    params.n_layers,
                    params.reg,
                    nonzero,
                    workspace,
                )
            ego.grad = grad
            opt.step()

    def plain() -> None:
        ego = torch.nn.Parameter(init_ego_embeddings(n_users, n_items, params, gen))
        opt = torch.optim.Adam([ego], lr=params.learning_rate)
        for s in range(0, len(u), b):
            final = propagate_layers(adjacency, ego, params.n_layers)
            e_u, e_i, e_j = final[u[s : s + b]], final[i[s : s + b]], final[j[s : s + b]]
            bpr = torch.nn.functional.softplus(-(e_u * (e_i - e_j)).sum(1)).mean()
            l2 = sum(ego[x[s : s + b]].square().sum() for x in (u, i, j)) / (2 * len(e_u))
            opt.zero_grad()
            (bpr + params.reg * l2).backward()
            opt.step()

    fast_s, plain_s = timed(fast)[1] / steps, timed(plain)[1] / steps
    return {
        "domain": name,
        "reference": "autograd through full-graph propagation + Adam",
        "steps": steps,
        "step_s": round(fast_s, 4),
        "reference_step_s": round(plain_s, 4),
        "speedup": round(plain_s / fast_s, 2),
    }


def _uclr_reference(data, ctx, params, logs) -> dict:
    """Stage C per domain (blocked contrastive term, masked stream sharing the unmasked pass)
    against the v1 path: the full [B, B] matrix and two autoencoder streams of B rows each
    (``CONTRASTIVE_CHUNK = None`` selects it; stages A/B come from the fit above's stage cache)."""
    import uclr.stages as stages
    from methods.base import FitContext
    from methods.registry import available

    reference_logs: list = []
    chunk = stages.CONTRASTIVE_CHUNK
    stages.CONTRASTIVE_CHUNK = None
    try:
        method = available()["uclr"](params, data.n_users, data.n_items)
        method.fit(data, FitContext(ctx.seed, ctx.device, ctx.validate, reference_logs.append))
    finally:
        stages.CONTRASTIVE_CHUNK = chunk

    def per_domain(entries) -> dict:
        out: dict = {}
        for e in entries:
            if e.stage == "lora" and "train_s" in e.values:
                out.setdefault(e.domain, []).append(e.values["train_s"])
        return {d: sum(v) / len(v) for d, v in out.items()}

    fast, plain = per_domain(logs), per_domain(reference_logs)
    return {
        "reference": "stage C with the full [B, B] contrastive matrix and two streams",
        "stage_c_epoch_s": {d: round(v, 3) for d, v in fast.items()},
        "reference_stage_c_epoch_s": {d: round(v, 3) for d, v in plain.items()},
        "speedup": {d: round(plain[d] / fast[d], 2) for d in fast if d in plain and fast[d]},
    }


REFERENCES = {"bprmf": _bprmf_reference, "lightgcn": _lightgcn_reference, "uclr": _uclr_reference}


def bprmf_benchmark(args) -> None:
    """The original benchmark: BPRMF epochs, the validation curve and full evaluation."""
    if args.epochs is None:
        args.epochs = 5

    loader = get_loader("synthetic")
    config = loader.config_model.model_validate({"loader": "synthetic", "preset": args.preset})
    dataset, gen_s = timed(lambda: loader.load(config, Path(".")))
    split, split_s = timed(lambda: leave_one_out(dataset, 0))
    cands, cand_s = timed(lambda: build_candidates(dataset, split, 99, 0))
    n_train = sum(len(s.train_users) for s in split.domains.values())
    n_cases = sum(c.n_cases for c in cands.test.values())
    print(
        f"data: {dataset.n_users} users, {n_train} training pairs, {n_cases} test cases; "
        f"generate {gen_s:.2f}s, split {split_s:.2f}s, candidates {cand_s:.2f}s"
    )

    params = BPRMFParams()
    gen = seeded_generator(0)
    tables, samplers, data = {}, {}, {}
    for name in dataset.domain_names:
        part = split.domains[name]
        users, items = torch.as_tensor(part.train_users), torch.as_tensor(part.train_items)
        tables[name] = MFTables(dataset.n_users, dataset.domains[name].n_items, params, gen)
        samplers[name] = NegativeSampler(users, items, dataset.domains[name].n_items)
        data[name] = (users, items)
    validator = CandidateValidator(
        {d: TensorCandidates.from_numpy(c, torch.device("cpu")) for d, c in cands.valid.items()}
    )

    scorer = DotScorer() if args.scorer == "auto" else gathered_dot

    def score(users, domain, items):
        t = tables[domain]
        return scorer(t.users[users], t.items, items)

    epoch_times, sample_times, curve = [], [], []
    for epoch in range(1, args.epochs + 1):
        sampling, training = 0.0, 0.0
        for name in dataset.domain_names:
            users, items = data[name]
            start = time.perf_counter()
            order = torch.randperm(len(users), generator=gen)
            u, i = users[order], items[order]
            j = samplers[name].sample(u, gen)
            mid = time.perf_counter()
            for s in range(0, len(u), params.batch_size):
                e = s + params.batch_size
                bpr_step(tables[name], u[s:e], i[s:e], j[s:e], params.reg)
            sampling += mid - start
            training += time.perf_counter() - mid
        epoch_times.append(sampling + training)
        sample_times.append(sampling)
        valid = validator(score)
        curve.append(round(float(np.mean(list(valid.values()))), 5))
        print(
            f"epoch {epoch}: {sampling + training:.3f}s (sampling {sampling:.3f}s), "
            f"valid NDCG@10 {curve[-1]:.4f} "
            f"{json.dumps({k: round(v, 4) for k, v in valid.items()})}"
        )

    test = {d: TensorCandidates.from_numpy(c, torch.device("cpu")) for d, c in cands.test.items()}

    def evaluate_all():
        out = {}
        for name, c in test.items():
            g, t = rank_candidates(score, name, c, batch_size=args.eval_batch)
            out[name] = metrics_from_ranks(g, t, [10, 20])
        return out

    evaluate_all()  # warm-up
    eval_runs = [timed(evaluate_all)[1] for _ in range(3)]
    result = {
        "preset": args.preset,
        "threads": torch.get_num_threads(),
        "users": dataset.n_users,
        "train_pairs": n_train,
        "test_cases": n_cases,
        "bprmf_epoch_s": round(float(np.median(epoch_times)), 3),
        "bprmf_sampling_s": round(float(np.median(sample_times)), 3),
        "eval_s": round(float(np.median(eval_runs)), 3),
        "scorer": args.scorer,
        "valid_ndcg10_curve": curve,
        "generate_s": round(gen_s, 2),
        "candidates_s": round(cand_s, 2),
    }
    if args.reference:
        name = dataset.domain_names[0]
        users, items = data[name]
        negatives = samplers[name].sample(users, gen)
        ref = reference_epoch(
            users, items, negatives, dataset.n_users, dataset.domains[name].n_items, params
        )
        result["sparse_adam_epoch_s"] = round(ref * n_train / len(users), 3)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
