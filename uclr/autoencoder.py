"""The shared-weight collaborative autoencoder of stage B and its masking (methods.md §2.3.1-4).

Encoder ``m -> 128 -> 32`` and decoder ``32 -> 128 -> m`` with ReLU between the two layers of
each, no activation on the latent or the output (embeddings are real-valued), no BatchNorm (it
would couple rows and mix zeroed rows into the statistics) and no dropout. Both streams use the
same module. Masking is a training-time operation only: :meth:`CollaborativeAutoencoder.forward`
never masks, which is what scoring uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "CollaborativeAutoencoder",
    "DualStream",
    "cosine_similarity_matrix",
    "dual_stream",
    "mask_embeddings",
    "reconstruction_loss",
    "row_keep_mask",
    "row_masked_dual_stream",
]


class CollaborativeAutoencoder(nn.Module):
    def __init__(self, dim: int, hidden: int = 128, latent: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def reset_parameters(self, gen: torch.Generator) -> CollaborativeAutoencoder:
        """PyTorch's default Linear initialisation, drawn from ``gen`` so a seed fixes it."""
        with torch.no_grad():
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    weight = torch.empty(layer.weight.shape)
                    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
                    bound = 1.0 / math.sqrt(layer.in_features)
                    bias = torch.empty(layer.bias.shape).uniform_(-bound, bound, generator=gen)
                    layer.weight.copy_(weight)
                    layer.bias.copy_(bias)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """g(f(x)): the unmasked reconstruction, i.e. the user vector used for scoring."""
        return self.decoder(self.encoder(x))


def mask_embeddings(
    x: torch.Tensor, ratio: float, mode: Literal["row", "feature"], gen: torch.Generator
) -> torch.Tensor:
    """X' for the generative stream: ``round(ratio·B)`` rows replaced by zero vectors ('row'),
    or every coordinate zeroed with probability ``ratio`` ('feature'). Differentiable in x."""
    if mode == "row":
        keep = row_keep_mask(x.shape[0], ratio, gen)
        return x * keep.to(device=x.device, dtype=x.dtype).unsqueeze(1)
    keep = (torch.rand(x.shape, generator=gen) >= ratio).to(device=x.device, dtype=x.dtype)
    return x * keep


def row_keep_mask(rows: int, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Which rows the 'row' mask keeps (bool, on the CPU): ``round(ratio·rows)`` rows dropped,
    drawn exactly as :func:`mask_embeddings` draws them, so both consume ``gen`` alike."""
    keep = torch.ones(rows, dtype=torch.bool)
    keep[torch.randperm(rows, generator=gen)[: round(ratio * rows)]] = False
    return keep


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """S[i, k] = cos(a_i, b_k) (rows normalised with a small eps)."""
    return F.normalize(a, dim=1, eps=eps) @ F.normalize(b, dim=1, eps=eps).T


def reconstruction_loss(
    reconstructed: torch.Tensor, generated: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Eq. 4 averaged over the batch: ‖X̂_i − X_i‖² + ‖X̂'_i − X_i‖², squared norms summed over
    the m coordinates (not averaged over them, unlike CAT-ART's MSE)."""
    return ((reconstructed - target).square().sum(1) + (generated - target).square().sum(1)).mean()


@dataclass(frozen=True)
class DualStream:
    """The four tensors of one dual-stream forward pass."""

    z: torch.Tensor  # latent of the reconstructive stream
    z_masked: torch.Tensor  # latent of the generative (masked) stream
    x_hat: torch.Tensor
    x_hat_masked: torch.Tensor


def dual_stream(
    ae: CollaborativeAutoencoder, x: torch.Tensor, x_masked: torch.Tensor
) -> DualStream:
    """Encode and decode both streams with the shared weights (one pass over 2B rows)."""
    z_all = ae.encoder(torch.cat([x, x_masked]))
    x_hat_all = ae.decoder(z_all)
    z, z_masked = z_all.chunk(2)
    x_hat, x_hat_masked = x_hat_all.chunk(2)
    return DualStream(z, z_masked, x_hat, x_hat_masked)


def row_masked_dual_stream(
    ae: CollaborativeAutoencoder, x: torch.Tensor, keep: torch.Tensor
) -> DualStream:
    """:func:`dual_stream` for a 'row' mask, in one pass over B + 1 rows instead of 2B.

    A kept row of X' equals its row of X and a dropped one is the zero vector, so the masked
    stream's latents and reconstructions are the unmasked stream's rows where ``keep`` holds
    and those of one zero row elsewhere. Values and gradients equal the two-stream pass (up to
    float summation order): a kept row's gradient reaches x through the shared row, a dropped
    row's reaches the weights through the zero row, and none reaches its x, as with x·0."""
    zero = x.new_zeros(1, x.shape[1])
    z_all = ae.encoder(torch.cat([x, zero]))
    x_hat_all = ae.decoder(z_all)
    z, z_zero = z_all[:-1], z_all[-1:]
    x_hat, x_hat_zero = x_hat_all[:-1], x_hat_all[-1:]
    kept = keep.to(device=x.device).unsqueeze(1)
    return DualStream(z, torch.where(kept, z, z_zero), x_hat, torch.where(kept, x_hat, x_hat_zero))
