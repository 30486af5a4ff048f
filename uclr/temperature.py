"""Per-user temperatures optimised as in iSogCLR (methods.md §2.3.5-2.3.6).

UCLR's user-aware contrastive loss (Eq. 3) is iSogCLR's robust global contrastive loss
``F = mean_i [τ_i log g_i + ρ τ_i]`` with ``g_i = (1/n_i) Σ_k exp(h_ik/τ_i)`` and the margins
``h_ik = S_ik − S_ii``. Its τ-gradient is ``ρ − KL(softmax(h_i/τ_i) ‖ uniform)``, so each user's
temperature settles where its softmax over negatives sits at KL distance ρ from uniform; the
literal Eq. 3 is ρ = log n_i, whose τ-gradient (the softmax entropy) is never negative and
drives every temperature to the lower clip.

The pure functions below are the algorithm, testable in isolation; :class:`UserTemperatures`
keeps the per-user state (τ, log moving average a = log u, momentum v) on the device and
applies them to a batch. Nothing exponentiates ``h/τ`` directly: at τ = 1e-5 that overflows;
the importance weights ``exp(h/τ − a)`` are bounded by n/γ instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "TemperatureCollapse",
    "TemperatureConfig",
    "UserTemperatures",
    "chunked_contrastive_terms",
    "fixed_temperature_loss",
    "full_matrix_terms",
    "log_moving_average",
    "margins",
    "minibatch_log_estimate",
    "robust_objective",
    "share_at_bound",
    "stationary_temperature",
    "surrogate_and_tau_grad",
    "tau_step",
]


class TemperatureCollapse(RuntimeError):
    """Too many temperatures ended at a clip bound: the individualisation degenerated."""


@dataclass(frozen=True)
class TemperatureConfig:
    rho: float | Literal["logn"] = 1.0
    tau_init: float = 0.1
    tau_min: float = 1e-5
    tau_max: float = 1.0
    gamma: float = 0.9
    beta: float = 0.9
    eta: float = 1e-3
    update: Literal["additive", "log"] = "additive"
    eta_log: float = 0.1
    grad_clip: float | None = None

    @classmethod
    def from_params(cls, p) -> TemperatureConfig:
        return cls(
            rho=p.tau_rho,
            tau_init=p.tau_init,
            tau_min=p.tau_min,
            tau_max=p.tau_max,
            gamma=p.tau_gamma,
            beta=p.tau_beta,
            eta=p.tau_eta,
            update=p.tau_update,
            eta_log=p.tau_eta_log,
            grad_clip=p.tau_grad_clip,
        )

    def rho_for(self, n: int) -> float:
        """ρ for anchors with ``n`` negatives (the literal Eq. 3 is ρ = log n)."""
        return math.log(n) if self.rho == "logn" else float(self.rho)


# -- pure functions -----------------------------------------------------------------------------


def margins(similarity: torch.Tensor) -> torch.Tensor:
    """h [B, B-1]: row i holds S_ik − S_ii for every k ≠ i (anchor i, candidates k)."""
    b = similarity.shape[0]
    off = similarity.flatten()[1:].view(b - 1, b + 1)[:, :-1].reshape(b, b - 1)
    return off - similarity.diagonal().unsqueeze(1)


def minibatch_log_estimate(h: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """log of the minibatch estimate of g_i: logsumexp_k(h_ik/τ_i) − log n_i (detached)."""
    logits = h.detach() / tau.unsqueeze(1)
    return torch.logsumexp(logits, dim=1) - math.log(h.shape[1])


def log_moving_average(
    previous: torch.Tensor, estimate: torch.Tensor, visited: torch.Tensor, gamma: float
) -> torch.Tensor:
    """a ← log((1−γ)·e^a + γ·e^λ̂), or λ̂ on a user's first visit (γ = 1 on the first epoch)."""
    if gamma >= 1.0:
        return estimate.clone()
    mixed = torch.logaddexp(previous + math.log1p(-gamma), estimate + math.log(gamma))
    return torch.where(visited, mixed, estimate)


