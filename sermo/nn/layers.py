"""Layers shared by systems: the learned weighted sum over encoder layers, sequence encoders."""

from __future__ import annotations

import torch
from torch import nn

from sermo.nn.pooling import last_valid


class LayerWeighting(nn.Module):
    """Learned weighted sum of encoder layers: ``(B, L, T, D) -> (B, T, D)``.

    ``mode="softmax"``: weights are a softmax of free parameters (s3prl's featurizer, paper
    001's layer importance). ``mode="normalized"``: non-negative weights divided by their sum
    (paper 004, Eq. 1). Both start uniform. With one layer it is the identity.
    """

    def __init__(self, num_layers: int, mode: str = "softmax"):
        super().__init__()
        if mode not in ("softmax", "normalized"):
            raise ValueError(f"unknown layer weighting {mode!r}; known: softmax, normalized")
        self.mode = mode
        self.raw = nn.Parameter(torch.zeros(num_layers) if mode == "softmax" else torch.ones(num_layers))

    def weights(self) -> torch.Tensor:
        """The normalised layer weights ``(L,)``, summing to one."""
        if self.mode == "softmax":
            return torch.softmax(self.raw, dim=0)
        w = self.raw.abs()
        return w / w.sum().clamp(min=1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            return x[:, 0]
        return torch.einsum("l,bltd->btd", self.weights(), x)

    def standardized(self, x: torch.Tensor, norm: "Standardize", mask: torch.Tensor) -> torch.Tensor:
        """``self(norm(x, mask))`` in one pass over ``x``: the weighted sum of standardised layers is
        ``sum_l (w_l / std_l) x_l - sum_l w_l mean_l / std_l`` (the features are read once, not
        three times: a third of a frozen-feature row's step)."""
        # in float32 under any autocast: rounded to bfloat16 first, a dimension whose mean is many
        # standard deviations would lose its whole signal when the shift is taken off
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            scale = self.weights().float()[:, None] / norm.std  # (L, D)
            shift = (scale * norm.mean).sum(0)  # (D,)
            y = torch.einsum("ld,bltd->btd", scale, x) - shift  # (B, T, D)
            return y * mask[..., None].to(y.dtype)


class GRUEncoder(nn.Module):
    """Stacked GRU over masked frames; returns the last real frame's output ``(B, H)`` and all
    outputs ``(B, T, H)`` (paper 000: 2 layers of 128, last output)."""

    def __init__(self, dim: int, hidden: int = 128, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.gru = nn.GRU(dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # A left-to-right GRU's output at a real frame depends only on the frames before it,
        # so right-padding never reaches the last real output: no packing needed (packing is
        # several times slower on CPU). Outputs at padded positions are meaningless.
        out, _ = self.gru(x * mask.unsqueeze(-1).to(x.dtype))
        return last_valid(out, mask), out


def mlp(dims: list[int], *, dropout: float = 0.0, activation=nn.ReLU) -> nn.Sequential:
    """Linear layers through ``dims`` with an activation and dropout between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [activation(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class Standardize(nn.Module):
    """Per-feature standardisation with statistics of the training data, kept in the state
    dict (so a bundle normalises exactly as training did): ``(B, L, T, D)`` with stats ``(L, D)``."""

    def __init__(self, num_layers: int, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_layers, dim))
        self.register_buffer("std", torch.ones(num_layers, dim))

    def set(self, mean, std) -> None:
        """Install statistics ``(L, D)`` (std floored at 1e-5)."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-5))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = (x - self.mean[None, :, None]) / self.std[None, :, None]
        return y if mask is None else y * mask[:, None, :, None]


class ConformerBlock(nn.Module):
    """One conformer block (Gulati et al. 2020): half-step feed-forward, masked multi-head
    self-attention, convolution module, half-step feed-forward, layer norm. ``(B, T, D) -> (B, T, D)``."""

    def __init__(self, dim: int, heads: int = 4, kernel: int = 15, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()

        def ffn() -> nn.Sequential:
            return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(ff_mult * dim, dim), nn.Dropout(dropout))

        self.ff1, self.ff2 = ffn(), ffn()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.conv_norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.conv_act = nn.Sequential(nn.GroupNorm(1, dim), nn.SiLU())
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        a, _ = self.attn(h, h, h, key_padding_mask=~mask, need_weights=False)
        x = x + self.dropout(a)
        h = (self.conv_norm(x) * keep).transpose(1, 2)  # (B, D, T); padding zeroed before convolving
        h = nn.functional.glu(self.pointwise_in(h), dim=1)
        h = self.pointwise_out(self.conv_act(self.depthwise(h) * keep.transpose(1, 2)))
        x = x + self.dropout(h.transpose(1, 2))
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x) * keep


class Conformer(nn.Module):
    """Input projection to ``hidden`` then ``layers`` conformer blocks: ``(B, T, D_in) -> (B, T, hidden)``."""

    def __init__(self, dim_in: int, hidden: int = 64, layers: int = 4, heads: int = 4, kernel: int = 15,
                 dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(dim_in, hidden)
        self.blocks = nn.ModuleList(ConformerBlock(hidden, heads, kernel, dropout=dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) * mask.unsqueeze(-1).to(x.dtype)
        for block in self.blocks:
            h = block(h, mask)
        return h


def frames_left(subsample: int, pooled: int) -> int:
    """Of a model's ``subsample`` (frames averaged in all), what it still averages itself when the
    data path averaged ``pooled`` frames into each of its input frames (``data.frame_pool``)."""
    if pooled <= 1:
        return max(1, subsample)
    if subsample > pooled and subsample % pooled:
        raise ValueError(f"the model averages {subsample} frames in all, which the {pooled} frames data.frame_pool "
                         f"averaged do not divide: make the subsample a multiple of data.frame_pool")
    return max(1, subsample // pooled)


def average_frames(x: torch.Tensor, mask: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of every ``factor`` consecutive real frames: ``(B, T, D) -> (B, ceil(T/f), D)`` with its mask."""
    if factor <= 1:
        return x, mask
    t = (x.shape[1] + factor - 1) // factor * factor
    x = nn.functional.pad(x, (0, 0, 0, t - x.shape[1]))
    m = nn.functional.pad(mask, (0, t - mask.shape[1])).to(x.dtype)
    summed = (x.view(x.shape[0], -1, factor, x.shape[2]) * m.view(m.shape[0], -1, factor, 1)).sum(2)
    counts = m.view(m.shape[0], -1, factor).sum(2)
    return summed / counts.clamp(min=1.0).unsqueeze(-1), counts > 0


def chunk(x: torch.Tensor, length: int, size: int) -> torch.Tensor:
    """``(L, T, D)`` with ``length`` real frames -> ``(ceil(length/size), L, size, D)``
    non-overlapping chunks, the last zero-padded."""
    n = max(1, -(-length // size))
    out = x.new_zeros(n * size, *x.shape[:1], x.shape[-1]).transpose(0, 1)  # (L, n*size, D)
    out[:, :length] = x[:, :length]
    return out.view(x.shape[0], n, size, x.shape[-1]).transpose(0, 1)


def align_frames(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(T, C)`` frames on one clock averaged onto ``n`` frames of another covering the same time."""
    if x.shape[0] == n:
        return x
    return nn.functional.adaptive_avg_pool1d(x.T[None], n)[0].T


def subsample_layers(x: torch.Tensor, mask: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`average_frames` for ``(B, L, T, D)``."""
    if factor <= 1:
        return x, mask
    b, layers, t, d = x.shape
    flat = x.transpose(1, 2).reshape(b, t, layers * d)
    y, m = average_frames(flat, mask, factor)
    return y.view(b, y.shape[1], layers, d).transpose(1, 2), m
