"""UCLR and its ablation ladder (methods.md §2, sanity checks §2.9): the full method trains end
to end and learns; LoRA at step 0 is exactly PGE+UCL-AE; masking never reaches scoring; the
stage cache changes nothing; the literal Eq. 3 collapses and fails the cell; temperatures land
in DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from methods.base import FitSummary
from methods.popularity import Popularity, PopularityParams
from methods.registry import available
from tests.conftest import RANDOM_NDCG10, fit_planted, planted_training_data
from uclr import autoencoder as ae_module
from uclr import stages as stages_module
from uclr.autoencoder import (
    CollaborativeAutoencoder,
    dual_stream,
    mask_embeddings,
    reconstruction_loss,
    row_keep_mask,
    row_masked_dual_stream,
)
from uclr.cache import STAGE_CACHE
from uclr.lora import LoRAUserTable
from uclr.methods import PGE, PGEAE, PGECLAE, PGEUCLAE, UCLR
from uclr.params import (
    STAGE_A_FIELDS,
    STAGE_B_FIELDS,
    STAGE_C_FIELDS,
    UNKEYED_FIELDS,
    UCLRParams,
)
from uclr.pretrain import SameDomainSampler, global_pairs
from uclr.stages import CombinedLoss, activity_groups, stage_b_schedule
from uclr.temperature import TemperatureCollapse, TemperatureConfig, UserTemperatures

# Small settings for the planted data (400 users, 3 domains): a few seconds per variant.
PLANTED = dict(
    embedding_size=32,
    batch_size=256,
    learning_rate=0.01,
    patience=4,
    pge_max_epochs=30,
    ae_max_epochs=20,
    ae_max_steps=1,
    ae_eval_every_epochs=2,
    ae_eval_every_steps=1,
    lora_max_epochs=5,
)
LADDER = (PGE, PGEAE, PGECLAE, PGEUCLAE, UCLR)


def _params(**overrides) -> UCLRParams:
    return UCLRParams(**{**PLANTED, **overrides})


def _scores(method, domain: str = "books") -> torch.Tensor:
    users = torch.arange(50)
    return method.score(users, domain, torch.arange(40).expand(50, -1))


@pytest.fixture(autouse=True)
def _cold_cache():
    STAGE_CACHE.clear()
    yield
    STAGE_CACHE.clear()


# -- parameters -------------------------------------------------------------------------------


def test_every_parameter_belongs_to_exactly_one_stage_key():
    groups = [STAGE_A_FIELDS, STAGE_B_FIELDS, STAGE_C_FIELDS, UNKEYED_FIELDS]
    assert set().union(*groups) == set(UCLRParams.model_fields)
    assert sum(len(g) for g in groups) == len(UCLRParams.model_fields)


def test_parameters_have_the_register_defaults_and_are_validated():
    p = UCLRParams()
    assert (p.embedding_size, p.batch_size, p.learning_rate, p.patience) == (128, 2048, 1e-3, 10)
    assert (p.ae_hidden, p.ae_latent, p.ae_alpha, p.ae_mask_ratio) == (128, 32, 1e-3, 0.3)
    assert (p.tau_rho, p.tau_init, p.tau_min, p.tau_max) == (1.0, 0.1, 1e-5, 1.0)
    assert (p.tau_gamma, p.tau_beta, p.tau_eta, p.tau_update) == (0.9, 0.9, 1e-3, "additive")
    assert (p.pge_neg, p.score_path, p.ae_mask_mode, p.lora_rank) == ("all", "ae_output", "row", 8)
    assert UCLRParams(tau_rho="logn").tau_rho == "logn"
    for bad in (
        {"tau_rho": "log"},
        {"tau_min": 1.0, "tau_max": 0.5},
        {"tau_init": 2.0},
        {"backbone": "lightgcn", "pge_neg": "same_domain"},
        {"ae_mask_ratio": 1.0},
        {"unknown": 1},
    ):
        with pytest.raises(ValueError):
            UCLRParams(**bad)
    for cls in LADDER:
        assert cls.Params is UCLRParams and cls.family == "ours" and cls.kind in available()


def test_stage_b_schedule_follows_methods_2_3_7():
    p = UCLRParams()
    assert stage_b_schedule(p, 26_507) == (200, 5)  # Amazon: 13 batches per epoch
    assert stage_b_schedule(p, 1_733) == (2000, 50)  # Douban: one batch, 2,000 steps


# -- building blocks ----------------------------------------------------------------------------


def test_row_masking_zeroes_exactly_the_ratio_of_rows_and_feature_masking_coordinates():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=gen) + 5.0
    masked = mask_embeddings(x, 0.3, "row", gen)
    zero_rows = (masked == 0).all(dim=1)
    assert int(zero_rows.sum()) == 60
    assert torch.equal(masked[~zero_rows], x[~zero_rows])
    feature = mask_embeddings(x, 0.3, "feature", gen)
    share = float((feature == 0).float().mean())
    assert 0.25 < share < 0.35 and not (feature == 0).all(dim=1).any()


def _double_autoencoder(dim: int, seed: int) -> CollaborativeAutoencoder:
    gen = torch.Generator().manual_seed(seed)
    return CollaborativeAutoencoder(dim, 16, 8).reset_parameters(gen).double()


def test_row_masked_dual_stream_is_the_two_stream_pass_with_its_gradients():
    ae = _double_autoencoder(12, 3)
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    keep = row_keep_mask(40, 0.3, torch.Generator().manual_seed(5))
    masked = mask_embeddings(x, 0.3, "row", torch.Generator().manual_seed(5))
    assert int((~keep).sum()) == 12 and torch.equal(masked[~keep], torch.zeros(12, 12))

    def weighted(streams, x_leaf) -> tuple[torch.Tensor, ...]:
        # Distinct weights per tensor so every output's gradient path is exercised.
        total = sum(
            (w * t).sum()
            for w, t in zip(
                (1.0, 2.0, 3.0, 4.0),
                (streams.z, streams.z_masked, streams.x_hat, streams.x_hat_masked),
                strict=True,
            )
        )
        return torch.autograd.grad(total.sin(), [x_leaf, *ae.parameters()])

    x_two = x.clone().requires_grad_()
    masked_two = mask_embeddings(x_two, 0.3, "row", torch.Generator().manual_seed(5))
    two = dual_stream(ae, x_two, masked_two)
    x_one = x.clone().requires_grad_()
    one = row_masked_dual_stream(ae, x_one, keep)
    for name in ("z", "z_masked", "x_hat", "x_hat_masked"):
        assert torch.allclose(getattr(one, name), getattr(two, name), rtol=1e-12, atol=1e-12)
    for got, want in zip(weighted(one, x_one), weighted(two, x_two), strict=True):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("symmetric", [False, True])
def test_stage_c_objective_equals_the_stage_b_path_on_the_same_draws(symmetric):
    """Stage C's objective (blocked contrastive term, shared masked pass; and version 2's
    two-stream pass) gives stage B's losses, gradients and temperature updates, and consumes
    the generator alike."""
    p = _params(embedding_size=12, ae_symmetric=symmetric)
    cfg = TemperatureConfig(rho=1.0, gamma=0.9, eta=0.05)
    runs = []
    for chunk, shared in ((None, True), (7, True), (7, False)):
        ae = _double_autoencoder(12, 6)
        temps = UserTemperatures(60, cfg, torch.device("cpu"), directions=2 if symmetric else 1)
        temps.tau = temps.tau.double()
        temps.log_u, temps.momentum = temps.log_u.double(), temps.momentum.double()
        gen = torch.Generator().manual_seed(11)
        objective = CombinedLoss("ucl", p, temps, gen, chunk, share_masked_pass=shared)
        data = torch.Generator().manual_seed(12)
        steps = []
        for _step in range(3):
            users = torch.randperm(60, generator=data)[:25]
            x = torch.randn(25, 12, generator=data, dtype=torch.float64).requires_grad_()
            loss, parts = objective(ae, x, x.detach(), users)
            grads = torch.autograd.grad(loss, [x, *ae.parameters()])
            state = {name: value.clone() for name, value in temps.state().items()}
            steps.append((loss.detach(), parts, grads, state))
        runs.append((steps, gen.get_state()))
    (reference, ref_gen), *stage_c_runs = runs
    for stage_c, c_gen in stage_c_runs:
        assert torch.equal(ref_gen, c_gen)
        _assert_same_steps(reference, stage_c)


def _assert_same_steps(reference: list, stage_c: list) -> None:
    for (loss_b, parts_b, grads_b, state_b), (loss_c, parts_c, grads_c, state_c) in zip(
        reference, stage_c, strict=True
    ):
        assert torch.allclose(loss_b, loss_c, rtol=1e-10)
        assert set(parts_b) == set(parts_c)
        for name, value in parts_b.items():
            assert torch.allclose(value, parts_c[name], rtol=1e-10)
        for got, want in zip(grads_c, grads_b, strict=True):
            assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
        for name, value in state_b.items():
            assert torch.allclose(value.double(), state_c[name].double(), rtol=1e-10)


def test_reconstruction_loss_sums_squared_errors_over_coordinates():
    target = torch.zeros(4, 8)
    loss = reconstruction_loss(torch.ones(4, 8), 2 * torch.ones(4, 8), target)
    assert loss == pytest.approx(8 * 1 + 8 * 4)  # Eq. 4: ‖·‖² summed, batch averaged


def test_autoencoder_shapes_and_seeded_initialisation():
    a = CollaborativeAutoencoder(24, 128, 32).reset_parameters(torch.Generator().manual_seed(1))
    b = CollaborativeAutoencoder(24, 128, 32).reset_parameters(torch.Generator().manual_seed(1))
    shapes = [tuple(p.shape) for p in a.parameters()]
    assert shapes == [(128, 24), (128,), (32, 128), (32,), (128, 32), (128,), (24, 128), (24,)]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not any(isinstance(m, torch.nn.BatchNorm1d | torch.nn.Dropout) for m in a.modules())


def test_lora_table_starts_at_w0_and_adapts_both_factors():
    base = torch.randn(30, 8)
    table = LoRAUserTable(base, rank=4, gen=torch.Generator().manual_seed(0))
    assert torch.equal(table.merged(), base) and torch.equal(table(torch.arange(5)), base[:5])
    assert torch.count_nonzero(table.lora_B) == 0 and table.lora_A.std() > 0.5
    assert table.scaling == 1.0 and LoRAUserTable(base, 4, torch.Generator(), 8.0).scaling == 2
    opt = torch.optim.Adam(table.parameters(), lr=0.1)
    for _ in range(2):  # B moves first (A has zero gradient while B = 0), then A
        opt.zero_grad()
        table(torch.tensor([1, 2])).sum().backward()
        opt.step()
    assert torch.equal(table.base, base)  # W0 frozen
    assert torch.count_nonzero(table.lora_B[[0, 3]]) == 0  # untouched users keep ΔW = 0
    assert torch.count_nonzero(table.lora_B[[1, 2]]) > 0
    assert not torch.allclose(table.merged()[1], base[1])


def test_same_domain_negatives_stay_in_the_positives_domain():
    data, _ = planted_training_data()
    users, items = global_pairs(data)
    sampler = SameDomainSampler(data)
    gen = torch.Generator().manual_seed(0)
    negatives = sampler.sample(users, gen, items=items)
    starts = sampler.starts
    assert torch.equal(
        torch.bucketize(items, starts, right=True), torch.bucketize(negatives, starts, right=True)
    )
    keys = set((users * 10**6 + items).tolist())
    assert not keys & set((users * 10**6 + negatives).tolist())


def test_activity_groups_are_quintiles_from_least_to_most_active():
    data, _ = planted_training_data()
    groups = activity_groups(data)
    counts = sum(data.counts_per_user(d) for d in data.domains)
    assert torch.bincount(groups).tolist() == [80] * 5
    assert counts[groups == 0].max() <= counts[groups == 4].min()


# -- the methods ----------------------------------------------------------------------------------


def test_full_uclr_cell_trains_end_to_end_learns_and_is_deterministic():
    p = _params(share_stages=False)
    method, summary, validator = fit_planted(UCLR, p, seed=0)
    again, _, _ = fit_planted(UCLR, p, seed=0)
    other, _, _ = fit_planted(UCLR, p, seed=1)
    assert torch.isfinite(_scores(method)).all()
    assert torch.equal(_scores(method), _scores(again))
    assert not torch.equal(_scores(method), _scores(other))
    valid = validator(method.score)
    mean = sum(valid.values()) / len(valid)
    assert min(valid.values()) > 1.5 * RANDOM_NDCG10, valid
    pop, _, _ = fit_planted(Popularity, PopularityParams())
    popular = validator(pop.score)
    assert mean > sum(popular.values()) / len(popular), (valid, popular)
    assert summary.best_valid == pytest.approx(mean)
    # stage notes and temperatures: stage B plus one stage-C run per domain
    assert {"pge", "cdcae", "lora:books", "lora:movies", "lora:electronics"} <= set(summary.notes)
    stages = [(v.stage, v.domain) for v in summary.user_values]
    assert stages == [("cdcae", None)] + [("lora", d) for d in ("books", "movies", "electronics")]
    for values in summary.user_values:
        assert values.name == "temperature" and values.values.shape == (method.n_users,)
        assert np.all((values.values >= p.tau_min) & (values.values <= p.tau_max))
        assert np.std(values.values) > 0  # individual, not one shared value


def test_ladder_shares_stages_without_changing_results():
    methods, notes = {}, {}
    for cls in LADDER:  # warm: each variant reuses what the previous ones computed
        method, summary, validator = fit_planted(cls, _params())
        methods[cls.kind], notes[cls.kind] = method, summary.notes
    assert notes["pge"]["pge"]["from_cache"] is False
    assert all(notes[k]["pge"]["from_cache"] for k in ("pge_ae", "pge_cl_ae", "uclr"))
    assert notes["uclr"]["cdcae"]["from_cache"] is True
    assert notes["pge_cl_ae"]["cdcae"]["from_cache"] is False
    STAGE_CACHE.clear()
    cold, cold_summary, _ = fit_planted(UCLR, _params(share_stages=False))
    assert cold_summary.notes["cdcae"]["from_cache"] is False
    for domain in ("books", "movies", "electronics"):
        assert torch.equal(_scores(methods["uclr"], domain), _scores(cold, domain))
    STAGE_CACHE.clear()
    cold_ae, _, _ = fit_planted(PGEAE, _params(share_stages=False))
    assert torch.equal(_scores(methods["pge_ae"]), _scores(cold_ae))
    # every rung learns something on the planted data
    pop, _, _ = fit_planted(Popularity, PopularityParams())
    popular = validator(pop.score)
    for kind, method in methods.items():
        valid = validator(method.score)
        assert sum(valid.values()) > sum(popular.values()), (kind, valid, popular)
    # the rungs differ from one another
    assert not torch.equal(_scores(methods["pge"]), _scores(methods["pge_ae"]))
    assert not torch.equal(_scores(methods["pge_cl_ae"]), _scores(methods["pge_ucl_ae"]))


def test_lora_at_step_zero_reproduces_pge_ucl_ae_exactly(monkeypatch):
    p = _params()
    reference, _, _ = fit_planted(PGEUCLAE, p)
    tuned, _, _ = fit_planted(UCLR, p)
    monkeypatch.setattr(
        stages_module.LoRAStage,
        "run",
        lambda self, log: FitSummary(epochs=0, best_epoch=0, best_valid=0.0),
    )
    untrained, _, _ = fit_planted(UCLR, p)
    for domain in ("books", "movies", "electronics"):
        assert torch.equal(_scores(untrained, domain), _scores(reference, domain))
        assert not torch.equal(_scores(tuned, domain), _scores(reference, domain))


def test_masking_never_leaks_into_scoring(monkeypatch):
    grad_enabled: list[bool] = []
    real = ae_module.mask_embeddings

    def recording(*args, **kwargs):
        grad_enabled.append(torch.is_grad_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(stages_module, "mask_embeddings", recording)
    method, _, validator = fit_planted(UCLR, _params(lora_max_epochs=2, ae_max_epochs=4))
    # Training masks through this very function, and only inside training steps: the scoring
    # and validation vectors are computed under no_grad, where no mask was ever drawn.
    assert grad_enabled and all(grad_enabled)

    def forbidden(*args, **kwargs):
        raise AssertionError("masking called at inference")

    monkeypatch.setattr(stages_module, "mask_embeddings", forbidden)
    monkeypatch.setattr(ae_module, "mask_embeddings", forbidden)
    users = torch.arange(60)
    items = torch.arange(30).expand(60, -1)
    torch.manual_seed(123)
    first = method.score(users, "movies", items)
    torch.manual_seed(456)
    second = method.score(users, "movies", items)
    assert torch.equal(first, second)  # scoring draws nothing random
    alone = torch.cat([method.score(users[i : i + 1], "movies", items[:1]) for i in range(60)])
    assert torch.allclose(alone, first, rtol=0, atol=1e-6)  # a row's score ignores the batch
    assert torch.isfinite(method.score_all(users, "movies")).all()
    validator(method.score)


def test_score_path_raw_scores_with_the_pretrained_users():
    pge, _, _ = fit_planted(PGE, _params())
    raw, _, _ = fit_planted(PGEUCLAE, _params(score_path="raw", ae_max_epochs=2))
    assert torch.equal(_scores(pge), _scores(raw))


def test_literal_eq3_collapses_the_temperatures_and_fails_the_cell():
    collapse = _params(
        tau_rho="logn",
        tau_eta=0.01,  # LibAUC's default step: a quick collapse for the test
        batch_size=400,
        ae_max_epochs=30,
        ae_eval_every_epochs=30,
    )
    with pytest.raises(TemperatureCollapse, match="tau_rho='logn'"):
        fit_planted(PGEUCLAE, collapse)
    _, summary, _ = fit_planted(PGEUCLAE, collapse.model_copy(update={"allow_collapse": True}))
    tau = summary.user_values[0].values
    at_bound = np.isclose(tau, 1e-5, rtol=1e-5) | np.isclose(tau, 1.0)
    assert at_bound.mean() > 0.9
    # the explicit ρ keeps them inside on the same schedule
    _, fine, _ = fit_planted(PGEUCLAE, collapse.model_copy(update={"tau_rho": 1.0}))
    tau = fine.user_values[0].values
    assert (np.isclose(tau, 1e-5, rtol=1e-5) | np.isclose(tau, 1.0)).mean() < 0.1


@pytest.mark.parametrize(
    "overrides",
    [
        {"pge_neg": "same_domain"},
        {"ae_mask_mode": "feature", "ae_symmetric": True},
        {"tau_update": "log", "tau_grad_clip": 5.0},
        {"lora_rec_target": "W0", "lora_finetune_items": False, "lora_finetune_ae": False},
        {"lora_rank": 2, "lora_alpha": 4.0, "score_path": "raw"},
    ],
)
def test_switches_train_to_finite_scores(overrides):
    p = _params(
        pge_max_epochs=4, ae_max_epochs=4, lora_max_epochs=2, ae_eval_every_epochs=2, **overrides
    )
    method, summary, _ = fit_planted(UCLR, p)
    for domain in ("books", "movies", "electronics"):
        assert torch.isfinite(_scores(method, domain)).all()
    assert summary.epochs > 0


def test_curves_carry_losses_validation_and_temperature_shares():
    from methods.base import FitContext

    data, validator = planted_training_data()
    logs = []
    method = UCLR(_params(lora_max_epochs=2, ae_max_epochs=4), data.n_users, data.n_items)
    method.fit(data, FitContext(0, torch.device("cpu"), validator, log=logs.append))
    names = {(e.stage, k) for e in logs for k in e.values}
    for stage in ("cdcae", "lora"):
        for value in ("loss_con", "loss_rec", "valid_ndcg", "tau_mean", "tau_share_at_bound"):
            assert (stage, value) in names
        assert (stage, "tau_mean_q1") in names and (stage, "tau_mean_q5") in names
    assert ("pge", "valid_ndcg") in names and ("lora", "loss_bpr") in names
    assert {e.domain for e in logs if e.stage == "lora"} == {"books", "movies", "electronics"}


def test_lightgcn_backbone_through_the_seam():
    pytest.importorskip("methods.lightgcn", reason="methods/lightgcn.py not written yet")
    method, summary, _ = fit_planted(
        PGE, _params(backbone="lightgcn", pge_max_epochs=5, learning_rate=0.01)
    )
    assert torch.isfinite(_scores(method)).all()
    assert summary.notes["pge"]["epochs"] >= 1


# -- the runner stores the temperatures ---------------------------------------------------------

SPEC = """
[experiment]
name = "uclr_tiny"
seeds = [0]

