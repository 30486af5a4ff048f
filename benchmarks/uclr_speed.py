"""UCLR time per epoch of each stage, and the ladder's validation NDCG@10 on a short run.

Stage A is the global BPRMF over the union of domains (one epoch = one pass over every training
pair); stage B the contrastive autoencoder (one epoch = one pass over the users in batches of
2048); stage C the LoRA fine-tuning of one domain (one epoch = one pass over that domain's pairs,
each step with an independent batch of users for L_combined). Paper settings unless overridden.

    python benchmarks/uclr_speed.py                        # Amazon-shaped preset (26,507 users)
    python benchmarks/uclr_speed.py --dataset douban       # the data home's douban (fetch it first)
    python benchmarks/uclr_speed.py --dataset quickstart --ladder --epochs 30
        # also: train pge … uclr with up to --epochs epochs per stage, print validation NDCG@10
    python benchmarks/uclr_speed.py --stage-c-reference --epochs 6
        # stage C epochs paired with version 2's (two autoencoder streams), alternating in
        # one process: per-domain medians and the median of the paired ratios

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.data.home import entry_dir  # noqa: E402
from harness.data.loaders import get_loader  # noqa: E402
from harness.data.registry import get_entry  # noqa: E402
from harness.evaluation.evaluator import CandidateValidator, TensorCandidates  # noqa: E402
from harness.protocol.candidates import build_candidates  # noqa: E402
from harness.protocol.split import leave_one_out  # noqa: E402
from methods.base import FitContext, FitSummary, TrainingData  # noqa: E402
from uclr.cache import STAGE_CACHE  # noqa: E402
from uclr.methods import PGE, PGEAE, PGECLAE, PGEUCLAE, UCLR  # noqa: E402
from uclr.params import UCLRParams  # noqa: E402
from uclr.pretrain import domain_validator, pretrain  # noqa: E402
from uclr.stages import (  # noqa: E402
    CONTRASTIVE_CHUNK,
    AutoencoderResult,
    AutoencoderStage,
    CombinedLoss,
    LoRAStage,
    activity_groups,
)

CONFIGS = {
    "amazon": {"loader": "synthetic", "preset": "amazon"},
    "quickstart": {"loader": "synthetic", "preset": "quickstart"},
    "douban": {
        "loader": "douban",
        "path": str(entry_dir(get_entry("douban"))),  # `harness data fetch douban` first
        "domains": ["books", "music"],
        "keep_users": "all_domains",
    },
}


def load(name: str, device: torch.device):
    loader = get_loader(CONFIGS[name]["loader"])
    dataset = loader.load(loader.config_model.model_validate(CONFIGS[name]), REPO)
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
    return data, validator


def timed(fn):
    start = time.perf_counter()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def stage_times(data, ctx, params: UCLRParams, epochs: int, reference: bool = False) -> dict:
    """Seconds per training epoch of each stage (validation timed separately); with
    ``reference``, stage C paired against version 2's (:func:`paired_stage_c`)."""
    out: dict = {}
    # Stage A: ``epochs`` epochs; run_epochs validates after the last one.
    p_a = params.model_copy(update={"pge_max_epochs": epochs, "pge_eval_every": epochs})
    pge, seconds = timed(lambda: pretrain(data, p_a, ctx, lambda _e: None))
    _, valid_s = timed(lambda: domain_validator(data, ctx)(pge.users, pge.items))
    out["stage_a_epoch_s"] = round((seconds - valid_s) / epochs, 3)
    out["stage_a_validate_s"] = round(valid_s, 3)
    groups = activity_groups(data)
    stage_b = AutoencoderStage(pge, "ucl", params, ctx, data, groups)
    stage_b.train_epoch()  # warm-up (first-use costs)
    per = [timed(stage_b.train_epoch)[1] for _ in range(epochs)]
    out["stage_b_epoch_s"] = round(sum(per) / len(per), 3)
    out["stage_b_steps_per_epoch"] = stage_b.users.n_batches
    _, valid_s = timed(stage_b.validate)
    out["stage_b_validate_s"] = round(valid_s, 3)
    b_result = AutoencoderResult(
        mode="ucl",
        ae_state={k: v.detach().clone() for k, v in stage_b.ae.state_dict().items()},
        temperatures=stage_b.temperatures.copy(),
        summary=FitSummary(epochs=epochs, best_epoch=epochs, best_valid=0.0),
    )
    for index, domain in enumerate(data.domains):
        stage_c = LoRAStage(domain, index, pge, b_result, params, ctx, data, groups)
        if reference:
            out |= paired_stage_c(
                stage_c,
                LoRAStage(domain, index, pge, b_result, params, ctx, data, groups),
                epochs,
                domain,
            )
        else:
            per = [timed(stage_c.train_epoch)[1] for _ in range(max(1, epochs // 2))]
            out[f"stage_c_epoch_s[{domain}]"] = round(sum(per) / len(per), 3)
        _, valid_s = timed(stage_c.validate)
        out[f"stage_c_validate_s[{domain}]"] = round(valid_s, 3)
        out[f"stage_c_pairs[{domain}]"] = len(data.users[domain])
    return out


def paired_stage_c(stage_c: LoRAStage, reference: LoRAStage, epochs: int, domain: str) -> dict:
    """Stage C epochs of this revision and of version 2 (the masked stream as a second pass
    over B rows) alternating, so both see the same machine load; both start from the same
    state and draws."""
    reference.objective = CombinedLoss(
        "ucl",
        reference.p,
        reference.temperatures,
        reference.gen,
        CONTRASTIVE_CHUNK,
        share_masked_pass=False,
    )
    new, old = [], []
    for _ in range(epochs):
        old.append(timed(reference.train_epoch)[1])
        new.append(timed(stage_c.train_epoch)[1])
    ratios = [o / n for o, n in zip(old, new, strict=True)]
    return {
        f"stage_c_epoch_s[{domain}]": round(statistics.median(new), 3),
        f"stage_c_v2_epoch_s[{domain}]": round(statistics.median(old), 3),
        f"stage_c_v2_over_v3[{domain}]": round(statistics.median(ratios), 3),
    }


def ladder(data, ctx, params: UCLRParams) -> dict:
    """Validation NDCG@10 (mean over domains and per domain) of each ladder variant."""
    STAGE_CACHE.clear()
    out = {}
    for cls in (PGE, PGEAE, PGECLAE, PGEUCLAE, UCLR):
        method = cls(params, data.n_users, data.n_items)
        summary, seconds = timed(lambda m=method: m.fit(data, ctx))
        valid = summary.notes["valid"]
        out[cls.kind] = {
            "valid_ndcg10": round(summary.best_valid, 4),
            "per_domain": {d: round(v, 4) for d, v in valid.items()},
            "epochs": {k: v["epochs"] for k, v in summary.notes.items() if k != "valid"},
            "seconds": round(seconds, 1),
        }
        print(cls.kind, json.dumps(out[cls.kind]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon", choices=sorted(CONFIGS))
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per stage")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ladder", action="store_true", help="also train the five variants")
    parser.add_argument(
        "--stage-c-reference",
        action="store_true",
        help="time stage C against version 2's two-stream pass, epochs alternating",
    )
    parser.add_argument(
        "--params", default="{}", help="JSON overrides of UCLRParams (paper settings otherwise)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    (data, validator), load_s = timed(lambda: load(args.dataset, device))
    params = UCLRParams(**json.loads(args.params))
    ctx = FitContext(seed=0, device=device, validate=validator)
    pairs = {d: len(data.users[d]) for d in data.domains}
    print(f"{args.dataset}: {data.n_users} users, pairs {pairs}, loaded in {load_s:.1f}s")
    result: dict = {"dataset": args.dataset, "users": data.n_users, "pairs": pairs}
    result["threads"] = torch.get_num_threads()
    result |= stage_times(data, ctx, params, args.epochs, args.stage_c_reference)
    print(json.dumps(result), flush=True)
    if args.ladder:
        result["ladder"] = ladder(data, ctx, params)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
