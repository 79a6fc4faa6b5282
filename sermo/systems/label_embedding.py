"""``label_embedding``: LE-MER, label embeddings and label-guided cross-attention (paper 003).

Wang et al., Interspeech 2023. Each modality gets label embeddings: text ``L_t`` from the
TF-IDF top-K words of each class's training transcripts, encoded by the text encoder;
speech ``L_s`` from the TF-IDF top-K discrete speech units of each class, averaged over the
units' embeddings: the codes and codevectors of the wav2vec 2.0 quantizer where the speech
encoder has one, else k-means units of the training frames and their centroids (the report
says which). ``G = cos(H, L)`` scores tokens and frames per class; its mean over the
sequence is a classifier (``L_g``). Fusion: ``A_r = softmax(H_t W H_s^T)``, ``H_s' = A_r H_s``,
``H_m = [H_t, H_s']``, max-pooled, linear; the label-guided map ``A_l = G_t G_s^T`` constrains
``A_r`` (``L_c``, mean squared error). ``L = mu1 L_m + mu2 L_c + mu3 L_g^t + mu4 L_g^s``.

A trainable projection per modality maps the encoder's last hidden state, and the label
embeddings through the same projection, into the model's space. The encoders are read frozen
(stored features) or, with ``finetune`` (the paper profile), fine-tuned inside each row's
model at their own learning rates; the stored features then still give the standardisation
and the label embeddings' starting points. The dialog context of the text rows is the
previous turns before the utterance: with frozen features each part is encoded on its own
and their token features are joined (an encoder run over the joined text blurs the
utterance's own words with its context); a fine-tuned encoder reads the joined text. Either
way the utterance's own tokens are pooled apart from the context's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sermo.data.batch import Batch
from sermo.data.io import write_json_atomic
from sermo.nn.layers import Standardize, average_frames
from sermo.nn.losses import masked_cross_entropy
from sermo.nn.pooling import masked_max, masked_mean
from sermo.systems import register
from sermo.systems.base import Output, SystemDef

ROWS = ("text", "text_context", "text_context_le", "speech", "speech_le", "score_fusion", "le_mer",
        "fusion_ar_plus_al", "fusion_al_only", "fusion_ar_only")
FUSION = {"le_mer": "constraint", "fusion_ar_plus_al": "sum", "fusion_al_only": "al", "fusion_ar_only": "ar"}
TEXT_INITS = ("tfidf", "label_words", "random")
SPEECH_INITS = ("codebook", "text", "random")


@dataclass
class LabelEmbeddingConfig:
    """Model section of the label_embedding recipe.

    Attributes:
        rows: rows to train (see ``ROWS``); ``score_fusion`` needs ``text_context_le`` and
            ``speech_le``.
        text_k: keywords per class for ``L_t`` (paper: 9).
        speech_k: units per class for ``L_s`` (paper: 100).
        units: k-means units learned on the training frames.
        text_init, speech_init: how the label embeddings start (A5: ``tfidf``; B5: ``codebook``).
        compare_inits: on the analysis folds, also train the other initialisations of the label
            embeddings (A3-A4, B3-B4) and compare them with the rows' own.
        context: previous utterances of the dialog prepended to the text (paper: 10).
        context_tokens: tokens kept of the text with its context (paper: 150); the oldest go first.
        dim: the projection both modalities are mapped into.
        speech_subsample: average every n speech frames before the model.
        mu: loss weights (L_m, L_c, L_g^t, L_g^s); paper: 1, 0.5, 0.2, 0.2.
        dropout: dropout on the projections.
        k_grid: values of ``speech_k`` for the Figure 3 grid (first fold; empty: none).
        analysis_folds: the K grid and the attention plot run on this many folds.
        speech_units: where the speech units come from: ``quantizer`` (the wav2vec 2.0 checkpoint's
            own quantizer codes and codevectors), ``kmeans`` (k-means of the training frames,
            ``units`` of them) or ``auto`` (the quantizer where the speech encoder has one).
        pretrain_steps: with ``finetune``, first continue the wav2vec 2.0 speech encoder's
            self-supervised pre-training on the fold's training audio for this many steps (the
            paper's "2nd stage"; 0: off), at ``pretrain_lr`` with ``pretrain_batch_size``
            utterances (5-second crops) per step; the checkpoint is kept in the fold folder.
        finetune: fine-tune the encoders (transformers models) inside the rows' models; the
            stored frozen features still give the standardisation and the label embeddings'
            starting points. Encoders that are not transformers models stay frozen.
        speech_lr_scale, text_lr_scale: the fine-tuned encoders' learning rates relative to
            ``train.lr``.
    """

    rows: list[str] = field(default_factory=lambda: list(ROWS))
    text_k: int = 9
    speech_k: int = 100
    units: int = 500
    text_init: str = "tfidf"
    speech_init: str = "codebook"
    compare_inits: bool = True
    context: int = 10
    context_tokens: int = 150
    dim: int = 256
    speech_subsample: int = 1
    mu: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.2, 0.2])
    dropout: float = 0.1
    k_grid: list[int] = field(default_factory=lambda: [25, 50, 100, 200, 400])
    analysis_folds: int = 1
    speech_units: str = "auto"
    pretrain_steps: int = 0
    pretrain_lr: float = 5e-5
    pretrain_batch_size: int = 4
    finetune: bool = False
    speech_lr_scale: float = 0.02
    text_lr_scale: float = 0.1


# -- label embeddings ---------------------------------------------------------------------

def tfidf_top_k(docs_by_class: list[list[list]], k: int, stop: set | frozenset = frozenset()) -> list[list]:
    """Per class, the ``k`` terms with the highest TF-IDF.

    The term frequency is counted over all of a class's training items together; the inverse
    document frequency over the items (utterances) themselves, so a term every utterance has
    (a function word, the silence unit) scores low whatever its count.

    Args:
        docs_by_class: per class, its items, each a list of terms (words or unit ids).
        k: terms per class.
        stop: terms never chosen (stop words).

    Returns:
        Per class, its top terms, best first (ties broken by the term's sort order).
    """
    items = [set(d) for docs in docs_by_class for d in docs]
    vocab = sorted({t for d in items for t in d} - set(stop), key=str)
    index = {t: i for i, t in enumerate(vocab)}
    df = np.zeros(len(vocab))
    for d in items:
        for t in d:
            if t in index:
                df[index[t]] += 1
    idf = np.log((1 + len(items)) / (1 + df)) + 1.0
    out = []
    for docs in docs_by_class:
        tf = np.zeros(len(vocab))
        n = 0
        for d in docs:
            for t in d:
                n += 1
                if t in index:
                    tf[index[t]] += 1
        score = tf / max(n, 1) * idf
        order = np.argsort(-score, kind="stable")
        out.append([vocab[i] for i in order[:k] if score[i] > 0])
    return out


def words(text) -> list[str]:
    """Lower-case word tokens of a transcript (punctuation stripped)."""
    import re

    return re.findall(r"[a-z']+", str(text).lower())


def kmeans_units(frames: np.ndarray, units: int, seed: int = 0):
    """k-means on ``(n, D)`` frames; returns the fitted model (its ``cluster_centers_``)."""
    from sklearn.cluster import MiniBatchKMeans

    units = min(units, len(frames))
    return MiniBatchKMeans(n_clusters=units, random_state=seed, n_init=3, batch_size=2048).fit(frames)


# -- model -------------------------------------------------------------------------------

class Modality(nn.Module):
    """Stored features ``(B, 1, T, D)`` (or the last hidden state of a fine-tuned ``encoder``)
    -> standardised, frame-averaged -> projection ``(B, T', d)``; optional label embeddings
    ``L`` (c, D) in the input space, projected the same way."""

    def __init__(self, dim_in: int, dim: int, *, num_classes: int, subsample: int = 1, dropout: float = 0.1,
                 labels: torch.Tensor | None = None, encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.norm = Standardize(1, dim_in)
        self.subsample = subsample
        self.proj = nn.Sequential(nn.Linear(dim_in, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.labels = nn.Parameter(labels.clone().float()) if labels is not None else None
        # label embeddings of another width (wav2vec 2.0 codevectors) are mapped into the input space first
        self.label_in = nn.Linear(labels.shape[1], dim_in) if labels is not None and labels.shape[1] != dim_in \
            else None

    def frames(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised, averaged input frames ``(B, T', D)`` (what the units are learned on)."""
        h = self.norm(x[:, -1:], mask)[:, 0]
        return average_frames(h, mask, self.subsample)

    def inputs(self, batch: Batch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, T, D)`` and its mask: the stored features, or the fine-tuned encoder's last
        hidden state from the batch's waveforms (``wave``) or token ids (``tokens``)."""
        if self.encoder is None:
            return (batch.audio, batch.audio_mask) if kind == "audio" else (batch.text, batch.text_mask)
        if kind == "audio":
            hidden, frames = self.encoder(batch.extras["wave"], batch.extras["wave_len"])
            mask = torch.arange(hidden.shape[2], device=hidden.device)[None] < frames[:, None]
        else:
            hidden, mask = self.encoder(batch.extras["tokens"], batch.extras["tokens_len"])
        return hidden[:, -1:], mask

    def forward(self, batch: Batch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        h, mask = self.frames(*self.inputs(batch, kind))
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


def attention_constraint(a_l: torch.Tensor, a_r: torch.Tensor, t_mask: torch.Tensor,
                         s_mask: torch.Tensor) -> torch.Tensor:
    """``L_c``: mean squared difference of ``A_l`` and ``A_r`` over real (token, frame) pairs."""
    pair = (t_mask[:, :, None] & s_mask[:, None, :]).to(a_r.dtype)
    return (((a_l - a_r) ** 2) * pair).sum() / pair.sum().clamp(min=1.0)


class LEMER(nn.Module):
    """One row: text-only, speech-only (each with or without label embeddings) or a fusion.

    ``fusion``: ``None`` (unimodal), ``constraint`` (LE-MER: ``A_r`` fuses, ``L_c`` pulls it
    towards ``A_l``), ``sum`` (``A_r + A_l`` fuses), ``al`` (``A_l`` alone), ``ar`` (``A_r`` alone).
    """

    def __init__(self, *, text: tuple[int, int] | None, speech: tuple[int, int] | None, num_classes: int,
                 cfg: LabelEmbeddingConfig, fusion: str | None = None, text_labels=None, speech_labels=None,
                 text_model: nn.Module | None = None, speech_model: nn.Module | None = None):
        super().__init__()
        mk = dict(num_classes=num_classes, dropout=cfg.dropout)
        self.text = Modality(text[1], cfg.dim, labels=text_labels, encoder=text_model, **mk) if text else None
        self.speech = Modality(speech[1], cfg.dim, subsample=cfg.speech_subsample, labels=speech_labels,
                               encoder=speech_model, **mk) if speech else None
        self.lr_scales = {"text": cfg.text_lr_scale, "audio": cfg.speech_lr_scale}
        self.fusion = fusion
        if fusion is not None:
            self.w = nn.Parameter(torch.eye(cfg.dim) + 0.01 * torch.randn(cfg.dim, cfg.dim))
        # frozen token features cannot tell the utterance from its context (a fine-tuned BERT
        # learns to): the utterance's own tokens and its context are max-pooled separately
        width = cfg.dim * (2 if fusion else 1) + (cfg.dim if text else 0)
        self.head = nn.Linear(width, num_classes)
        self.mu = list(cfg.mu)

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
        if self.fusion is None:
            v = masked_max(ht, own) if ht is not None else masked_max(hs, s_mask)
        else:
            a_r = cross_attention(ht, hs, self.w, t_mask, s_mask) if self.fusion != "al" else None
            a_l = extras["g_t"] @ extras["g_s"].transpose(1, 2) if "g_t" in extras and "g_s" in extras else None
            if self.fusion in ("sum", "al") and a_l is None:
                raise ValueError(f"fusion {self.fusion!r} needs label embeddings for both modalities")
            attn = a_l if self.fusion == "al" else (a_r + a_l if self.fusion == "sum" else a_r)
            aligned = attn @ hs  # (B, Tt, d): H_s'
            v = masked_max(torch.cat([ht, aligned], dim=-1), own)
            extras.update(a_r=a_r, a_l=a_l, t_mask=t_mask, s_mask=s_mask)
        if ht is not None:
            v = torch.cat([v, masked_max(ht, t_mask & ~own)], dim=-1)
        if "g_t" in extras:  # mean over the sequence: class scores
            extras["p_g_t"] = masked_mean(extras["g_t"], t_mask)
        if "g_s" in extras:
            extras["p_g_s"] = masked_mean(extras["g_s"], s_mask)
        return Output(logits=self.head(v), embedding=v, extras=extras)

    def param_groups(self):
        """Fine-tuned encoders learn at their own share of the rate (paper: speech 1e-6, text 5e-6)."""
        groups, taken = [], set()
        for kind, mod in (("text", self.text), ("audio", self.speech)):
            if mod is not None and mod.encoder is not None:
                params = list(mod.encoder.parameters())
                groups.append((params, self.lr_scales[kind]))
                taken |= {id(p) for p in params}
        return [([p for p in self.parameters() if id(p) not in taken], 1.0)] + groups

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        mu1, mu2, mu3, mu4 = self.mu
        parts = {"m": masked_cross_entropy(out.logits, batch.category)}
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


# -- running ------------------------------------------------------------------------------

def context_manifest(manifest, n: int, max_tokens: int, tokenizer=None):
    """A copy of ``manifest`` whose transcripts are the up to ``n`` previous utterances of the
    same dialog (in turn order; the utterance itself not included), the oldest dropped first
    while they and the utterance together exceed ``max_tokens`` words (tokens with a
    ``tokenizer``). Utterances without a dialog or a previous turn get no transcript."""
    import pandas as pd

    df = manifest.df.copy()
    count = (lambda s: len(tokenizer.tokenize(s))) if tokenizer is not None else (lambda s: len(s.split()))
    out = pd.Series([None] * len(df), index=df.index, dtype=object)
    has = df["dialog"].notna() & df["turn_index"].notna() & df["transcript"].notna()
    for _, g in df[has].sort_values("turn_index").groupby("dialog", sort=False):
        texts = g["transcript"].astype(str).tolist()
        for j, idx in enumerate(g.index):
            budget = max_tokens - count(texts[j])
            parts: list[str] = []
            for prev in reversed(texts[max(0, j - n):j]):
                if count(" ".join([prev] + parts)) > budget:
                    break
                parts.insert(0, prev)
            out[idx] = " ".join(parts) if parts else None
    df["transcript"] = out
    return type(manifest)(df)


class ContextSource:
    """Token features of the previous turns followed by the utterance's own (each encoded on its
    own by the frozen encoder, so the utterance's tokens stay what they are without context);
    the same interface as :class:`~sermo.training.datamodule.FeatureSource`."""

    def __init__(self, own, previous):
        self.own, self.previous = own, previous
        for attr in ("name", "modality", "identity", "num_layers", "dim", "frame_rate", "report"):
            setattr(self, attr, getattr(own, attr))

    def has(self, uid: str) -> bool:
        return self.own.has(uid)

    def get(self, uid: str) -> np.ndarray:
        own = self.own.get(uid)
        if not self.previous.has(uid):
            return own
        return np.concatenate([self.previous.get(uid), own], axis=1)

    def length(self, uid: str) -> int:
        return self.own.length(uid) + (self.previous.length(uid) if self.previous.has(uid) else 0)

    def own_length(self, uid: str) -> np.int64:
        """Tokens of the utterance itself (the last ones of :meth:`get`)."""
        return np.int64(self.own.length(uid))


class _Fold:
    """The label embeddings and units of one fold, built from its training split."""

    def __init__(self, ctx):
        self.ctx, self.cfg = ctx, ctx.cfg.model
        self.space = ctx.run.space
        self._context = None
        self._previous = None  # the manifest of the previous turns' text
        self._units = None
        self._trainable: dict = {}
        self._checkpoint = None  # the continued pre-training's checkpoint folder

    def context_source(self):
        from sermo.training.datamodule import FeatureSource

        if self._context is None:
            d = self.ctx.cfg.data
            from sermo.encoders import get_encoder

            # counted in the encoder's tokens, four kept for the special tokens of the two parts,
            # so that the batch's max_tokens never cuts the utterance itself
            manifest = context_manifest(self.ctx.run.manifest, self.cfg.context,
                                        min(self.cfg.context_tokens, d.max_tokens) - 4,
                                        get_encoder(d.text_encoder).tokenizer)
            previous = FeatureSource(d.text_encoder, d.text_layers, manifest, self.ctx.run.store,
                                     progress=self.ctx.run.progress)
            self._previous = manifest
            self._context = ContextSource(self.ctx.run.text, previous)
        return self._context

    def trainable(self, kind: str):
        """A fresh fine-tunable copy of the recipe's speech or text encoder with ``finetune``
        (``None`` when not fine-tuning or when the encoder is not a transformers model)."""
        import copy

        if not self.cfg.finetune:
            return None
        if kind not in self._trainable:
            if kind == "audio":
                self._trainable[kind] = self.ctx.trainable_speech_encoder(self.speech_checkpoint())
            else:
                self._trainable[kind] = self.ctx.trainable_text_encoder()
        enc, _ = self._trainable[kind]
        if enc is None:
            return None
        enc = copy.deepcopy(enc)
        enc.set_trainable_layers("all")
        return enc

    def speech_checkpoint(self) -> str:
        """The speech encoder the rows fine-tune: the recipe's, or (``pretrain_steps``) its
        continued pre-training on this fold's training audio."""
        from sermo.encoders.registry import checkpoint_folder
        from sermo.encoders.speech import continue_pretraining

        name = self.ctx.cfg.data.audio_encoder
        if self.cfg.pretrain_steps <= 0:
            return name
        if self._checkpoint is None:
            import warnings

            from sermo.encoders.base import EncoderError

            wave = self.ctx.waveforms()["wave"]
            waves = [(lambda u=u: wave(u)) for u in self.ctx.fold.train]
            try:
                self._checkpoint = continue_pretraining(
                    checkpoint_folder(name)[1], waves, self.ctx.folder / "speech_2nd_stage",
                    steps=self.cfg.pretrain_steps, lr=self.cfg.pretrain_lr, batch_size=self.cfg.pretrain_batch_size,
                    seed=self.ctx.cfg.train.seed, progress=self.ctx.run.progress)
            except EncoderError as exc:  # no pre-training head (HuBERT, a CTC checkpoint): the stage is optional
                warnings.warn(f"continued pre-training skipped: {exc}", stacklevel=2)
                self._checkpoint = name
        return self._checkpoint

    def extras(self, text_src, text_model, speech_model) -> dict:
        """Dataset extras of a row: waveforms and token ids for fine-tuned encoders, and how many
        of the last tokens are the utterance's own when the text carries its dialog context."""
        extras: dict = {}
        if speech_model is not None:
            extras.update(self.ctx.waveforms())
        with_context = isinstance(text_src, ContextSource)
        if text_model is not None:
            own = self.ctx.transcripts()
            previous = self.ctx.transcripts(self._previous) if with_context else {}
            joined = {u: " ".join(t for t in (previous.get(u), own.get(u)) if t) for u in own}
            extras["tokens"] = lambda u: text_model.tokenize(joined[u])
            if with_context:  # the utterance's tokens and the final special token
                extras["t_current"] = lambda u: np.int64(len(text_model.tokenize(str(own[u]))) - 1)
        elif with_context:
            extras["t_current"] = text_src.own_length
        return extras

    def train_by_class(self) -> dict[int, list[str]]:
        labels = self.ctx.run.labels.category
        out: dict[int, list[str]] = {c: [] for c in range(self.space.num_classes)}
        for u in self.ctx.fold.train:
            if labels.get(u, -1) >= 0:
                out[labels[u]].append(u)
        return out

    def text_labels(self, init: str, src) -> tuple[torch.Tensor, dict]:
        """``L_t`` in the (standardised) feature space: ``(c, D)`` and what it was made from."""
        from sermo.encoders import get_encoder

        d = self.ctx.cfg.data
        mean, std = self.ctx.feature_stats("text", src)
        if init == "random":
            return torch.randn(self.space.num_classes, src.dim) * 0.5, {"init": "random"}
        if init == "label_words":
            terms = [[c] for c in self.space.classes]
        else:
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            df = self.ctx.run.manifest.df.set_index("id")
            docs = [[words(df.at[u, "transcript"]) for u in ids] for _, ids in sorted(self.train_by_class().items())]
            terms = tfidf_top_k(docs, self.cfg.text_k, ENGLISH_STOP_WORDS)
        enc = get_encoder(d.text_encoder, layers=d.text_layers)
        rows = []
        for ws in terms:
            outs = enc.encode_batch(list(ws) or ["the"])
            toks = [o.hidden[-1][np.asarray(o.word_ids) >= 0].astype(np.float32) for o in outs]
            emb = np.concatenate([t for t in toks if len(t)]).mean(0)
            rows.append((emb - mean[-1]) / np.maximum(std[-1], 1e-5))
        return torch.tensor(np.stack(rows)), {"init": init, "keywords": {c: list(map(str, ws)) for c, ws in
                                                                        zip(self.space.classes, terms)}}

    def units(self, src):
        """Each training utterance's speech unit sequence, a function from unit ids to their mean
        embedding, and what the units are: the encoder's wav2vec 2.0 quantizer (``speech_units``
        ``quantizer``, or ``auto`` where the encoder has one) or k-means of the training frames."""
        if self._units is not None:
            return self._units
        why = "asked for" if self.cfg.speech_units == "kmeans" else None
        if self.cfg.speech_units in ("auto", "quantizer"):
            quantizer, why = self._quantizer()
            if quantizer is not None:
                seqs = {u: q for u, q in self._quantizer_units(quantizer).items() if u in set(self.ctx.fold.train)}
                self._units = (seqs, lambda ids: quantizer.vectors(ids).mean(0),
                               f"wav2vec 2.0 quantizer ({quantizer.groups} x {quantizer.entries} codes)")
                return self._units
            if self.cfg.speech_units == "quantizer":
                raise ValueError(f"model.speech_units is quantizer but {why}")
        elif self.cfg.speech_units != "kmeans":
            raise ValueError(f"model.speech_units {self.cfg.speech_units!r}; known: auto, quantizer, kmeans")
        probe = Modality(src.dim, 8, num_classes=1, subsample=self.cfg.speech_subsample)
        probe.norm.set(*[s[-1:] for s in self.ctx.feature_stats("audio", src)])
        rng = np.random.default_rng(self.ctx.cfg.train.seed)
        frames: dict[str, np.ndarray] = {}
        for u in self.ctx.fold.train:
            if not src.has(u):
                continue
            x = torch.from_numpy(np.asarray(src.get(u), dtype=np.float32)[-1:][None])
            h, _ = probe.frames(x, torch.ones(1, x.shape[2], dtype=torch.bool))
            frames[u] = h[0].numpy()
        pool = np.concatenate(list(frames.values()))
        if len(pool) > 40000:
            pool = pool[rng.choice(len(pool), 40000, replace=False)]
        km = kmeans_units(pool, self.cfg.units, seed=self.ctx.cfg.train.seed)
        seqs = {u: km.predict(f) for u, f in frames.items()}
        self._units = (seqs, lambda ids: km.cluster_centers_[list(ids)].mean(0),
                       f"k-means ({len(km.cluster_centers_)}) of the training frames ({why})")
        return self._units

    def _quantizer(self):
        """The speech encoder's quantizer, or ``None`` and why not."""
        from sermo.encoders.base import EncoderError
        from sermo.encoders.registry import checkpoint_folder
        from sermo.encoders.speech import SpeechQuantizer

        try:
            kind, folder = checkpoint_folder(self.ctx.cfg.data.audio_encoder)
            if kind != "speech":
                return None, "the speech encoder is not a transformers speech model"
            return SpeechQuantizer(folder), ""
        except (EncoderError, OSError, ValueError) as exc:
            return None, f"the speech encoder has no quantizer: {exc}"

    def _quantizer_units(self, quantizer) -> dict[str, np.ndarray]:
        """Unit sequences of every labelled utterance, computed once per run (audio only)."""
        from tqdm import tqdm

        from sermo.data.audio import AudioError

        run = self.ctx.run
        cached = run.shared.get("label_embedding:quantizer_units")
        if cached is None:
            wave = self.ctx.waveforms(max_seconds=float(self.ctx.cfg.data.max_frames) / 50.0)["wave"]
            cached = {}
            ids = [u for u, c in run.labels.category.items() if c >= 0]
            for u in tqdm(ids, desc="quantizer units", unit="utt", disable=not run.progress):
                try:
                    cached[u] = quantizer.units(wave(u))
                except AudioError:
                    continue  # unreadable audio: the feature extraction reported it already
            run.shared["label_embedding:quantizer_units"] = cached
        return cached

    def speech_labels(self, init: str, src, k: int, text_labels: torch.Tensor | None = None):
        """``L_s``: ``(c, D)`` in the standardised speech feature space, and its description."""
        if init == "random":
            return torch.randn(self.space.num_classes, src.dim) * 0.5, {"init": "random"}
        if init == "text":
            if text_labels is None or text_labels.shape[1] != src.dim:
                return None, {"init": "text", "skipped": "the text and speech encoders have different widths "
                              f"({None if text_labels is None else text_labels.shape[1]} vs {src.dim}): a text "
                              "embedding cannot start a speech label embedding"}
            return text_labels.clone(), {"init": "text"}
        seqs, embed, what = self.units(src)
        docs = [[[int(x) for x in seqs[u]] for u in ids if u in seqs]
                for _, ids in sorted(self.train_by_class().items())]
        top = tfidf_top_k(docs, k)
        everything = sorted({int(x) for d in docs for item in d for x in item})
        emb = np.stack([embed(t if t else everything) for t in top])
        return torch.tensor(emb, dtype=torch.float32), {"init": "codebook", "units": what, "k": k,
                                                        "top_units": [list(map(int, t[:10])) for t in top]}


def run_fold(ctx) -> list:
    """The rows of one fold, then (on the first folds) the K grid and the attention plot data."""
    import re

    from sermo.training.fold import aligned_probs, softmax

    cfg: LabelEmbeddingConfig = ctx.cfg.model
    unknown = [r for r in cfg.rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown label_embedding row(s) {unknown}; known: {', '.join(ROWS)}")
    if cfg.text_init not in TEXT_INITS or cfg.speech_init not in SPEECH_INITS:
        raise ValueError(f"text_init must be one of {TEXT_INITS}, speech_init one of {SPEECH_INITS}")
    fold = _Fold(ctx)
    n = ctx.num_classes
    audio = ctx.run.audio
    plain_text = ctx.run.text
    needs_context = any(r != "text" and r not in ("speech", "speech_le") for r in cfg.rows)
    context = fold.context_source() if needs_context else None
    results, models, info, row_preds = [], {}, {}, {}

    def train(row, *, text_src=None, speech_src=None, fusion=None, t_init=None, s_init=None, s_k=None):
        lt = ls = None
        if t_init:
            lt, info[f"{row}:text_labels"] = fold.text_labels(t_init, text_src)
        if s_init:
            seed_text = fold.text_labels("label_words", text_src or context or plain_text)[0] \
                if s_init == "text" else None
            ls, desc = fold.speech_labels(s_init, speech_src, s_k or cfg.speech_k, seed_text)
            info[f"{row}:speech_labels"] = desc
            if ls is None:
                return None, desc["skipped"]
        speech_model = fold.trainable("audio") if speech_src is not None else None
        text_model = fold.trainable("text") if text_src is not None else None
        ctx.seed(row)
        model = LEMER(text=(1, text_src.dim) if text_src else None, speech=(1, speech_src.dim) if speech_src else None,
                      num_classes=n, cfg=cfg, fusion=fusion, text_labels=lt, speech_labels=ls,
                      text_model=text_model, speech_model=speech_model)
        if model.text is not None:
            model.text.norm.set(*[s[-1:] for s in ctx.feature_stats("text", text_src)])
        if model.speech is not None:
            model.speech.norm.set(*[s[-1:] for s in ctx.feature_stats("audio", speech_src)])
        extras = fold.extras(text_src, text_model, speech_model)

        def data(split):
            return ctx.dataset(split, audio_source=None if speech_model is not None else speech_src,
                               text_source=None if text_model is not None else text_src, extras=extras)

        model = ctx.fit(model, re.sub(r"[^A-Za-z0-9_.-]", "_", row), data("train"), data("valid"))
        return (model, data), ""

    plans = []
    for row in cfg.rows:
        if row == "text":
            plans.append((row, dict(text_src=plain_text)))
        elif row == "text_context":
            plans.append((row, dict(text_src=context)))
        elif row == "text_context_le":
            plans.append((row, dict(text_src=context, t_init=cfg.text_init)))
        elif row == "speech":
            plans.append((row, dict(speech_src=audio)))
        elif row == "speech_le":
            plans.append((row, dict(speech_src=audio, s_init=cfg.speech_init)))
        elif row in FUSION:
            plans.append((row, dict(text_src=context, speech_src=audio, fusion=FUSION[row], t_init=cfg.text_init,
                                    s_init=cfg.speech_init)))
    for row, kw in plans:
        mods = tuple(m for m, k in (("text", "text_src"), ("audio", "speech_src")) if kw.get(k) is not None)
        trained, why = train(row, **kw)
        if trained is None:
            results.append(ctx.skipped_row(row, mods, why))
            continue
        model, data = trained
        models[row] = (model, data)
        extra = {k.split(":", 1)[1]: v for k, v in info.items() if k.startswith(row + ":")}
        d = ctx.cfg.data
        tuned = {"speech_model": fold.speech_checkpoint() if model.speech is not None
                 and model.speech.encoder is not None else None, "text_model": d.text_encoder if model.text is not None and model.text.encoder is not None
                 else None}
        label_dims = {k: int(m.labels.shape[1]) for k, m in (("text", model.text), ("audio", model.speech))
                      if m is not None and m.labels is not None}
        row_preds[row] = ctx.predict(model, data)
        results.append(ctx.row(row, mods, model, row_preds[row], info=extra,
                               inputs={"text": kw.get("text_src"), "audio": kw.get("speech_src"), **tuned,
                                       "label_dims": label_dims or None}))
    if "score_fusion" in cfg.rows:
        if not {"text_context_le", "speech_le"} <= set(row_preds):
            results.append(ctx.skipped_row("score_fusion", ("text", "audio"),
                                           "needs the rows text_context_le and speech_le"))
        else:
            preds = {}  # the sum of the two models' logits: softmax(log p_t + log p_s) is the same
            for test in ctx.fold.tests:
                ids, (p_t, p_s) = aligned_probs(*(row_preds[r][test] for r in ("text_context_le", "speech_le")))
                preds[test] = {"ids": ids, "dims": None, "probs": softmax(np.log(np.maximum(p_t, 1e-30)) + np.log(np.maximum(p_s, 1e-30)))}
            results.append(ctx.row("score_fusion", ("text", "audio"), nn.Identity(), preds, bundle=False,
                                   info={"of": ["text_context_le", "speech_le"]}))
    digits = re.sub(r"\D", "", ctx.fold.name)
    if (int(digits) if digits else 1) <= cfg.analysis_folds:
        analysis = ctx.folder / "analysis"
        analysis.mkdir(exist_ok=True)
        if cfg.k_grid and audio is not None:
            write_json_atomic(analysis / "k_grid.json", k_grid(ctx, fold, train, audio))
        if cfg.compare_inits:
            write_json_atomic(analysis / "inits.json", compare_inits(ctx, train, models, context, audio))
        if "le_mer" in models:
            write_json_atomic(analysis / "attention.json", attention_example(ctx, *models["le_mer"], fold))
    return results


def test_scores(ctx, model, data) -> dict:
    """UA and WA of a model on the fold's first test set (for the analyses)."""
    from sermo.evaluation.metrics import classification_metrics

    test = next(iter(ctx.fold.tests))
    pred = ctx.predict(model, data, [test])[test]
    truth = np.array([ctx.run.labels.category[u] for u in pred["ids"]])
    m = classification_metrics(truth, pred["probs"].argmax(1))
    return {"ua": m["ua"], "wa": m["wa"]}


def k_grid(ctx, fold: _Fold, train, audio) -> list[dict]:
    """Figure 3: ``speech_le`` with each K of the grid, UA and WA on the fold's test set."""
    out = []
    for k in ctx.cfg.model.k_grid:
        trained, _ = train(f"kgrid_speech_le_k{k}", speech_src=audio, s_init="codebook", s_k=k)
        out.append({"k": k, **test_scores(ctx, *trained)})
    return out


def compare_inits(ctx, train, models: dict, context, audio) -> list[dict]:
    """Table 1 A3-A5 and B3-B5: ``text_context_le`` and ``speech_le`` with each initialisation of
    their label embedding (the rows' own initialisation is the row itself), on the fold's test set."""
    cfg: LabelEmbeddingConfig = ctx.cfg.model
    out = []
    for row, inits, default, key in (("text_context_le", TEXT_INITS, cfg.text_init, "t_init"),
                                     ("speech_le", SPEECH_INITS, cfg.speech_init, "s_init")):
        src = dict(text_src=context) if key == "t_init" else dict(speech_src=audio)
        if (src.get("text_src") or src.get("speech_src")) is None:
            continue
        for init in inits:
            if init == default and row in models:
                out.append({"row": row, "init": init, **test_scores(ctx, *models[row])})
                continue
            trained, why = train(f"init_{row}_{init}", **src, **{key: init})
            out.append({"row": row, "init": init, **(test_scores(ctx, *trained) if trained else {"skipped": why})})
    return out


@torch.no_grad()
def attention_example(ctx, model: LEMER, data, fold: _Fold) -> dict:
    """Figure 4 data: for one test utterance (the first with dialog context), the class-averaged
    ``G_t`` per token (with the token strings) and ``G_s`` per frame."""
    from sermo.encoders import get_encoder
    from sermo.training.datamodule import collate

    model.eval()
    ds = data(next(iter(ctx.fold.tests)))
    own = ctx.transcripts()
    previous = ctx.transcripts(fold._previous) if fold._previous is not None else {}
    i = next((k for k, u in enumerate(ds.ids) if previous.get(u)), 0)
    batch = collate([ds[i]])
    out = model(batch)
    uid = batch.ids[0]
    g_t = out.extras["g_t"][0][out.extras["t_mask"][0]].mean(-1).tolist()
    g_s = out.extras["g_s"][0][out.extras["s_mask"][0]].mean(-1).tolist()
    tok = get_encoder(ctx.cfg.data.text_encoder).tokenizer

    def pieces(text):
        if not text:
            return []
        return tok.convert_ids_to_tokens(tok(str(text).split(), is_split_into_words=True)["input_ids"])

    tokens = pieces(previous.get(uid)) + pieces(own.get(uid))
    return {"id": uid, "transcript": own.get(uid), "context": previous.get(uid),
            "tokens": tokens if len(tokens) == len(g_t) else None, "own_tokens": len(pieces(own.get(uid))),
            "g_t": g_t, "g_s": g_s, "frame_seconds": model.speech.subsample / (ctx.run.audio.frame_rate or 100.0)}


def finish(out: Path, results: dict) -> str:
    """The K grid (Figure 3), the attention example (Figure 4) and what the label embeddings hold."""
    import matplotlib.pyplot as plt

    from sermo.evaluation.plots import save_figure
    from sermo.evaluation.report import markdown_table

    sections = []
    grids = [json.loads(p.read_text()) for p in sorted(out.glob("*/analysis/k_grid.json"))]
    if grids:
        ks = [g["k"] for g in grids[0]]
        ua = [float(np.mean([g[i]["ua"] for g in grids])) for i in range(len(ks))]
        wa = [float(np.mean([g[i]["wa"] for g in grids])) for i in range(len(ks))]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(ks, ua, marker="o", label="UA")
        ax.plot(ks, wa, marker="s", label="WA")
        ax.set_xscale("log")
        ax.set_xlabel("K (units per class in L_s)")
        ax.set_ylabel("accuracy")
        ax.legend()
        path = save_figure(fig, out / "plots" / "k_grid.png")
        sections.append("## K for the speech label embedding (Figure 3)\n\n`speech_le` with each K, on the test "
                        "set of the first fold(s).\n\n" + markdown_table([{"K": k, "UA": u, "WA": w} for k, u, w in
                                                                          zip(ks, ua, wa)])
                        + f"\n![K grid]({path.relative_to(out)})\n")
    inits = [json.loads(p.read_text()) for p in sorted(out.glob("*/analysis/inits.json"))]
    if inits:
        names = {"tfidf": "TF-IDF keywords (A5)", "label_words": "label word (A4)", "random": "random (A3/B3)",
                 "codebook": "speech units (B5)", "text": "text embedding of the label (B4)"}
        table = []
        for entry in inits[0]:
            same = [e for run in inits for e in run if e["row"] == entry["row"] and e["init"] == entry["init"]]
            scored = [e for e in same if "ua" in e]
            table.append({"row": entry["row"], "initialisation": names.get(entry["init"], entry["init"]),
                          "UA": float(np.mean([e["ua"] for e in scored])) if scored else "-",
                          "WA": float(np.mean([e["wa"] for e in scored])) if scored else "-",
                          "note": "" if scored else entry.get("skipped", "")})
        sections.append("## Label embedding initialisations (Table 1, A3-A5 and B3-B5)\n\nOn the test set of the "
                        "first fold(s).\n\n" + markdown_table(table))
    att = sorted(out.glob("*/analysis/attention.json"))
    if att:
        ex = json.loads(att[0].read_text())
        fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 0.18 * len(ex["g_t"])), 5.5))
        n_own = ex.get("own_tokens") or 0
        colors = ["tab:gray"] * (len(ex["g_t"]) - n_own) + ["tab:blue"] * n_own
        axes[0].bar(range(len(ex["g_t"])), ex["g_t"], color=colors)
        if ex.get("tokens"):
            axes[0].set_xticks(range(len(ex["tokens"])), ex["tokens"], rotation=90, fontsize=7)
        axes[0].set_title("class-averaged G_t per token (grey: the dialog context, blue: the utterance)")
        t = np.arange(len(ex["g_s"])) * ex["frame_seconds"]
        axes[1].plot(t, ex["g_s"])
        axes[1].set_title("class-averaged G_s per frame")
        axes[1].set_xlabel("seconds")
        path = save_figure(fig, out / "plots" / "attention.png")
        sections.append(f"## Label-token and label-frame scores (Figure 4)\n\nUtterance `{ex['id']}`"
                        + (f": \"{ex['transcript'][-200:]}\"" if ex.get("transcript") else "")
                        + f"\n\n![attention]({path.relative_to(out)})\n")
    row = next((r for r in results["rows"] if r["name"] == "text_context_le" and r.get("info")), None)
    if row and row["info"][0].get("text_labels", {}).get("keywords"):
        kw = row["info"][0]["text_labels"]["keywords"]
        sections.append("## Keywords of the text label embeddings (first fold)\n\n"
                        + "\n".join(f"- {c}: {', '.join(ws)}" for c, ws in kw.items()) + "\n")
    row = next((r for r in results["rows"] if r["name"] == "speech_le" and r.get("info")), None)
    if row and row["info"][0].get("speech_labels", {}).get("units"):
        sections.append(f"Speech units (first fold): {row['info'][0]['speech_labels']['units']}.\n")
    return "\n".join(sections)


def build_model(row: str, cfg: LabelEmbeddingConfig, spec: dict) -> LEMER:
    """A row's model for a bundle (label embeddings are parameters: the weights restore them)."""
    base = row.split("_le_")[0] + ("_le" if "_le_" in row else "")
    text = spec.get("text") if base.startswith("text") or base in FUSION else None
    speech = spec.get("audio") if base.startswith("speech") or base in FUSION else None
    le_t = base.endswith("_le") and base.startswith("text") or base in FUSION
    le_s = base.endswith("_le") and base.startswith("speech") or base in FUSION
    c = int(spec["num_classes"])
    dims = spec.get("label_dims") or {}  # label embeddings of their own width (quantizer codevectors)
    from sermo.encoders.registry import checkpoint_folder
    from sermo.encoders.speech import SpeechSSL
    from sermo.encoders.text import TextSSL

    speech_model = SpeechSSL(checkpoint_folder(spec["speech_model"])[1]) if speech and spec.get("speech_model") else None
    text_model = TextSSL(checkpoint_folder(spec["text_model"])[1]) if text and spec.get("text_model") else None
    return LEMER(text=tuple(text) if text else None, speech=tuple(speech) if speech else None, num_classes=c,
                 cfg=cfg, fusion=FUSION.get(base), speech_model=speech_model, text_model=text_model,
                 text_labels=torch.zeros(c, dims.get("text", text[1] if text else 0)) if le_t and text else None,
                 speech_labels=torch.zeros(c, dims.get("audio", speech[1] if speech else 0)) if le_s and speech else None)


PAPER = {
    "iemocap": {  # Tables 1-3 (IEMOCAP 4 classes, 5-fold)
        "text": {"wa": 0.6734, "ua": 0.6766}, "text_context": {"wa": 0.7746, "ua": 0.7838},
        "text_context_le": {"wa": 0.7811, "ua": 0.7892}, "speech": {"wa": 0.7392, "ua": 0.7448},
        "speech_le": {"wa": 0.7674, "ua": 0.7774}, "score_fusion": {"wa": 0.8132, "ua": 0.8218},
        "le_mer": {"wa": 0.8240, "ua": 0.8311}, "fusion_ar_plus_al": {"wa": 0.8239, "ua": 0.8275},
        "fusion_al_only": {"wa": 0.8129, "ua": 0.8137}, "fusion_ar_only": {"wa": 0.8108, "ua": 0.8168},
    },
}

register(SystemDef(
    name="label_embedding", config_cls=LabelEmbeddingConfig, run_fold=run_fold, build_model=build_model,
    paper=PAPER, finish=finish,
    title="LE-MER: label embeddings and label-guided cross-attention (Wang et al., Interspeech 2023)",
))