def surrogate_and_tau_grad(
    h: torch.Tensor, tau: torch.Tensor, log_u: torch.Tensor, rho: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-anchor surrogate loss [B], τ-gradient estimate [B]).

    The surrogate ``(1/n) Σ_k p̃_ik h_ik`` with detached weights ``p̃ = exp(h/τ − a)`` has the
    iSogCLR gradient ``(1/u_i)(1/n) Σ_k exp(h_ik/τ_i) ∇h_ik`` with respect to the network; the
    τ-gradient is ``a_i + ρ − (1/n) Σ_k p̃_ik h_ik/τ_i``, an estimate of ρ − KL.
    """
    logits = h.detach() / tau.unsqueeze(1)
    weights = torch.exp(logits - log_u.unsqueeze(1))
    surrogate = (weights * h).mean(dim=1)
    grad = log_u + rho - (weights * logits).mean(dim=1)
    return surrogate, grad


def tau_step(
    tau: torch.Tensor, momentum: torch.Tensor, grad: torch.Tensor, cfg: TemperatureConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Momentum on the τ-gradient, then the projected step onto [tau_min, tau_max]."""
    if cfg.grad_clip is not None:
        grad = grad.clamp(-cfg.grad_clip, cfg.grad_clip)
    momentum = (1.0 - cfg.beta) * momentum + cfg.beta * grad
    if cfg.update == "additive":
        tau = tau - cfg.eta * momentum
    else:
        tau = tau * torch.exp(-cfg.eta_log * momentum)
    return tau.clamp(cfg.tau_min, cfg.tau_max), momentum


def robust_objective(h: torch.Tensor, tau: torch.Tensor, rho: float) -> torch.Tensor:
    """The exact minibatch objective mean_i [τ_i log((1/n) Σ_k exp(h_ik/τ_i)) + ρ τ_i].

    For tests and logging only: it is differentiable in both the network and τ.
    """
    logits = h / tau.unsqueeze(1)
    log_g = torch.logsumexp(logits, dim=1) - math.log(h.shape[1])
    return (tau * log_g + rho * tau).mean()


