"""The text model: a CNN over a frozen transformer's token features (special tokens left out)."""

from __future__ import annotations

import torch
from torch import nn

from sermo.data.batch import Batch
from sermo.nn.autovc import conv_norm
from sermo.nn.layers import LayerWeighting, Standardize
from sermo.nn.losses import masked_cross_entropy
from sermo.nn.pooling import masked_max
from sermo.systems.api import Output
from sermo.systems.cross_representation.config import CrossRepresentationConfig


class TextCNN(nn.Module):
    """Token features (special tokens left out) -> ConvNorm/ReLU layers -> max over tokens -> linear."""

    def __init__(self, text: tuple[int, int], num_classes: int, cfg: CrossRepresentationConfig):
        super().__init__()
        layers, dim = text
        self.norm = Standardize(layers, dim)
        self.weighting = LayerWeighting(layers, "normalized")
        convs, c = [], dim
        for filters in cfg.text_filters:
            convs.append(conv_norm(c, filters, cfg.text_kernel, nn.ReLU()))
            c = filters
        self.convs = nn.Sequential(*convs)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(c, num_classes)

    def forward(self, batch: Batch) -> Output:
        mask = word_tokens(batch.need("text_mask"), batch.text_words)
        h = self.weighting(self.norm(batch.need("text"), mask))
        h = self.convs(h.transpose(1, 2)).transpose(1, 2)
        v = masked_max(h, mask)
        return Output(logits=self.head(self.dropout(v)), embedding=v)

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        loss = masked_cross_entropy(out.need("logits"), batch.category)
        return {"loss": loss}


def word_tokens(mask: torch.Tensor, words: torch.Tensor | None = None) -> torch.Tensor:
    """The tokens of words, special tokens left out: those whose word index is -1 (``[CLS]`` and
    ``[SEP]`` of BERT, ``<sep> <cls>`` at the end for XLNet); without word indices, each
    sequence's first and last token. A sequence with nothing else keeps its tokens."""
    if words is not None:
        inner = mask & (words >= 0)
    else:
        length = mask.sum(1, keepdim=True)
        pos = torch.arange(mask.shape[1], device=mask.device)[None]
        inner = mask & (pos >= 1) & (pos < length - 1)
    return torch.where(inner.any(1, keepdim=True), inner, mask)
