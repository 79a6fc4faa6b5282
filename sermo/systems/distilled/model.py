"""Paper 001's model: pooled speech (and text) streams, an FFN with tanh, a CCC loss."""

from __future__ import annotations

import torch
from torch import nn

from sermo.data.batch import Batch
from sermo.data.spec import ModelSpec
from sermo.encoders.trainable import TrainableEncoder
from sermo.nn.inputs import hidden_states
from sermo.nn.layers import LayerWeighting, Standardize
from sermo.nn.losses import ccc_loss, masked_cross_entropy
from sermo.nn.pooling import MeanMaxPool
from sermo.systems.api import Output, lr_groups
from sermo.systems.distilled.config import DistilledConfig


class Stream(nn.Module):
    """One modality to a pooled vector (``(B, D)``: mean + max, the paper's ``d_A``; ``(B, 2D)``
    with ``pooling="concat"``): stored features or a trainable encoder's hidden states,
    standardised, weighted over layers (softmax), mean and max over the sequence (padding never
    enters either)."""

    def __init__(self, num_layers: int, dim: int, *, encoder: TrainableEncoder | None = None,
                 select: list[int] | None = None, top: int | None = None, pooling: str = "sum"):
        super().__init__()
        self.encoder = encoder
        self.select = list(select) if select is not None else None
        self.top = top  # the encoder runs only its top layers, on the stored state below them
        if encoder is not None:
            num_layers = len(self.select) if self.select is not None else encoder.num_hidden_states
        self.norm = Standardize(num_layers, dim)
        self.layers = LayerWeighting(num_layers, "softmax")
        self.pool = MeanMaxPool(pooling)
        self.out_dim = self.pool.out_dim(dim)

    def inputs(self, batch: Batch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, T, D)`` hidden states and ``(B, T)`` mask of this stream's modality."""
        hidden, mask = hidden_states(batch, kind, self.encoder, top=self.top)
        if self.encoder is not None and self.select is not None:
            hidden = hidden[:, self.select]
        return hidden, mask

    def forward(self, batch: Batch, kind: str) -> torch.Tensor:
        x, mask = self.inputs(batch, kind)
        return self.pool(self.layers.standardized(x, self.norm, mask), mask)


class DistilledModel(nn.Module):
    """Speech stream, optional text stream, concatenation, FFN (linear, tanh, linear) -> A/V/D.

    ``targets`` are the dimensions the model learns (all three; one for the per-dimension
    layer-importance models).
    """

    def __init__(self, *, audio: tuple[int, int] | None, text: tuple[int, int] | None, cfg: DistilledConfig,
                 speech: TrainableEncoder | None = None, text_model: TrainableEncoder | None = None,
                 text_top: int | None = None, targets: tuple[int, ...] = (0, 1, 2), speech_top: int | None = None,
                 audio_stream: Stream | None = None, task: str = "dims", num_classes: int = 0, lr_scale: float = 1.0):
        super().__init__()
        if task not in ("dims", "category") or (task == "category" and num_classes < 2):
            raise ValueError(f"a distilled model predicts dims or category (of 2 classes or more), not {task!r}")
        self.task = task
        self.audio = audio_stream  # an already trained speech stream (the FT=>FRZ comparison)
        if audio_stream is None and (audio is not None or speech is not None):
            dim = speech.dim if speech is not None else (audio or (0, 0))[1]
            select = cfg.speech_layers if speech is not None else None
            self.audio = Stream(audio[0] if audio else 0, dim, encoder=speech, select=select, top=speech_top,
                                pooling=cfg.pooling)
        self.text = None
        if text is not None or text_model is not None:
            dim = text_model.dim if text_model is not None else (text or (0, 0))[1]
            select = [-1] if text_model is not None else None
            self.text = Stream(text[0] if text else 0, dim, encoder=text_model, select=select, top=text_top,
                               pooling=cfg.pooling)
        width = sum(s.out_dim for s in (self.audio, self.text) if s is not None)
        self.ffn = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(width, cfg.hidden), nn.Tanh(),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, len(targets) if task == "dims" else num_classes))
        self.targets = list(targets)
        self.lr_scale = lr_scale  # fine-tuned encoders' share of the learning rate

    def forward(self, batch: Batch) -> Output:
        parts = []
        if self.audio is not None:
            parts.append(self.audio(batch, "audio"))
        if self.text is not None:
            parts.append(self.text(batch, "text"))
        emb = torch.cat(parts, dim=-1)
        if self.task == "category":
            return Output(logits=self.ffn(emb), embedding=emb)
        return Output(dims=self.ffn(emb), embedding=emb)

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        if self.task == "category":
            return {"loss": masked_cross_entropy(out.need("logits"), batch.category)}
        loss = ccc_loss(out.need("dims"), batch.dims[:, self.targets])
        return {"loss": loss}

    def param_groups(self):
        """Fine-tuned encoders learn at ``lr_scale`` of the head's rate."""
        return lr_groups(self, [(s.encoder, self.lr_scale) for s in (self.audio, self.text) if s is not None])


def freeze(module: nn.Module) -> nn.Module:
    """Fix every parameter of ``module`` (the FT=>FRZ second stage)."""
    for p in module.parameters():
        p.requires_grad = False
    return module


def build_model(architecture: str, cfg: DistilledConfig, spec: ModelSpec) -> DistilledModel:
    """A row's model for a bundle, ``audio`` or ``audio+text`` (the architecture its bundle records):
    fine-tuned encoders (``spec.speech_model``/``text_model``) are rebuilt from their checkpoint
    before the weights are loaded; option ``text_top``: the text model runs its top layers on the
    stored state below them."""
    from sermo.encoders.registry import load_trainable

    if architecture not in ("audio", "audio+text"):
        raise ValueError(f"distilled has no model {architecture!r}; known: audio, audio+text")
    with_text = architecture == "audio+text"
    speech = load_trainable(spec.speech_model) if spec.speech_model else None
    text_model = load_trainable(spec.text_model) if spec.text_model and with_text else None
    return DistilledModel(audio=spec.audio, text=spec.text if with_text else None, cfg=cfg, speech=speech,
                          text_model=text_model, text_top=spec.options.get("text_top"),
                          speech_top=spec.options.get("speech_top"), task=spec.options.get("task", "dims"),
                          num_classes=spec.num_classes)
