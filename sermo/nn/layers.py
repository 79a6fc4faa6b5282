"""Layers shared by systems: the learned weighted sum over encoder layers, sequence encoders."""

from __future__ import annotations

import math

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

    mean: torch.Tensor
    std: torch.Tensor

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


def relative_positions(length: int, dim: int, *, device=None) -> torch.Tensor:
    """Sinusoidal encodings of the relative distances ``length - 1`` down to ``-(length - 1)``:
    ``(2 length - 1, dim)`` (Transformer-XL; ESPnet's ``RelPositionalEncoding``)."""
    distance = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(2 * length - 1, dim, device=device)
    pe[:, 0::2] = torch.sin(distance * freq)
    pe[:, 1::2] = torch.cos(distance * freq)[:, : dim // 2]
    return pe


class RelativeSelfAttention(nn.Module):
    """Multi-head self-attention with relative positional encodings (Dai et al. 2019), as
    ESPnet's conformer has it (``rel_selfattn``): score(i, j) = (q_i + u) k_j + (q_i + v) W_p r_{i-j}
    over ``sqrt(d_k)``, with learned biases u, v per head. ``(B, T, D), pos (2T-1, D) -> (B, T, D)``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the attention width {dim} is not a multiple of its {heads} heads")
        self.heads, self.d_k = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.pos = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.bias_v = nn.Parameter(torch.zeros(heads, self.d_k))
        nn.init.xavier_uniform_(self.bias_u)
        nn.init.xavier_uniform_(self.bias_v)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (z.view(b, t, self.heads, self.d_k) for z in self.qkv(x).chunk(3, dim=-1))
        p = self.pos(pos.to(x.dtype)).view(-1, self.heads, self.d_k)  # (2T-1, H, d_k)
        content = torch.einsum("bihd,bjhd->bhij", q + self.bias_u, k)
        position = torch.einsum("bihd,rhd->bhir", q + self.bias_v, p)  # (B, H, T, 2T-1)
        # entry (i, j) reads the encoding of distance i - j, at index (T - 1) - (i - j)
        idx = (t - 1) - torch.arange(t, device=x.device)[:, None] + torch.arange(t, device=x.device)[None, :]
        position = position.gather(-1, idx.expand(b, self.heads, t, t))
        scores = (content + position) / math.sqrt(self.d_k)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        attn = self.dropout(torch.softmax(scores.float(), dim=-1).to(v.dtype))
        return self.out(torch.einsum("bhij,bjhd->bihd", attn, v).reshape(b, t, -1))


class ConformerBlock(nn.Module):
    """One conformer block (Gulati et al. 2020): half-step feed-forward, masked multi-head
    self-attention with relative positional encodings, convolution module, half-step
    feed-forward, layer norm. ``(B, T, D) -> (B, T, D)``."""

    def __init__(self, dim: int, heads: int = 4, kernel: int = 15, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()

        def ffn() -> nn.Sequential:
            return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(ff_mult * dim, dim), nn.Dropout(dropout))

        self.ff1, self.ff2 = ffn(), ffn()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = RelativeSelfAttention(dim, heads, dropout=dropout)
        self.conv_norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.conv_norm_out = nn.GroupNorm(1, dim)  # its affine weights; statistics over real frames only
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        if pos is None:
            pos = relative_positions(x.shape[1], x.shape[2], device=x.device)
        x = x + 0.5 * self.ff1(x)
        x = x + self.dropout(self.attn(self.attn_norm(x), pos, mask))
        h = (self.conv_norm(x) * keep).transpose(1, 2)  # (B, D, T); padding zeroed before convolving
        h = nn.functional.glu(self.pointwise_in(h), dim=1)
        h = self.pointwise_out(nn.functional.silu(self._norm(self.depthwise(h), keep.transpose(1, 2))))
        x = x + self.dropout(h.transpose(1, 2))
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x) * keep


    def _norm(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """GroupNorm with one group over an utterance's real frames ``(B, D, T)``: padding (how
        long the batch's longest utterance is) changes no statistic."""
        count = keep.sum(dim=(1, 2), keepdim=True).clamp(min=1) * h.shape[1]
        mean = (h * keep).sum(dim=(1, 2), keepdim=True) / count
        var = (((h - mean) * keep) ** 2).sum(dim=(1, 2), keepdim=True) / count
        g = self.conv_norm_out
        return ((h - mean) / torch.sqrt(var + g.eps) * g.weight[None, :, None] + g.bias[None, :, None]) * keep


class Conformer(nn.Module):
    """Input projection to ``hidden`` then ``layers`` conformer blocks (relative positional
    self-attention, as ESPnet's default): ``(B, T, D_in) -> (B, T, hidden)``."""

    def __init__(self, dim_in: int, hidden: int = 64, layers: int = 4, heads: int = 4, kernel: int = 15,
                 dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(dim_in, hidden)
        self.blocks = nn.ModuleList(ConformerBlock(hidden, heads, kernel, dropout=dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) * mask.unsqueeze(-1).to(x.dtype)
        pos = relative_positions(h.shape[1], h.shape[2], device=h.device)
        for block in self.blocks:
            h = block(h, mask, pos)
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