def fixed_temperature_loss(h: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 3 with one global τ (the PGE+CL-AE row): mean_i τ·log Σ_{k≠i} exp(h_ik/τ)."""
    return (tau * torch.logsumexp(h / tau, dim=1)).mean()


def stationary_temperature(
    h: torch.Tensor, rho: float, lo: float = 1e-6, hi: float = 1e3, iters: int = 200
) -> torch.Tensor:
    """τ* per row with KL(softmax(h_i/τ*) ‖ uniform) = ρ, by bisection on log τ (vectorised).

    The reference solution the iSogCLR iteration must reach (methods.md §2.9).
    """
    n = h.shape[1]
    low = torch.full((h.shape[0],), math.log(lo), dtype=h.dtype)
    high = torch.full((h.shape[0],), math.log(hi), dtype=h.dtype)
    for _ in range(iters):
        mid = (low + high) / 2
        p = torch.softmax(h / mid.exp().unsqueeze(1), dim=1)
        kl = (p * (p.clamp_min(1e-300).log() + math.log(n))).sum(dim=1)
        # KL falls as τ grows: too large a KL means τ is too small.
        low = torch.where(kl > rho, mid, low)
        high = torch.where(kl > rho, high, mid)
    return ((low + high) / 2).exp()


def share_at_bound(tau: torch.Tensor, cfg: TemperatureConfig) -> tuple[float, float]:
    """(share at tau_min, share at tau_max), with a relative tolerance of 1e-6."""
    low = float((tau <= cfg.tau_min * (1 + 1e-6)).float().mean())
    high = float((tau >= cfg.tau_max * (1 - 1e-6)).float().mean())
    return low, high


def full_matrix_terms(
    similarity: torch.Tensor,
    tau: torch.Tensor,
    log_u: torch.Tensor,
    visited: torch.Tensor,
    cfg: TemperatureConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One direction of a training step on the [B, B] similarity matrix, in place of
    :func:`margins` + :func:`minibatch_log_estimate` + :func:`log_moving_average` +
    :func:`surrogate_and_tau_grad` (same numbers, tested against them).

    The positive stays on the diagonal (h_ii = 0) and is excluded through a −inf logit, which
    saves copying the off-diagonal block and about half the passes over B² entries; the
    τ-gradient uses (1/n) Σ p̃ l = surrogate / τ. Returns (surrogate [B], τ-gradient [B],
    new a [B], minibatch log-estimate [B]).
    """
    n = similarity.shape[0] - 1
    h = similarity - similarity.diagonal().unsqueeze(1)  # zero diagonal; autograd sees this
    logits = h.detach() / tau.unsqueeze(1)
    logits.fill_diagonal_(-math.inf)
    estimate = torch.logsumexp(logits, dim=1) - math.log(n)
    log_u = log_moving_average(log_u, estimate, visited, cfg.gamma)
    weights = logits.sub_(log_u.unsqueeze(1)).exp_()  # p̃, zero on the diagonal
    surrogate = (weights * h).sum(dim=1) / n
    grad = log_u + cfg.rho_for(n) - surrogate.detach() / tau
    return surrogate, grad, log_u, estimate


class _ChunkedSurrogate(torch.autograd.Function):
    """mean_i surrogate_i of :func:`full_matrix_terms` on S = a·bᵀ, from normalised rows a, b.

    The forward pass walks the anchors in row chunks: each [c, B] block of S is formed by one
    GEMM, turned into margins, logits, the log-estimate, the moving average and the weights p̃
    in place, and its contribution to both input gradients is taken at once (dS = p̃/(nB) off
    the diagonal, −Σ_k p̃_ik/(nB) on it, since h_ik = S_ik − S_ii). So no [B, B] tensor is ever
    materialised or kept for backward, every block stays in cache, and backward only scales the
    stored [B, m] gradients. The per-row numbers are those of :func:`full_matrix_terms`; only
    GEMM blocking (float summation order) differs.
    """

    @staticmethod
    def forward(ctx, a, b, tau, log_u, visited, gamma, chunk, out):
        rows, n = a.shape[0], a.shape[0] - 1
        grad_a, grad_b = torch.empty_like(a), torch.zeros_like(b)
        surrogate, new_log_u, estimate = out
        scale = 1.0 / (n * rows)
        inv_tau = tau.reciprocal().unsqueeze(1)
        buffer = torch.empty(min(chunk, rows), rows, dtype=a.dtype, device=a.device)
        for start in range(0, rows, chunk):
            end = min(start + chunk, rows)
            block_a, t = a[start:end], tau[start:end]
            scaled_a = block_a * inv_tau[start:end]
            # r_ik = S_ik/τ_i; the logits are l_ik = r_ik − r_ii (l_ii = 0, the positive).
            r = torch.mm(scaled_a, b.T, out=buffer[: end - start])
            diagonal = r.diagonal(offset=start)
            positive = diagonal.clone()
            diagonal.fill_(-math.inf)  # the negatives k ≠ i only
            top = r.amax(dim=1)  # max_k r_ik; the max of l is top − r_ii
            # One exp pass serves the log-estimate and the weights: p̃ = e^(l − M)·e^(M − a)
            # with M = max_k l_ik; M − a ≤ log(n/γ), so the rescaling never overflows.
            e = r.sub_(top.unsqueeze(1)).exp_()  # e^(l − M), zero on the diagonal
            total = e.sum(dim=1)
            shift = top - positive  # M
            est = total.log().add_(shift).sub_(math.log(n))
            lu = log_moving_average(log_u[start:end], est, visited[start:end], gamma)
            row_scale = (shift - lu).exp_()  # p̃_ik = e_ik·row_scale_i
            # Σ_k e_ik b_k serves the surrogate and the gradient of a:
            # Σ_k e_ik l_ik = (a_i/τ_i)·Σ_k e_ik b_k − r_ii·Σ_k e_ik.
            eb = e @ b
            dot = torch.linalg.vecdot(scaled_a, eb) - positive * total
            surrogate[start:end] = dot * row_scale * t / n
            new_log_u[start:end], estimate[start:end] = lu, est
            # dS = p̃/(nB) off the diagonal and minus its row sum on it, so
            # ∂/∂a_i = w_i·(Σ_k e_ik b_k − total_i·b_i) and ∂/∂b = eᵀ(w ⊙ a) − (w·total ⊙ a)
            # on the chunk's own rows, with w = row_scale/(nB).
            weight = (row_scale * scale).unsqueeze(1)
            own = (weight * total.unsqueeze(1)) * block_a
            torch.mul(eb - total.unsqueeze(1) * b[start:end], weight, out=grad_a[start:end])
            grad_b.addmm_(e.T, weight * block_a)
            grad_b[start:end] -= own
        ctx.save_for_backward(grad_a, grad_b)
        return surrogate.mean()

    @staticmethod
    def backward(ctx, grad_output):
        grad_a, grad_b = ctx.saved_tensors
        return grad_a * grad_output, grad_b * grad_output, None, None, None, None, None, None


def chunked_contrastive_terms(
    a: torch.Tensor,
    b: torch.Tensor,
    tau: torch.Tensor,
    log_u: torch.Tensor,
    visited: torch.Tensor,
    cfg: TemperatureConfig,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`full_matrix_terms` on S = a·bᵀ (``a``, ``b``: row-normalised [B, m]) without
    forming S: returns (mean surrogate, differentiable in a and b; τ-gradient [B]; new a [B];
    log-estimate [B]). Same quantities, computed ``chunk`` anchor rows at a time."""
    rows = a.shape[0]
    n = rows - 1
    out = tuple(torch.empty(rows, dtype=a.dtype, device=a.device) for _ in range(3))
    with torch.no_grad():
        tau_, log_u_ = tau.detach(), log_u.detach()
    loss = _ChunkedSurrogate.apply(a, b, tau_, log_u_, visited, cfg.gamma, chunk, out)
    surrogate, new_log_u, estimate = out
    grad = new_log_u + cfg.rho_for(n) - surrogate / tau_
    return loss, grad, new_log_u, estimate


# -- per-user state -----------------------------------------------------------------------------


class UserTemperatures:
    """τ, the log moving average a and the momentum v of every user, on one device.

    ``directions`` is 2 for the symmetric loss: each direction keeps its own moving average of
    g_i (its negatives differ) while τ and v are shared and stepped with the mean gradient.
    """

    def __init__(
        self, n_users: int, cfg: TemperatureConfig, device: torch.device, directions: int = 1
    ):
        self.cfg = cfg
        self.tau = torch.full((n_users,), cfg.tau_init, device=device)
        self.log_u = torch.zeros(directions, n_users, device=device)
        self.visited = torch.zeros(n_users, dtype=torch.bool, device=device)
        self.momentum = torch.zeros(n_users, device=device)

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "tau": self.tau,
            "log_u": self.log_u,
            "visited": self.visited,
            "momentum": self.momentum,
        }

    def load(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value)

    def copy(self) -> UserTemperatures:
        other = UserTemperatures.__new__(UserTemperatures)
        other.cfg = self.cfg
        for name, value in self.state().items():
            setattr(other, name, value.clone())
        return other

    def loss(
        self, similarities: list[torch.Tensor], users: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Surrogate contrastive loss of a batch; updates a, v and τ of ``users`` (unique).

        ``similarities`` holds one [B, B] matrix per direction (anchors in rows). The loss uses
        the temperatures before this step's update, as in iSogCLR.
        """
        if len(similarities) != self.log_u.shape[0]:
            raise ValueError(
                f"{len(similarities)} similarity directions for state of {self.log_u.shape[0]}"
            )
        tau = self.tau[users]
        visited = self.visited[users]
        losses, grads, eq3 = [], [], []
        for direction, sim in enumerate(similarities):
            surrogate, grad, log_u, estimate = full_matrix_terms(
                sim, tau, self.log_u[direction, users], visited, self.cfg
            )
            self.log_u[direction, users] = log_u
            losses.append(surrogate.mean())
            grads.append(grad)
            eq3.append((tau * (estimate + math.log(sim.shape[0] - 1))).mean())
        grad = torch.stack(grads).mean(dim=0)
        new_tau, new_momentum = tau_step(tau, self.momentum[users], grad, self.cfg)
        self.tau[users] = new_tau
        self.momentum[users] = new_momentum
        self.visited[users] = True
        stats = {"loss_eq3": torch.stack(eq3).mean(), "tau_grad": grad.mean()}
        return torch.stack(losses).mean(), stats

    def chunked_loss(
        self, pairs: list[tuple[torch.Tensor, torch.Tensor]], users: torch.Tensor, chunk: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`loss` with each direction given as row-normalised (anchors, candidates)
        instead of a [B, B] similarity matrix (S = anchors·candidatesᵀ), through
        :func:`chunked_contrastive_terms`: the same state updates and statistics."""
        if len(pairs) != self.log_u.shape[0]:
            raise ValueError(
                f"{len(pairs)} similarity directions for state of {self.log_u.shape[0]}"
            )
        tau = self.tau[users]
        visited = self.visited[users]
        losses, grads, eq3 = [], [], []
        for direction, (anchors, candidates) in enumerate(pairs):
            loss, grad, log_u, estimate = chunked_contrastive_terms(
                anchors, candidates, tau, self.log_u[direction, users], visited, self.cfg, chunk
            )
            self.log_u[direction, users] = log_u
            losses.append(loss)
            grads.append(grad)
            eq3.append((tau * (estimate + math.log(anchors.shape[0] - 1))).mean())
        grad = torch.stack(grads).mean(dim=0)
        new_tau, new_momentum = tau_step(tau, self.momentum[users], grad, self.cfg)
        self.tau[users] = new_tau
        self.momentum[users] = new_momentum
        self.visited[users] = True
        stats = {"loss_eq3": torch.stack(eq3).mean(), "tau_grad": grad.mean()}
        return torch.stack(losses).mean(), stats

    def summary(self, groups: torch.Tensor | None = None) -> dict[str, float]:
        """τ mean, shares at the bounds and, given activity groups, the mean τ per group."""
        low, high = share_at_bound(self.tau, self.cfg)
        out = {
            "tau_mean": float(self.tau.mean()),
            "tau_share_at_min": low,
            "tau_share_at_max": high,
            "tau_share_at_bound": low + high,
        }
        if groups is not None:
            sums = torch.zeros(int(groups.max()) + 1, device=self.tau.device)
            sums.index_add_(0, groups, self.tau)
            counts = torch.bincount(groups, minlength=len(sums)).clamp_min(1)
            for g, value in enumerate((sums / counts).tolist()):
                out[f"tau_mean_q{g + 1}"] = value
        return out

    def check_collapse(self, share: float, where: str, allowed: bool) -> None:
        """Raise :class:`TemperatureCollapse` when more than ``share`` of τ sit at a bound."""
        low, high = share_at_bound(self.tau, self.cfg)
        if low + high <= share or allowed:
            return
        cause = (
            "tau_rho='logn' is the literal Eq. 3, whose τ-gradient is never negative: this "
            "collapse is expected; set tau_rho to a number (grid 0.3/1/2/3/6) or "
            "allow_collapse=true to keep the run"
            if self.cfg.rho == "logn"
            else "try tau_update='log', a smaller tau_eta, a different tau_rho, or "
            "allow_collapse=true to keep the run"
        )
        raise TemperatureCollapse(
            f"{where}: {100 * (low + high):.1f}% of {len(self.tau)} user temperatures sit at a "
            f"bound ({100 * low:.1f}% at tau_min={self.cfg.tau_min:g}, {100 * high:.1f}% at "
            f"tau_max={self.cfg.tau_max:g}; limit collapse_share={share:g}); {cause}"
        )
