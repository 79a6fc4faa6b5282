"""Baseline systems: the linear probe, audio-only, text-only and concatenation fusion.

The linear probe (rows ``linear`` and ``linear_text``) is the field's reference (SUPERB,
EmoBox): the frozen features pooled per layer into mean and standard deviation, logistic
regression with balanced class weights and ridge regression per dimension, their strengths
chosen on the validation split only. A neural row that does not beat it on a corpus is not
learning what the features hold.

Each row encodes its modalities with a learned layer weighting, then either a GRU (last
real frame, paper 000's branches) or mask-aware mean+max pooling (paper 001's), projects to
an embedding and predicts arousal/valence/dominance, categories, or both. They are rows of
several papers' tables (000 Table 2 rows 6-9, 001 Table 1, 003 A1/B1, 004's unimodal
models); the systems reuse :class:`ModalityEncoder` and :class:`BaselineModel` rather than
copy them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sermo.config import RunConfig, setting
from sermo.data.batch import Batch
from sermo.data.spec import ModelSpec
from sermo.nn.layers import GRUEncoder, LayerWeighting, Standardize, mlp
from sermo.nn.losses import ccc_loss, masked_cross_entropy
from sermo.nn.pooling import MeanMaxPool, MeanStdPool, PooledNorm
from sermo.systems.api import FoldContext, Output, Row, RowResult, Stats
from sermo.systems.common import lacking
from sermo.systems.definition import SystemDef, register
from sermo.systems.linear_probe import LinearRow, train_linear

ROWS = {"linear": ("audio",), "linear_text": ("text",), "audio": ("audio",), "text": ("text",),
        "fusion": ("audio", "text")}
LINEAR_ROWS = ("linear", "linear_text")
"""The linear probes: the field's reference (SUPERB / EmoBox) the neural rows are read against."""


@dataclass
class BaselinesConfig:
    """Model section of the baselines recipe.

    Attributes:
        rows: which of ``linear``, ``linear_text``, ``audio``, ``text``, ``fusion`` to train.
            ``linear`` / ``linear_text``: the linear probe on the audio / text features (per-layer
            mean and std over time, standardised; logistic regression with balanced class weights
            and ridge regression per dimension, their strengths chosen on the validation split only).
        head: ``gru`` (2-layer GRU, last output) or ``pool`` (statistics over time, then an MLP).
        pool: the ``pool`` head's statistics: ``meanmax`` (mean and max, paper 001's) or ``meanstd``
            (mean and standard deviation: the x-vector's, and the linear probe's summary).
        layer_use: the ``pool`` head's use of the encoder's layers: ``weighted`` (a learned weighted
            sum, then pooling) or ``concat`` (every layer pooled on its own and the statistics
            concatenated, as the probe reads them).
        frame_dropout: the ``pool`` head, in training, leaves each frame out of its statistics with
            this probability (an utterance keeps at least one): every epoch sees other subsets of an
            utterance's frames, an augmentation for small corpora.
        pool_norm: the ``pool`` head standardises its pooled statistics over the batch (batch
            normalisation; its running statistics at prediction) before the MLP: the statistics of
            one utterance are far smaller in spread than its frames, and unscaled they train slowly.
        hidden: GRU / pooling MLP width.
        gru_layers: GRU depth.
        embedding: size of each modality's embedding.
        dropout: dropout before the output heads.
        tasks: ``dims`` (A/V/D regression, CCC loss), ``category`` (cross-entropy), or both.
        ccc_weight, ce_weight: loss weights.
        modality_dropout: fusion only: during training, the share of utterances whose audio or
            text embedding (one of the two, at random) is zeroed, so that neither modality can
            drown the other and the joint head learns to lean on the stronger one per output.
        fusion_init: ``scratch`` (train the fusion model end to end) or ``unimodal`` (start its
            audio and text branches from this fold's trained ``audio`` and ``text`` rows: the
            "unimodal models, then fusion" stages).
        freeze_branches: with ``unimodal`` init, keep the branches fixed and train only the
            joint head.
        aux_weight: fusion only: weight of auxiliary losses of per-modality heads on each
            branch's own embedding, which keep every branch as predictive as a unimodal model
            (the joint head still makes the predictions).
        class_weights: ``balanced``: the cross-entropy weights each class by the inverse of its
            share of the fold's training utterances (for corpora whose classes are unbalanced);
            ``none``: every utterance counts the same.
        linear_c: the linear probe's inverse regularisation strengths tried (logistic
            regression); the best validation UA wins.
        linear_alpha: the ridge strengths tried per dimension; the best validation CCC wins.
    """

    rows: list[str] = field(default_factory=lambda: ["linear", "audio", "text", "fusion"])
    head: str = setting("gru", choices=("gru", "pool"))
    pool: str = setting("meanmax", choices=("meanmax", "meanstd"))
    layer_use: str = setting("weighted", choices=("weighted", "concat"))
    pool_norm: bool = False
    frame_dropout: float = setting(0.0, min=0, lt=1)
    hidden: int = setting(128, min=1)
    gru_layers: int = setting(2, min=1)
    embedding: int = setting(128, min=1)
    dropout: float = setting(0.2, min=0, lt=1)
    tasks: list[str] = setting(default_factory=lambda: ["dims", "category"], choices=("dims", "category"))
    ccc_weight: float = setting(1.0, min=0)
    ce_weight: float = setting(1.0, min=0)
    modality_dropout: float = setting(0.0, min=0, lt=1)
    fusion_init: str = setting("scratch", choices=("scratch", "unimodal"))
    freeze_branches: bool = False
    aux_weight: float = setting(0.0, min=0)
    class_weights: str = setting("none", choices=("none", "balanced"))
    linear_c: list[float] = setting(default_factory=lambda: [0.0001, 0.001, 0.01, 0.1, 1.0], gt=0)
    linear_alpha: list[float] = setting(default_factory=lambda: [1.0, 10.0, 100.0, 1000.0, 10000.0], gt=0)


