"""Mask-aware pooling over time: padding never enters a mean, a max or an attention softmax."""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``x (B, T, D)`` counting only ``mask (B, T)`` frames -> ``(B, D)``."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over dim 1 of ``x (B, T, D)`` among ``mask`` frames -> ``(B, D)`` (0 for empty rows)."""
    filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    out = filled.max(dim=1).values
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


class MeanMaxPool(nn.Module):
    """Masked mean and max over time, concatenated ``(B, T, D) -> (B, 2D)`` or added
    (``mode="sum"``: ``(B, D)``, paper 001's pooled ``P_A`` of width ``d_A``)."""

    def __init__(self, mode: str = "concat"):
        super().__init__()
        if mode not in ("concat", "sum"):
            raise ValueError(f"unknown mean+max pooling {mode!r}; known: concat, sum")
        self.mode = mode

    def out_dim(self, dim: int) -> int:
        return 2 * dim if self.mode == "concat" else dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "sum":
            return masked_mean(x, mask) + masked_max(x, mask)
        return torch.cat([masked_mean(x, mask), masked_max(x, mask)], dim=-1)


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Masked mean and standard deviation over dim 1 of ``x (B, T, D)``, concatenated ``(B, 2D)``
    (``eps`` under the square root keeps its gradient finite where a feature is constant)."""
    mean = masked_mean(x, mask)
    var = (masked_mean(x * x, mask) - mean * mean).clamp(min=0.0)
    return torch.cat([mean, (var + eps).sqrt()], dim=-1)


class MeanStdPool(nn.Module):
    """Statistics pooling: masked mean and standard deviation over time, ``(B, T, D) -> (B, 2D)``
    (the x-vector's pooling, and the linear probe's summary of an utterance)."""

    def out_dim(self, dim: int) -> int:
        return 2 * dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean_std(x, mask, eps=1e-6)


class PooledNorm(nn.BatchNorm1d):
    """Batch normalisation of pooled statistics ``(B, W)``: standardised over the batch in training
    (running statistics at prediction). A training batch of one utterance (the last of an epoch)
    has no spread to standardise by: it uses the running statistics, as prediction does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            training=False, eps=self.eps)
        return super().forward(x)


class SelfAttentivePool(nn.Module):
    """Self-attentive pooling: softmax of a learned score per frame, masked, then a weighted sum.

    ``(B, T, D) -> (B, D)``; ``attention`` holds the last weights ``(B, T)`` for inspection.
    """

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        w = torch.softmax(s, dim=1)
        w = torch.nan_to_num(w, nan=0.0)  # rows without frames
        self.attention = w.detach()
        return torch.einsum("bt,btd->bd", w, x)


def last_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The output at each sequence's last real frame: ``(B, T, D) -> (B, D)``."""
    idx = (mask.long().sum(1) - 1).clamp(min=0)
    return x[torch.arange(x.shape[0], device=x.device), idx]
