"""LE-MER's model: per modality a projection, label scores ``G = cos(H, L)``, the label-guided
cross-attention and its constraint, and the loss."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sermo.data.batch import Batch
from sermo.data.spec import ModelSpec
from sermo.encoders.trainable import TrainableEncoder
from sermo.nn.inputs import hidden_states
from sermo.nn.layers import Standardize, average_frames, frames_left
from sermo.nn.losses import masked_cross_entropy
from sermo.nn.pooling import masked_max, masked_mean
from sermo.systems.api import Output, lr_groups
from sermo.systems.label_embedding.config import ARCHITECTURES, LabelEmbeddingConfig


class Modality(nn.Module):
    """Stored features ``(B, 1, T, D)`` (or the last hidden state of a fine-tuned ``encoder``)
    -> standardised, frame-averaged -> projection ``(B, T', d)`` (``dim=None``: none, the
    encoder's own ``D``, as the paper's equations read H); optional label embeddings ``L`` (c, D)
    in the input space, projected the same way."""

    def __init__(self, dim_in: int, dim: int | None, *, num_classes: int, subsample: int = 1, dropout: float = 0.1,
                 labels: torch.Tensor | None = None, encoder: TrainableEncoder | None = None):
        super().__init__()
        self.encoder = encoder
        self.norm = Standardize(1, dim_in)
        self.subsample = subsample
        self.width = dim or dim_in
        self.proj = nn.Sequential(nn.Linear(dim_in, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)) \
            if dim else nn.Identity()
        self.labels = nn.Parameter(labels.clone().float()) if labels is not None else None
        # label embeddings of another width (wav2vec 2.0 codevectors) are mapped into the input space first
        self.label_in = nn.Linear(labels.shape[1], dim_in) if labels is not None and labels.shape[1] != dim_in \
            else None

    def frames(self, x: torch.Tensor, mask: torch.Tensor, pooled: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised, averaged input frames ``(B, T', D)`` (what the units are learned on):
        ``subsample`` frames in all, of which the data path averaged ``pooled``."""
        h = self.norm(x[:, -1:], mask)[:, 0]
        return average_frames(h, mask, frames_left(self.subsample, pooled))

    def inputs(self, batch: Batch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, T, D)`` and its mask: the stored features, or the fine-tuned encoder's last
        hidden state from the batch's samples or token ids."""
        hidden, mask = hidden_states(batch, kind, self.encoder)
        return (hidden if self.encoder is None else hidden[:, -1:]), mask

    def forward(self, batch: Batch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        h, mask = self.frames(*self.inputs(batch, kind), batch.audio_pool if kind == "audio" else 1)
        return self.proj(h) * mask.unsqueeze(-1), mask

    def label_space(self) -> torch.Tensor:
        """The projected label embeddings ``(c, d)``."""
        return self.proj(self.labels if self.label_in is None else self.label_in(self.labels))


def own_tokens(mask: torch.Tensor, current: torch.Tensor | None) -> torch.Tensor:
    """Which tokens belong to the utterance itself: the last ``current`` real tokens (the
    context comes first); all real tokens when ``current`` is unknown."""
    if current is None:
        return mask
    length = mask.sum(1, keepdim=True)
    pos = torch.arange(mask.shape[1], device=mask.device)[None]
    return mask & (pos >= length - current.view(-1, 1))


def label_scores(h: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``G = cos(H, L)``: ``(B, T, c)``; zero at padding."""
    g = torch.nn.functional.normalize(h, dim=-1) @ torch.nn.functional.normalize(labels, dim=-1).T
    return g * mask.unsqueeze(-1)


def cross_attention(ht: torch.Tensor, hs: torch.Tensor, w: torch.Tensor, t_mask: torch.Tensor,
                    s_mask: torch.Tensor) -> torch.Tensor:
    """``A_r = softmax(H_t W H_s^T)`` over the real frames: ``(B, Tt, Ts)``; padded tokens' rows are zero."""
    scores = (ht @ w) @ hs.transpose(1, 2) / math.sqrt(ht.shape[-1])
    scores = scores.masked_fill(~s_mask[:, None, :], float("-inf"))
    a = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(a) * t_mask[:, :, None]


def label_guided_attention(g_t: torch.Tensor, g_s: torch.Tensor, t_mask: torch.Tensor,
                           s_mask: torch.Tensor, *, temperature: float = 0.1) -> torch.Tensor:
    """``A_l``: the agreement of each token's and each frame's label scores, ``G_t G_s^T`` (Eq. 9),
    put on ``A_r``'s scale: a softmax at ``temperature`` over each token's real frames (rows sum
    to one), zero on padded tokens. ``(B, Tt, Ts)``.

    Unnormalised, ``G_t G_s^T`` sums cosine products over the classes (entries near 1, rows
    summing to about ``Ts``) while ``A_r``'s entries are near ``1/Ts``: pulling one towards the
    other would mostly shrink the label scores instead of guiding the attention. At temperature 1
    the softmax is nearly flat (the products differ by a few units at most), so the target would
    be a uniform attention; at 0.1 it picks the frames whose label scores agree with the token's.
    """
    scores = (g_t @ g_s.transpose(1, 2)) / temperature
    scores = scores.masked_fill(~s_mask[:, None, :], float("-inf"))
    return torch.nan_to_num(torch.softmax(scores, dim=-1)) * t_mask[:, :, None]


def attention_constraint(a_l: torch.Tensor, a_r: torch.Tensor, t_mask: torch.Tensor,
                         s_mask: torch.Tensor) -> torch.Tensor:
    """``L_c = ||A_l - A_r||^2`` (Eq. 10): the squared Frobenius norm of each utterance's
    difference over its real (token, frame) pairs, averaged over the batch; no gradient reaches
    ``A_l`` (the label scores learn from ``L_g``). A mean over every pair instead would divide it
    by tokens x frames (25,000 at the paper's lengths) and leave ``A_r`` untouched."""
    a_l = a_l.detach()
    pair = (t_mask[:, :, None] & s_mask[:, None, :]).to(a_r.dtype)
    return (((a_l - a_r) ** 2) * pair).sum() / max(a_r.shape[0], 1)


class LEMER(nn.Module):
    """One row: text-only, speech-only (each with or without label embeddings) or a fusion.

    ``fusion``: ``None`` (unimodal), ``constraint`` (LE-MER: ``A_r`` fuses, ``L_c`` pulls it
    towards ``A_l``), ``sum`` (``A_r + A_l`` fuses), ``al`` (``A_l`` alone), ``ar`` (``A_r`` alone);
    ``A_l`` is row-normalised like ``A_r`` (:func:`label_guided_attention`), so ``H_s'`` stays a
    weighted mean of frames however many there are.
    """

    def __init__(self, *, text: tuple[int, int] | None, speech: tuple[int, int] | None, num_classes: int,
                 cfg: LabelEmbeddingConfig, fusion: str | None = None, text_labels=None, speech_labels=None,
                 text_model: TrainableEncoder | None = None, speech_model: TrainableEncoder | None = None):
        super().__init__()
        mk: dict[str, Any] = dict(num_classes=num_classes, dropout=cfg.dropout)
        dim = cfg.dim if cfg.projection == "mlp" else None
        self.text = Modality(text[1], dim, labels=text_labels, encoder=text_model, **mk) if text else None
        self.speech = Modality(speech[1], dim, subsample=cfg.speech_subsample, labels=speech_labels,
                               encoder=speech_model, **mk) if speech else None
        self.lr_scales = {"text": cfg.text_lr_scale, "audio": cfg.speech_lr_scale}
        self.fusion = fusion
        if fusion is not None:  # W of Eq. 7, between the two widths (the identity where they agree)
            assert self.text is not None and self.speech is not None, "a fusion reads both modalities"
            dt, ds = self.text.width, self.speech.width
            self.w = nn.Parameter(torch.eye(dt, ds) + 0.01 * torch.randn(dt, ds))
        # pool "split": frozen token features cannot tell the utterance from its context (a
        # fine-tuned BERT learns to), so the utterance's own tokens and its context are
        # max-pooled apart; "sequence": H_m over the whole sequence (the paper)
        self.split = cfg.pool == "split" and text is not None
        wt = self.text.width if self.text is not None else 0
        width = wt + (self.speech.width if self.speech is not None and (fusion or not text) else 0)
        self.head = nn.Linear(width + (wt if self.split else 0), num_classes)
        self.mu = list(cfg.mu)
        self.temperature = cfg.attention_temperature

    def forward(self, batch: Batch) -> Output:
        extras: dict = {}
        ht = hs = None
        if self.text is not None:
            ht, t_mask = self.text(batch, "text")
            own = own_tokens(t_mask, batch.extras.get("t_current"))
            if self.text.labels is not None:
                extras["g_t"] = label_scores(ht, t_mask, self.text.label_space())
        if self.speech is not None:
            hs, s_mask = self.speech(batch, "audio")
            if self.speech.labels is not None:
                extras["g_s"] = label_scores(hs, s_mask, self.speech.label_space())
        if ht is not None and not self.split:
            own = t_mask  # the whole sequence
        if self.fusion is None:
            if ht is not None:
                v = masked_max(ht, own)
            else:
                assert hs is not None
                v = masked_max(hs, s_mask)
        else:
            assert ht is not None and hs is not None, "a fusion reads both modalities"
            a_r = cross_attention(ht, hs, self.w, t_mask, s_mask) if self.fusion != "al" else None
            a_l = label_guided_attention(extras["g_t"], extras["g_s"], t_mask, s_mask,
                                         temperature=self.temperature) if "g_t" in extras and "g_s" in extras else None
            if self.fusion in ("sum", "al") and a_l is None:
                raise ValueError(f"fusion {self.fusion!r} needs label embeddings for both modalities")
            attn = a_l if self.fusion == "al" else (a_r + a_l if self.fusion == "sum" and a_r is not None
                                                    and a_l is not None else a_r)
            assert attn is not None
            aligned = attn @ hs  # (B, Tt, d): H_s'
            v = masked_max(torch.cat([ht, aligned], dim=-1), own)
            extras.update(a_r=a_r, a_l=a_l, t_mask=t_mask, s_mask=s_mask)
        if self.split:
            assert ht is not None
            v = torch.cat([v, masked_max(ht, t_mask & ~own)], dim=-1)
        if "g_t" in extras:  # mean over the sequence: class scores
            extras["p_g_t"] = masked_mean(extras["g_t"], t_mask)
        if "g_s" in extras:
            extras["p_g_s"] = masked_mean(extras["g_s"], s_mask)
        return Output(logits=self.head(v), embedding=v, extras=extras)

    def param_groups(self):
        """Fine-tuned encoders learn at their own share of the rate (paper: speech 1e-6, text 5e-6)."""
        return lr_groups(self, [(mod.encoder, self.lr_scales[kind]) for kind, mod in
                                (("text", self.text), ("audio", self.speech)) if mod is not None])

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        mu1, mu2, mu3, mu4 = self.mu
        parts = {"m": masked_cross_entropy(out.need("logits"), batch.category)}
        total = mu1 * parts["m"]
        ex = out.extras
        if self.fusion == "constraint" and ex.get("a_l") is not None:
            parts["c"] = attention_constraint(ex["a_l"], ex["a_r"], ex["t_mask"], ex["s_mask"])
            total = total + mu2 * parts["c"]
        if "p_g_t" in ex:
            parts["g_t"] = masked_cross_entropy(ex["p_g_t"], batch.category)
            total = total + mu3 * parts["g_t"]
        if "p_g_s" in ex:
            parts["g_s"] = masked_cross_entropy(ex["p_g_s"], batch.category)
            total = total + mu4 * parts["g_s"]
        return {"loss": total, **parts}


def build_model(row: str, cfg: LabelEmbeddingConfig, spec: ModelSpec) -> LEMER:
    """A row's model for a bundle (label embeddings are parameters: the weights restore them)."""
    from sermo.encoders.registry import load_trainable

    if row not in ARCHITECTURES:
        raise ValueError(f"label_embedding has no model for row {row!r}; known: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[row]
    uses_text, uses_speech = arch.text, arch.speech
    speech_model = load_trainable(spec.speech_model) if uses_speech and spec.speech_model else None
    text_model = load_trainable(spec.text_model) if uses_text and spec.text_model else None
    # a fine-tuned encoder's width is its own; stored features' the spec's
    text = (1, text_model.dim) if text_model is not None else (spec.text if uses_text else None)
    speech = (1, speech_model.dim) if speech_model is not None else \
        (spec.audio if uses_speech else None)
    le_t, le_s = arch.text_labels, arch.speech_labels
    c = spec.num_classes
    dims = spec.options.get("label_dims") or {}  # label embeddings of their own width (quantizer codevectors)
    return LEMER(text=text, speech=speech, num_classes=c,
                 cfg=cfg, fusion=arch.fusion, speech_model=speech_model, text_model=text_model,
                 text_labels=torch.zeros(c, dims.get("text", text[1] if text else 0)) if le_t and text else None,
                 speech_labels=torch.zeros(c, dims.get("audio", speech[1] if speech else 0)) if le_s and speech else None)