class ModalityEncoder(nn.Module):
    """``(B, L, T, D)`` features + ``(B, T)`` mask -> ``(B, E)`` embedding."""

    def __init__(self, num_layers: int, dim: int, *, head: str, hidden: int, embedding: int, gru_layers: int = 2,
                 dropout: float = 0.0, pool: str = "meanmax", layer_use: str = "weighted", pool_norm: bool = False,
                 frame_dropout: float = 0.0):
        super().__init__()
        if head not in ("gru", "pool"):
            raise ValueError(f"unknown head {head!r}; known: gru, pool")
        if layer_use not in ("weighted", "concat"):
            raise ValueError(f"unknown layer use {layer_use!r}; known: weighted, concat")
        self.norm = Standardize(num_layers, dim)
        self.head = head
        self.concat = head == "pool" and layer_use == "concat"
        self.frame_dropout = frame_dropout if head == "pool" else 0.0
        self.layers = None if self.concat else LayerWeighting(num_layers)
        self.proj: nn.Module
        if head == "gru":
            self.seq = GRUEncoder(dim, hidden, gru_layers)
            self.proj = nn.Linear(hidden, embedding)
        else:
            self.pool = MeanStdPool() if pool == "meanstd" else MeanMaxPool()
            width = self.pool.out_dim(dim * (num_layers if self.concat else 1))
            self.pooled_norm = PooledNorm(width) if pool_norm else nn.Identity()
            self.proj = mlp([width, hidden, embedding], dropout=dropout)
        self.out_dim = embedding

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.concat:  # every layer standardised and pooled on its own: (B, T, L D)
            b, num_layers, t, d = x.shape
            h = self.norm(x.float(), mask).permute(0, 2, 1, 3).reshape(b, t, num_layers * d)
        else:
            assert self.layers is not None
            h = self.layers.standardized(x, self.norm, mask)  # (B, T, D)
        if self.head == "gru":
            last, _ = self.seq(h, mask)
            return self.proj(last)
        if self.training and self.frame_dropout > 0:
            kept = mask & (torch.rand(mask.shape, device=mask.device) >= self.frame_dropout)
            mask = torch.where(kept.any(1, keepdim=True), kept, mask)  # never an utterance without frames
        return self.proj(self.pooled_norm(self.pool(h, mask)))


