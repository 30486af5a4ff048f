"""UCLR's per-user temperatures (methods.md §2.3.5-2.3.6 and the sanity checks of §2.9):
the iSogCLR iteration reaches the bisection solution, stays finite at τ = 1e-5, its surrogate has
the exact objective's gradient, and the literal Eq. 3 (ρ = log n) drives τ to the floor."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from uclr.autoencoder import (
    CollaborativeAutoencoder,
    cosine_similarity_matrix,
    dual_stream,
    mask_embeddings,
)
from uclr.temperature import (
    TemperatureCollapse,
    TemperatureConfig,
    UserTemperatures,
    chunked_contrastive_terms,
    fixed_temperature_loss,
    full_matrix_terms,
    log_moving_average,
    margins,
    minibatch_log_estimate,
    robust_objective,
    stationary_temperature,
    surrogate_and_tau_grad,
    tau_step,
)


def _margins(batch: int = 256, dim: int = 16, noise: float = 0.8, seed: int = 0) -> torch.Tensor:
    """Margins of a realistic similarity matrix: positives are noisy copies of the anchors."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    z2 = z + noise * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    return margins(F.normalize(z, dim=1) @ F.normalize(z2, dim=1).T)


def _iterate(h: torch.Tensor, cfg: TemperatureConfig, steps: int) -> tuple[torch.Tensor, list]:
    """Run the per-user state update of §2.3.6 on fixed margins; returns (τ, τ-gradients)."""
    n_anchor = h.shape[0]
    tau = torch.full((n_anchor,), cfg.tau_init, dtype=h.dtype)
    log_u = torch.zeros(n_anchor, dtype=h.dtype)
    momentum = torch.zeros(n_anchor, dtype=h.dtype)
    visited = torch.zeros(n_anchor, dtype=torch.bool)
    grads = []
    rho = cfg.rho_for(h.shape[1])
    for _ in range(steps):
        log_u = log_moving_average(log_u, minibatch_log_estimate(h, tau), visited, cfg.gamma)
        visited[:] = True
        _, grad = surrogate_and_tau_grad(h, tau, log_u, rho)
        grads.append(grad)
        tau, momentum = tau_step(tau, momentum, grad, cfg)
    return tau, grads


def test_margins_drop_the_positive_and_subtract_it():
    sim = torch.arange(16.0).view(4, 4)
    h = margins(sim)
    assert h.shape == (4, 3)
    assert torch.equal(h[0], torch.tensor([1.0, 2.0, 3.0]))  # S_0k − S_00 for k = 1, 2, 3
    assert torch.equal(h[2], torch.tensor([8.0, 9.0, 11.0]) - 10.0)


@pytest.mark.parametrize(
    ("rho", "update", "steps"),
    [
        (0.3, "additive", 3000),  # far from τ_init with little curvature: the slowest case
        (1.0, "additive", 1500),
        (2.0, "additive", 1000),
        (3.0, "additive", 1000),  # where η_τ = 0.01 oscillates (methods.md §2.3.6)
        (1.0, "log", 500),
        (3.0, "log", 500),
    ],
)
def test_temperature_iteration_converges_to_the_bisection_solution(rho, update, steps):
    h = _margins()
    cfg = TemperatureConfig(rho=rho, update=update)
    target = stationary_temperature(h, rho)
    assert cfg.tau_min < target.min() and target.max() < cfg.tau_max  # an interior solution
    assert target.max() / target.min() > 1.2  # genuinely individual temperatures
    tau, _ = _iterate(h, cfg, steps=steps)
    assert torch.allclose(tau, target, rtol=1e-2), (tau - target).abs().max()


def test_bisection_solution_has_the_requested_kl():
    h = _margins()
    tau = stationary_temperature(h, 1.0)
    p = torch.softmax(h / tau.unsqueeze(1), dim=1)
    kl = (p * (p.log() + math.log(h.shape[1]))).sum(1)
    assert torch.allclose(kl, torch.ones_like(kl), atol=1e-8)


