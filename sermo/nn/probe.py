"""The linear probe (SUPERB / EmoBox style): frozen features pooled per layer into mean and
standard deviation over time, then linear maps to the classes and to A/V/D.

The weights are fitted in closed form or by a convex solver outside the network (see
``sermo.systems.linear_probe.fit_linear``) and copied in, so a probe is an ordinary module: it
predicts, saves and loads as a bundle like every other row.
"""

from __future__ import annotations

import torch
from torch import nn

from sermo.nn.layers import Standardize
from sermo.nn.losses import ccc_loss, masked_cross_entropy, total
from sermo.nn.pooling import masked_mean_std


class LinearProbe(nn.Module):
    """``(B, L, T, D)`` features -> ``(B, 2 L D)`` per-layer mean and std -> linear heads."""

    def __init__(self, num_layers: int, dim: int, num_classes: int, *, dims: bool = True, category: bool = True):
        super().__init__()
        self.norm = Standardize(num_layers, dim)
        width = 2 * num_layers * dim
        self.width = width
        self.cls_head = nn.Linear(width, num_classes) if category else None
        self.dims_head = nn.Linear(width, 3) if dims else None

    def pooled(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-layer masked mean and standard deviation over time, ``(B, 2 L D)``."""
        b, num_layers, t, d = x.shape
        h = self.norm(x, mask).float().permute(0, 2, 1, 3).reshape(b, t, num_layers * d)
        return masked_mean_std(h, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        f = self.pooled(x, mask)
        return (self.dims_head(f) if self.dims_head is not None else None,
                self.cls_head(f) if self.cls_head is not None else None)

    @torch.no_grad()
    def install(self, head: str, weight, bias, *, rows=None) -> None:
        """Copy fitted weights ``(k, width)`` and biases ``(k,)`` into ``head`` (``cls`` or
        ``dims``; ``rows``: the output rows they fill, all by default)."""
        layer = self.cls_head if head == "cls" else self.dims_head
        if layer is None:
            raise ValueError(f"the probe has no {head} head")
        index = slice(None) if rows is None else list(rows)
        layer.weight[index] = torch.as_tensor(weight, dtype=layer.weight.dtype)
        layer.bias[index] = torch.as_tensor(bias, dtype=layer.bias.dtype)

    def losses_of(self, dims, logits, batch) -> dict[str, torch.Tensor]:
        """CCC and cross-entropy, as the neural rows' (a probe is fitted, not trained by
        gradient; these let it train a step like any row)."""
        parts: dict[str, torch.Tensor] = {}
        if dims is not None:
            parts["ccc"] = ccc_loss(dims, batch.dims)
        if logits is not None:
            parts["ce"] = masked_cross_entropy(logits, batch.category)
        return {"loss": total(parts), **parts}
