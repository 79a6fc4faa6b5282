"""The base of every encoder that trains inside a system's model (fine-tuned top layers)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sermo.encoders.base import EncoderError


class TrainableEncoder(nn.Module):
    """A pretrained transformers encoder that runs inside a system's model, frozen or with its top
    layers trained (SpeechSSL, TextSSL, WhisperSpeech).

    Mode handling: it is in train mode only while its parent is and some of its parameters
    train, so that fine-tuning has the checkpoint's dropout and time masking (SpecAugment) and a
    frozen encoder computes the same features every time, whatever mode its parent model is put
    in (Lightning leaves each module's mode as it finds it).

    Subclasses give :meth:`transformer_layers` and what ``"all"`` trains (:meth:`all_trainable`);
    one that can run its top layers on stored hidden states sets ``runs_top`` and defines
    :meth:`forward_top`.
    """

    config: Any
    """The checkpoint's transformers config (``hidden_size``, ``num_hidden_layers``, ...)."""
    source: str = ""
    """The name it was loaded under (a Hub id or a registry name)."""
    runs_top: bool = False
    """Whether :meth:`forward_top` can run the top layers alone on a stored hidden state."""

    def forward_top(self, hidden: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
        """The top ``k`` transformer layers run on ``hidden`` ``(B, T, D)``, the hidden state below them."""
        raise NotImplementedError(f"{type(self).__name__} cannot run its top layers alone")

    @property
    def dim(self) -> int:
        """Width of its hidden states."""
        return int(self.config.hidden_size)

    @property
    def num_hidden_states(self) -> int:
        """Transformer layers + 1 (index 0 is the input embedding)."""
        return len(self.transformer_layers()) + 1

    def transformer_layers(self) -> nn.ModuleList:
        """The transformer blocks, bottom first."""
        raise NotImplementedError

    def all_trainable(self) -> list[nn.Module]:
        """The modules ``set_trainable_layers("all")`` trains."""
        raise NotImplementedError

    def above_layers(self, k: int) -> list[nn.Module]:
        """Modules above the transformer blocks that train with the top ``k`` (a final layer norm)."""
        return []

    def set_trainable_layers(self, k: int | str) -> None:
        """Freeze everything, then unfreeze the top ``k`` transformer layers (``"all"``: what
        :meth:`all_trainable` names)."""
        for p in self.parameters():
            p.requires_grad = False
        layers = list(self.transformer_layers())
        if k == "all":
            modules = self.all_trainable()
        else:
            k = int(k)
            if not 0 <= k <= len(layers):
                raise EncoderError(f"the model has {len(layers)} transformer layers; cannot train the top {k}")
            modules = [*layers[len(layers) - k:], *self.above_layers(k)]
        for module in modules:
            for p in module.parameters():
                p.requires_grad = True
        self.refresh_mode()

    def train(self, mode: bool = True) -> "TrainableEncoder":
        self._asked_mode = bool(mode)
        trainable = any(p.requires_grad for p in self.parameters())
        return super().train(bool(mode) and trainable)

    def refresh_mode(self) -> None:
        """Apply the mode last asked for after the trainable layers changed."""
        self.train(getattr(self, "_asked_mode", True))
