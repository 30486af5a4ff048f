"""Speed benchmark on the Amazon-shaped synthetic preset (26,507 users, ~584k interactions).

Prints BPRMF seconds per epoch (one pass over every domain's training pairs, m=128, batch 2048,
row-wise Adam), the time to evaluate every (user, domain) test case at K=10 and 20 (scoring
included), the validation NDCG@10 curve, and peak memory. The last line is one JSON object.

    python benchmarks/speed.py                 # defaults: amazon preset, 5 epochs
    python benchmarks/speed.py --epochs 20     # a longer quality curve
    python benchmarks/speed.py --reference     # also time autograd + torch.optim.SparseAdam
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.loaders import get_loader
from harness.evaluation.evaluator import (
    CandidateValidator,
    TensorCandidates,
    rank_candidates,
)
from harness.evaluation.metrics import metrics_from_ranks
from harness.protocol.candidates import build_candidates
from harness.protocol.split import leave_one_out
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
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--eval-batch", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--scorer",
        default="auto",
        choices=["auto", "gather"],
        help="auto: SDDMM on CPU (the harness default); gather: gather + bmm",
    )
    parser.add_argument("--reference", action="store_true", help="also time SparseAdam autograd")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

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
