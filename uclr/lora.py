"""Low-rank adaptation of the frozen global user table (methods.md §2.4, paper §3.5).

``W = W0 + s·B A`` with ``W0`` = the stage-A user table (frozen), a per-user factor
``B ∈ R^{|U|×r}`` initialised to zero and a shared factor ``A ∈ R^{r×m}`` drawn from N(0, σ²):
loralib's ``Embedding`` convention (there ``lora_A`` [r × num_embeddings] is zero and
``lora_B`` [dim × r] is Gaussian; transposed, those are this B and A). So ΔW = 0 at the start
and the first fine-tuning step sees exactly the stage-B model. ``s = alpha / r``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LoRAUserTable"]


class LoRAUserTable(nn.Module):
    def __init__(
        self,
        base: torch.Tensor,
        rank: int,
        gen: torch.Generator,
        alpha: float | None = None,
        init_std: float = 1.0,
    ):
        super().__init__()
        n_users, dim = base.shape
        self.register_buffer("base", base)  # W0: frozen, never written
        self.lora_B = nn.Parameter(torch.zeros(n_users, rank, device=base.device))
        shared = torch.randn(rank, dim, generator=gen) * init_std
        self.lora_A = nn.Parameter(shared.to(base.device))
        self.scaling = (rank if alpha is None else alpha) / rank

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """Rows W[users] = W0[users] + s·B[users] A (differentiable in A and B)."""
        return self.base[users] + self.scaling * (self.lora_B[users] @ self.lora_A)

    def merged(self) -> torch.Tensor:
        """The whole adapted table W [|U|, m]."""
        return self.base + self.scaling * (self.lora_B @ self.lora_A)