class BaselineModel(nn.Module):
    """One baseline row: the modalities' encoders, concatenated, then A/V/D and/or class heads."""

    class_weight: torch.Tensor

    def __init__(self, *, audio: tuple[int, int] | None, text: tuple[int, int] | None, num_classes: int,
                 cfg: BaselinesConfig):
        super().__init__()
        enc: dict[str, Any] = dict(head=cfg.head, hidden=cfg.hidden, embedding=cfg.embedding, gru_layers=cfg.gru_layers,
                   dropout=cfg.dropout, pool=cfg.pool, layer_use=cfg.layer_use, pool_norm=cfg.pool_norm,
                   frame_dropout=cfg.frame_dropout)
        self.audio = ModalityEncoder(*audio, **enc) if audio else None
        self.text = ModalityEncoder(*text, **enc) if text else None
        width = sum(e.out_dim for e in (self.audio, self.text) if e is not None)
        self.fuse = nn.Sequential(nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(width, width), nn.ReLU(),
                                  nn.Dropout(cfg.dropout))
        self.dims_head = nn.Linear(width, 3) if "dims" in cfg.tasks else None
        self.cls_head = nn.Linear(width, num_classes) if "category" in cfg.tasks else None
        # per-class cross-entropy weights (ones unless cfg.class_weights is balanced; set from the fold)
        self.register_buffer("class_weight", torch.ones(num_classes))
        self.aux = nn.ModuleDict()
        if cfg.aux_weight > 0 and audio and text:
            for name in ("audio", "text"):
                self.aux[name] = nn.Linear(cfg.embedding, (3 if "dims" in cfg.tasks else 0)
                                           + (num_classes if "category" in cfg.tasks else 0))
        self.cfg = cfg

    def forward(self, batch: Batch) -> Output:
        parts = []
        if self.audio is not None:
            parts.append(self.audio(batch.audio, batch.audio_mask))
        if self.text is not None:
            parts.append(self.text(batch.text, batch.text_mask))
        extras = {}
        if len(self.aux) and self.training:  # auxiliary per-branch predictions, before modality dropout
            extras = {f"aux_{n}": head(torch.relu(e)) for (n, head), e in zip(self.aux.items(), parts)}
        if self.training and len(parts) == 2 and self.cfg.modality_dropout > 0:
            drop = torch.rand(parts[0].shape[0], device=parts[0].device) < self.cfg.modality_dropout
            which = torch.rand(parts[0].shape[0], device=parts[0].device) < 0.5
            parts = [parts[0] * ~(drop & which)[:, None], parts[1] * ~(drop & ~which)[:, None]]
        emb = torch.cat(parts, dim=-1)  # (B, E)
        h = self.fuse(emb)
        return Output(dims=self.dims_head(h) if self.dims_head is not None else None,
                      logits=self.cls_head(h) if self.cls_head is not None else None, embedding=emb,
                      extras=extras)

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        if out.dims is not None:
            parts["ccc"] = ccc_loss(out.need("dims"), batch.dims)
        if out.logits is not None:
            parts["ce"] = masked_cross_entropy(out.need("logits"), batch.category, self.class_weight)
        total: torch.Tensor | float = self.cfg.ccc_weight * parts.get("ccc", 0.0) + self.cfg.ce_weight * parts.get("ce", 0.0)
        for name in self.aux:
            if f"aux_{name}" not in out.extras:
                continue
            pred = out.extras[f"aux_{name}"]
            aux: torch.Tensor | float = 0.0
            if out.dims is not None:
                aux = aux + self.cfg.ccc_weight * ccc_loss(pred[:, :3], batch.dims)
            if out.logits is not None:
                aux = aux + self.cfg.ce_weight * masked_cross_entropy(pred[:, -out.logits.shape[1]:], batch.category,
                                                                      self.class_weight)
            parts[f"aux_{name}"] = torch.as_tensor(aux)
            total = total + self.cfg.aux_weight * aux
        return {"loss": torch.as_tensor(total), **parts}