[datasets.syn]
loader = "synthetic"
preset = "quickstart"
n_users = 120
n_items = [200, 120, 150]
n_interactions = [1000, 700, 600]

[protocol]
negatives = 49
ks = [10]

[methods.uclr]
kind = "uclr"
[methods.uclr.params]
embedding_size = 16
batch_size = 64
learning_rate = 0.01
patience = 2
pge_max_epochs = 3
ae_max_epochs = 3
ae_max_steps = 1
ae_eval_every_epochs = 1
ae_eval_every_steps = 1
lora_max_epochs = 2
"""


def test_runner_stores_one_temperature_per_user_stage_and_domain(tmp_path: Path):
    from harness.runner.runner import run_spec
    from harness.spec.load import load_spec

    spec = tmp_path / "uclr.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    summary = run_spec(load_spec(spec), out, device="cpu")
    assert (summary.done, summary.failed) == (1, 0)
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    try:
        count = con.execute("SELECT count(*) FROM temperatures").fetchone()[0]
        by_stage = con.execute(
            "SELECT stage, domain, count(*), min(temperature), max(temperature) "
            "FROM temperatures GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        curves = con.execute(
            "SELECT count(*) FROM training_curves WHERE name = 'tau_share_at_bound'"
        ).fetchone()[0]
    finally:
        con.close()
    assert count == 120 * (1 + 3)
    assert [(s, d, n) for s, d, n, _, _ in by_stage] == [
        ("cdcae", None, 120),
        ("lora", "books", 120),
        ("lora", "electronics", 120),
        ("lora", "movies", 120),
    ]
    assert all(1e-5 <= lo <= hi <= 1.0 for *_, lo, hi in by_stage)
    assert curves > 0
