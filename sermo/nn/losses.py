"""Losses with masking of missing labels, so one batch can mix corpora and label types."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def total(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of a model's named loss terms (a zero tensor when there are none)."""
    values = list(parts.values())
    return sum(values[1:], values[0]) if values else torch.zeros(())


def ccc_per_dim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Concordance correlation per column of ``(B, K)`` tensors, skipping NaN targets -> ``(K,)``.

    Columns with fewer than two labels give NaN (callers leave them out).
    """
    out = []
    for k in range(pred.shape[1]):
        ok = torch.isfinite(target[:, k])
        if ok.sum() < 2:
            out.append(torch.tensor(float("nan"), device=pred.device))
            continue
        p, t = pred[ok, k], target[ok, k]
        pm, tm = p.mean(), t.mean()
        cov = ((p - pm) * (t - tm)).mean()
        out.append(2 * cov / (p.var(unbiased=False) + t.var(unbiased=False) + (pm - tm) ** 2 + 1e-8))
    return torch.stack(out)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None, *,
             reduction: str = "mean") -> torch.Tensor:
    """``sum_j alpha_j (1 - CCC_j)`` over the dimensions that have labels in the batch; 0 when
    none has. ``reduction="mean"``: the weights (equal by default) normalised to sum to one over
    the present dimensions; ``"sum"``: as given (equal weights of 1: the plain sum)."""
    c = ccc_per_dim(pred, target)
    present = torch.isfinite(c)
    if not present.any():
        return pred.sum() * 0.0
    w = torch.ones_like(c) if weights is None else weights.to(c)
    w = w * present
    total = ((1 - torch.nan_to_num(c)) * w).sum()
    return total / w.sum() if reduction == "mean" else total


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """Cross-entropy over items whose class is known (``target >= 0``); 0 when none is.
    ``weight``: ``(C,)`` per-class weights (the weighted mean over the batch's items)."""
    ok = target >= 0
    if not ok.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[ok], target[ok], weight=None if weight is None else weight.to(logits.dtype))


def masked_mse(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real frames ``mask (B, T)`` of ``(B, T, C)``."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (((x - y) ** 2) * m).sum() / (m.sum() * x.shape[-1]).clamp(min=1.0)