def build_model(architecture: str, cfg: BaselinesConfig, spec: ModelSpec, stats: Stats | None = None) -> nn.Module:
    """A row's model for the features its spec names, its inputs standardised with ``stats``."""
    mods = ROWS[architecture]
    if architecture in LINEAR_ROWS:
        shape = spec.audio if mods[0] == "audio" else spec.text
        assert shape is not None, f"a {architecture} row reads {mods[0]} features"
        return LinearRow(mods[0], *shape, spec.num_classes, cfg.tasks)
    model = BaselineModel(audio=spec.audio if "audio" in mods else None, text=spec.text if "text" in mods else None,
                          num_classes=spec.num_classes, cfg=cfg)
    for name, encoder in (("audio", model.audio), ("text", model.text)):
        if encoder is not None and stats and name in stats:
            encoder.norm.set(*stats[name])
    return model


def rows(cfg: RunConfig) -> list[Row]:
    """The recipe's rows: each reads its modalities' features; fusion started from the unimodal
    rows trains those branches at ``train.encoder_lr_scale`` of the learning rate."""
    model: BaselinesConfig = cfg.model
    out = []
    for name in model.rows:
        slower: tuple[tuple[str, float], ...] = ()
        if name == "fusion" and model.fusion_init == "unimodal" and not model.freeze_branches:
            slower = (("audio", cfg.train.encoder_lr_scale), ("text", cfg.train.encoder_lr_scale))
        out.append(Row(name, ROWS[name], name, functools.partial(build_model, name, model), slower=slower))
    return out


def balanced_weights(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights ``n / (k n_c)`` over the ``k`` classes present among labelled items
    (-1: unlabelled); a class with no item gets 1 (it is never a target)."""
    counts = np.bincount(classes[classes >= 0], minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def run_fold(ctx: FoldContext) -> list[RowResult]:
    """Every configured row, one after another (a row whose modality the corpus lacks is skipped,
    with the reason): the linear probes fitted, the neural rows trained by the engine."""
    cfg: BaselinesConfig = ctx.cfg.model
    done: dict[str, RowResult] = {}
    results = []
    for row in rows(ctx.cfg):
        why = lacking(ctx, row.modalities)
        if why:  # a text-only corpus, or one without transcripts
            results.append(ctx.skipped_row(row.name, row.modalities, why))
            continue
        if row.name in LINEAR_ROWS:
            result = train_linear(ctx, row.name, row.modalities[0], cfg)
        else:
            result = ctx.train(row, prepare=functools.partial(_prepare, ctx, row, cfg, done))
        done[row.name] = result
        results.append(result)
    return results


def _prepare(ctx: FoldContext, row: Row, cfg: BaselinesConfig, done: dict[str, RowResult], model: nn.Module) -> None:
    """What a fold adds to a fresh model: fusion's branches from this fold's unimodal rows (frozen
    with ``freeze_branches``), balanced class weights."""
    assert isinstance(model, BaselineModel)
    if row.name == "fusion" and cfg.fusion_init == "unimodal":
        untrained = [m for m in ("audio", "text") if m not in done or done[m].model is None]
        if untrained:
            raise ValueError(f"fusion_init unimodal needs the rows {untrained} before fusion in model.rows")
        for name in ("audio", "text"):
            trained, branch = getattr(done[name].model, name), getattr(model, name)
            branch.load_state_dict(trained.state_dict())
            if cfg.freeze_branches:
                for p in branch.parameters():
                    p.requires_grad = False
    if cfg.class_weights == "balanced":
        weights = balanced_weights(ctx.truth(ctx.ids("train"))[1], ctx.num_classes)
        model.class_weight.copy_(torch.as_tensor(weights))


COMPARISONS = tuple((a, b, metric) for metric in ("ua", "ccc_valence", "ccc_arousal")
                    for a, b in (("linear", "audio"), ("linear", "fusion"), ("audio", "fusion")))
"""Each neural row against the linear probe (the field's reference), fusion against audio alone:
in UA and in CCC where the rows predict them (a metric the predictions lack is left out)."""

register(SystemDef(
    name="baselines", config_cls=BaselinesConfig, run_fold=run_fold, build_model=build_model, declare=rows,
    rows=tuple(ROWS), title="Audio-only, text-only and concatenation-fusion baselines", order=0,
    comparisons=COMPARISONS,
))
