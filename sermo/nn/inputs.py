"""A modality's hidden states inside a model: stored features, or a fine-tuned encoder run on
the batch's raw inputs."""

from __future__ import annotations

import torch

from sermo.data.batch import Batch, lengths_mask
from sermo.encoders.trainable import TrainableEncoder


def hidden_states(batch: Batch, kind: str, encoder: TrainableEncoder | None = None, *,
                  top: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L, T, D)`` hidden states of ``kind`` (``audio`` or ``text``) and their ``(B, T)`` mask.

    Without ``encoder``: the batch's stored features. With a trainable ``encoder``
    (``SpeechSSL``/``TextSSL``): the encoder run on ``batch.wave`` or ``batch.tokens``; with
    ``top`` only its top ``top`` layers run, on the stored hidden state below them (``batch.audio``
    or ``batch.text`` holds that state: the frozen layers underneath give the same output every
    epoch).
    """
    if encoder is None or top is not None:
        x, mask = batch.need(kind), batch.need(f"{kind}_mask")
        if encoder is None:
            return x, mask
        assert top is not None
        return encoder.forward_top(x[:, -1].float(), mask, top), mask
    if kind == "audio":
        hidden, frames = encoder(batch.need("wave"), batch.need("wave_lengths"))
        return hidden, lengths_mask(frames, hidden.shape[2])
    return encoder(batch.need("tokens"), batch.need("token_lengths"))