def test_literal_eq3_drives_every_temperature_to_the_floor():
    # Row masking makes every masked negative of an anchor identical (f(0)): ties at the top.
    # γ = 1: the exact τ-gradient (the moving average only adds lag).
    h = _margins(batch=64)
    h[:, :20] = h.max(dim=1, keepdim=True).values + 0.05
    cfg = TemperatureConfig(rho="logn", gamma=1.0)
    tau, grads = _iterate(h, cfg, steps=400)
    assert torch.all(tau == cfg.tau_min)
    # Its τ-gradient is the softmax entropy: never negative, so τ can only fall.
    assert min(float(g.min()) for g in grads) >= -1e-9
    # The robust loss with a moderate ρ keeps them apart and inside the bounds.
    tau_rho, _ = _iterate(h, TemperatureConfig(rho=1.0, gamma=1.0), steps=400)
    assert (tau_rho > 10 * cfg.tau_min).all()


def test_literal_eq3_gradient_is_nonnegative_without_ties_too():
    h = _margins(batch=64)
    tau, grads = _iterate(h, TemperatureConfig(rho="logn", gamma=1.0), steps=300)
    assert min(float(g.min()) for g in grads) >= -1e-9
    assert (tau < 0.1).all()


def test_surrogate_gradient_equals_the_exact_objective_gradient():
    """float64, γ = 1 (no moving average): the iSogCLR estimator is the exact gradient."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(40, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(40, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    tau = 0.05 + 0.5 * torch.rand(40, generator=gen, dtype=torch.float64)
    rho = 1.3

    h = margins(cosine_similarity_matrix(z, z2))
    log_u = log_moving_average(
        torch.zeros(40, dtype=torch.float64),
        minibatch_log_estimate(h, tau),
        torch.ones(40, dtype=torch.bool),
        gamma=1.0,
    )
    surrogate, tau_grad = surrogate_and_tau_grad(h, tau, log_u, rho)
    got = torch.autograd.grad(surrogate.mean(), [z, z2])

    tau_var = tau.clone().requires_grad_(True)
    exact = robust_objective(margins(cosine_similarity_matrix(z, z2)), tau_var, rho)
    want = torch.autograd.grad(exact, [z, z2, tau_var])
    for a, b in zip(got, want[:2], strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    # The τ-gradient estimate is ∂F/∂τ_i without the 1/|B| of the mean.
    assert torch.allclose(tau_grad, 40 * want[2], rtol=1e-10, atol=1e-12)


def test_stateful_loss_has_the_exact_gradient_and_updates_only_its_users():
    torch.set_default_dtype(torch.float64)
    try:
        gen = torch.Generator().manual_seed(4)
        cfg = TemperatureConfig(rho=0.7, gamma=1.0)
        temps = UserTemperatures(100, cfg, torch.device("cpu"))
        temps.tau.uniform_(0.05, 0.5, generator=gen)
        users = torch.randperm(100, generator=gen)[:30]
        before = temps.tau.clone()
        z = torch.randn(30, 8, generator=gen, requires_grad=True)
        z2 = torch.randn(30, 8, generator=gen)
        loss, _ = temps.loss([cosine_similarity_matrix(z, z2)], users)
        (got,) = torch.autograd.grad(loss, [z])
        exact = robust_objective(margins(cosine_similarity_matrix(z, z2)), before[users], 0.7)
        (want,) = torch.autograd.grad(exact, [z])
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
        others = torch.ones(100, dtype=torch.bool)
        others[users] = False
        assert torch.equal(temps.tau[others], before[others])
        assert not torch.equal(temps.tau[users], before[users])
        assert temps.visited[users].all() and not temps.visited[others].any()
    finally:
        torch.set_default_dtype(torch.float32)


def test_loss_and_gradients_are_finite_at_the_temperature_floor():
    gen = torch.Generator().manual_seed(5)
    ae = CollaborativeAutoencoder(32, 16, 8).reset_parameters(gen)
    x = torch.randn(64, 32, generator=gen)
    cfg = TemperatureConfig(rho=1.0)
    temps = UserTemperatures(64, cfg, torch.device("cpu"), directions=2)
    temps.tau.fill_(cfg.tau_min)
    users = torch.arange(64)
    for step in range(3):  # first visit, then the moving average
        streams = dual_stream(ae, x, mask_embeddings(x, 0.3, "row", gen))
        sim = cosine_similarity_matrix(streams.z, streams.z_masked)
        loss, stats = temps.loss([sim, sim.T], users)
        ae.zero_grad()
        loss.backward()
        assert torch.isfinite(loss), step
        assert all(torch.isfinite(v) for v in stats.values()), stats
        assert all(torch.isfinite(p.grad).all() for p in ae.encoder.parameters()), step
        assert torch.isfinite(temps.tau).all() and torch.isfinite(temps.log_u).all()
        temps.tau.fill_(cfg.tau_min)
    # the naive form overflows here, which is why the weights are exp(h/τ − a)
    h = margins(sim.detach())
    assert not torch.isfinite(torch.exp(h / cfg.tau_min)).all()


def test_moving_average_is_in_log_space_and_gamma_one_means_none():
    previous = torch.tensor([0.0, 2.0])
    estimate = torch.tensor([1.0, -1.0])
    visited = torch.tensor([True, False])
    mixed = log_moving_average(previous, estimate, visited, gamma=0.9)
    assert mixed[0] == pytest.approx(math.log(0.1 * math.exp(0.0) + 0.9 * math.exp(1.0)))
    assert mixed[1] == pytest.approx(-1.0)  # first visit: γ = 1
    assert torch.equal(log_moving_average(previous, estimate, visited, gamma=1.0), estimate)


def test_tau_step_projects_and_clips_the_gradient():
    cfg = TemperatureConfig(eta=0.1, beta=1.0, grad_clip=5.0)
    tau, momentum = tau_step(
        torch.tensor([0.5, 0.5, 0.5]), torch.zeros(3), torch.tensor([100.0, -100.0, 1.0]), cfg
    )
    assert torch.allclose(tau, torch.tensor([1e-5, 1.0, 0.4]))  # 0.5 − 0.1·5 clipped up to 1e-5
    assert torch.allclose(momentum, torch.tensor([5.0, -5.0, 1.0]))


def test_fixed_temperature_loss_is_eq3_with_one_tau():
    h = _margins(batch=16)
    direct = -0.2 * torch.log(
        1.0 / torch.exp(h / 0.2).sum(1)
    )  # −τ log( e^{S_ii/τ} / Σ_{k≠i} e^{S_ik/τ} )
    assert torch.allclose(fixed_temperature_loss(h, 0.2), direct.mean())


def test_collapse_is_reported_with_the_parameter_to_change():
    cfg = TemperatureConfig(rho="logn")
    temps = UserTemperatures(10, cfg, torch.device("cpu"))
    temps.tau[:] = cfg.tau_min
    temps.tau[0] = 0.2
    with pytest.raises(TemperatureCollapse, match=r"90\.0% of 10 user temperatures.*tau_rho"):
        temps.check_collapse(0.85, "stage B", allowed=False)
    temps.check_collapse(0.85, "stage B", allowed=True)
    temps.check_collapse(0.95, "stage B", allowed=False)  # 90% ≤ 95%: fine


def test_full_matrix_step_equals_the_reference_functions():
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(50, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(50, 8, generator=gen, dtype=torch.float64)
    tau = 0.02 + 0.5 * torch.rand(50, generator=gen, dtype=torch.float64)
    previous = torch.randn(50, generator=gen, dtype=torch.float64)
    visited = torch.rand(50, generator=gen) < 0.5
    cfg = TemperatureConfig(rho=0.8, gamma=0.9)
    sim = cosine_similarity_matrix(z, z2)
    for matrix in (sim, sim.T):
        fast, fast_grad, fast_u, fast_est = full_matrix_terms(matrix, tau, previous, visited, cfg)
        h = margins(matrix)
        est = minibatch_log_estimate(h, tau)
        log_u = log_moving_average(previous, est, visited, cfg.gamma)
        slow, slow_grad = surrogate_and_tau_grad(h, tau, log_u, 0.8)
        for a, b in ((fast, slow), (fast_grad, slow_grad), (fast_u, log_u), (fast_est, est)):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
        (g_fast,) = torch.autograd.grad(fast.sum(), [z], retain_graph=True)
        (g_slow,) = torch.autograd.grad(slow.sum(), [z], retain_graph=True)
        assert torch.allclose(g_fast, g_slow, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 50, 64])
def test_chunked_contrastive_terms_equal_the_full_matrix_step(chunk):
    """Stage C's blocked contrastive term: same loss, input gradients, τ-gradient, moving
    average and estimate as the full [B, B] path, for chunks that do and do not divide B."""
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(50, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(50, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    tau = 0.02 + 0.5 * torch.rand(50, generator=gen, dtype=torch.float64)
    previous = torch.randn(50, generator=gen, dtype=torch.float64)
    visited = torch.rand(50, generator=gen) < 0.5
    cfg = TemperatureConfig(rho=0.8, gamma=0.9)
    for x, y in ((z, z2), (z2, z)):  # both directions of the symmetric loss
        a, b = F.normalize(z, dim=1, eps=1e-8), F.normalize(z2, dim=1, eps=1e-8)
        full, full_grad, full_u, full_est = full_matrix_terms(
            cosine_similarity_matrix(x, y), tau, previous, visited, cfg
        )
        anchors, candidates = (a, b) if x is z else (b, a)
        loss, grad, log_u, est = chunked_contrastive_terms(
            anchors, candidates, tau, previous, visited, cfg, chunk
        )
        for got, want in ((loss, full.mean()), (grad, full_grad), (log_u, full_u), (est, full_est)):
            assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
        want_grads = torch.autograd.grad(full.mean(), [z, z2])
        got_grads = torch.autograd.grad(loss * 3.0, [z, z2])  # upstream gradient is applied
        for got, want in zip(got_grads, want_grads, strict=True):
            assert torch.allclose(got, 3.0 * want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("directions", [1, 2])
def test_chunked_loss_updates_the_state_like_the_full_matrix_loss(directions):
    gen = torch.Generator().manual_seed(8)
    cfg = TemperatureConfig(rho=1.0, gamma=0.9, eta=0.05)
    full = UserTemperatures(30, cfg, torch.device("cpu"), directions=directions)
    full.tau = full.tau.double()
    full.log_u, full.momentum = full.log_u.double(), full.momentum.double()
    chunked = full.copy()
    for _step in range(3):
        users = torch.randperm(30, generator=gen)[:20]
        z = torch.randn(20, 6, generator=gen, dtype=torch.float64)
        z2 = torch.randn(20, 6, generator=gen, dtype=torch.float64)
        sim = cosine_similarity_matrix(z, z2)
        loss_full, stats_full = full.loss([sim, sim.T][:directions], users)
        a, b = F.normalize(z, dim=1, eps=1e-8), F.normalize(z2, dim=1, eps=1e-8)
        loss_chunked, stats_chunked = chunked.chunked_loss([(a, b), (b, a)][:directions], users, 6)
        assert torch.allclose(loss_full, loss_chunked, rtol=1e-12)
        for name, value in stats_full.items():
            assert torch.allclose(value, stats_chunked[name], rtol=1e-12)
        for name, value in full.state().items():
            assert torch.allclose(value.double(), chunked.state()[name].double(), rtol=1e-12)
