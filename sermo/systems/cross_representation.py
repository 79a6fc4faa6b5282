"""``cross_representation``: speech features to mel spectrogram through a bottleneck, a CNN text
model, score fusion and a speaker-identification probe (paper 004).

Makiuchi, Uto, Shinoda, ASRU 2021. Speech: the encoder's hidden states are averaged with
learned weights normalised by their sum (Eq. 1), concatenated frame by frame with the
speaker's Resemblyzer embedding, passed through ConvNorm layers and BLSTMs of ``d`` units per
direction and downsampled by ``f`` (AutoVC: the forward half of every ``f``-th frame's output
at the end of its block, the backward half at its start). The decoder repeats each code ``f``
times and, with the speaker embedding and a phone encoder's output (one-hot phone ids from
forced alignment), reconstructs the 80-bin mel spectrogram (LSTM, ConvNorm layers, LSTMs,
linear 80, postnet); a classifier on the flattened codes gives the emotion.
``L = L_r1 + L_r2 + L_e``. Training uses random 96-frame crops; inference averages the class
probabilities of consecutive 96-frame chunks (the last zero-padded).

Text: a CNN over the token features of a frozen transformer (special tokens left out),
max-pooled, linear. Fusion: ``p_f = w1 p_s + w2 p_t`` with ``(w1, w2)`` picked on validation.

The phones only feed the decoder and the mel spectrogram is only a target, so a trained model
predicts from the speech features and a speaker embedding alone; new audio without a known
speaker uses its own utterance's embedding.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sermo.data.batch import Batch
from sermo.data.io import write_json_atomic
from sermo.nn.layers import LayerWeighting, Standardize, mlp
from sermo.nn.losses import masked_cross_entropy
from sermo.nn.pooling import masked_max
from sermo.systems import register
from sermo.systems.base import Output, SystemDef

ROWS = ("speech_small", "speech_large", "speech_mel_input", "text", "fusion")
SPEECH_ROWS = {"speech_small": ("small", "features"), "speech_large": ("large", "features"),
               "speech_mel_input": ("small", "mel")}
NUM_PHONES = 128
SPEAKER_DIM = 256
MEL_BINS = 80


@dataclass
class CrossRepresentationConfig:
    """Model section of the cross_representation recipe.

    Attributes:
        rows: rows to train (see ``ROWS``); ``fusion`` needs ``text`` and ``fusion_speech``.
        bottlenecks: ``name -> [d, f]``: BLSTM units per direction and downsampling factor
            (paper: small 8, 48; large 128, 2).
        segment: frames per training crop and per inference chunk (paper: 96).
        speech_subsample: average every n input frames first (the mel target follows).
        mel_encoder: the encoder whose output is the reconstruction target and the input of
            ``speech_mel_input`` (80-bin log-mel).
        channels, encoder_convs, encoder_lstm_layers, kernel: the encoder's ConvNorm layers and BLSTMs.
        decoder_lstm1, decoder_convs, decoder_lstm2, decoder_lstm2_layers: the decoder.
        postnet_convs, postnet_channels: the postnet.
        phone_dim: the phone encoder's output width.
        classifier: hidden widths of the emotion classifier on the flattened codes.
        dropout: dropout in the classifier and the text CNN.
        speaker_utterances: utterances averaged per speaker embedding (paper: 100).
        text_filters, text_kernel: the text CNN (one ConvNorm layer per filter count).
        text_encoders: further text encoders for Table 4, one row ``text@<name>`` each.
        text_epochs, text_batch_size, text_lr: the text model's training (default: the train section).
        fusion_speech: the speech row fused with ``text``.
        fusion_grid: the values tried for each of ``w1`` and ``w2``.
        probe: hidden widths of the speaker-identification probe (paper: 2048, 1024, 1024).
        probe_epochs, probe_lr, probe_share: its training and the share of each speaker's
            utterances it trains on (paper: 80%).
        probe_folds: the probe runs on this many folds.
    """

    rows: list[str] = field(default_factory=lambda: list(ROWS))
    bottlenecks: dict[str, list[int]] = field(default_factory=lambda: {"small": [8, 48], "large": [128, 2]})
    segment: int = 96
    speech_subsample: int = 1
    mel_encoder: str = "logmel"
    channels: int = 512
    encoder_convs: int = 3
    encoder_lstm_layers: int = 2
    kernel: int = 5
    decoder_lstm1: int = 512
    decoder_convs: int = 3
    decoder_lstm2: int = 1024
    decoder_lstm2_layers: int = 2
    postnet_convs: int = 5
    postnet_channels: int = 512
    phone_dim: int = 64
    classifier: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.2
    speaker_utterances: int = 100
    text_filters: list[int] = field(default_factory=lambda: [256, 256])
    text_kernel: int = 3
    text_encoders: list[str] = field(default_factory=list)
    text_epochs: int | None = None
    text_batch_size: int | None = None
    text_lr: float | None = None
    fusion_speech: str = "speech_small"
    fusion_grid: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    probe: list[int] = field(default_factory=lambda: [2048, 1024, 1024])
    probe_epochs: int = 30
    probe_lr: float = 1e-4
    probe_share: float = 0.8
    probe_folds: int = 5


# -- building blocks ---------------------------------------------------------------------

def conv_norm(c_in: int, c_out: int, kernel: int, activation: nn.Module | None = None) -> nn.Sequential:
    """ConvNorm (Figure 1): a 1-D convolution, same length, then batch normalisation."""
    layers = [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm1d(c_out)]
    return nn.Sequential(*layers, *([activation] if activation is not None else []))


def downsample(h: torch.Tensor, f: int) -> torch.Tensor:
    """AutoVC's downsampler: ``(B, T, 2d) -> (B, T/f, 2d)``; of each block of ``f`` frames the
    forward direction's output at its last frame and the backward direction's at its first."""
    d = h.shape[-1] // 2
    return torch.cat([h[:, f - 1::f, :d], h[:, ::f, d:]], dim=-1)


def upsample(codes: torch.Tensor, f: int) -> torch.Tensor:
    """Each code repeated ``f`` times along time: ``(B, T/f, C) -> (B, T, C)``."""
    return codes.repeat_interleave(f, dim=1)


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
    """:func:`~sermo.nn.layers.average_frames` for ``(B, L, T, D)``."""
    from sermo.nn.layers import average_frames

    if factor <= 1:
        return x, mask
    b, layers, t, d = x.shape
    flat = x.transpose(1, 2).reshape(b, t, layers * d)
    y, m = average_frames(flat, mask, factor)
    return y.view(b, y.shape[1], layers, d).transpose(1, 2), m


class SpeechEncoder(nn.Module):
    """Weighted layer average (Eq. 1) ‖ speaker embedding -> ConvNorm x n -> BLSTM (d) -> downsample f."""

    def __init__(self, num_layers: int, dim: int, d: int, f: int, cfg: CrossRepresentationConfig):
        super().__init__()
        self.f = f
        self.weighting = LayerWeighting(num_layers, "normalized")
        convs, c = [], dim + SPEAKER_DIM
        for _ in range(cfg.encoder_convs):
            convs.append(conv_norm(c, cfg.channels, cfg.kernel, nn.ReLU()))
            c = cfg.channels
        self.convs = nn.Sequential(*convs)
        self.lstm = nn.LSTM(c, d, num_layers=cfg.encoder_lstm_layers, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """``x (B, L, T, D)`` (T a multiple of f), ``speaker (B, 256)`` -> codes ``(B, T/f, 2d)``."""
        h = self.weighting(x)
        h = torch.cat([h, speaker[:, None].expand(-1, h.shape[1], -1)], dim=-1)
        h = self.convs(h.transpose(1, 2)).transpose(1, 2)
        h, _ = self.lstm(h)
        return downsample(h, self.f)


class PhoneEncoder(nn.Module):
    """One-hot phone ids ``(B, T)`` -> ``(B, T, phone_dim)``: ConvNorm x 2, BLSTM."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.convs = nn.Sequential(conv_norm(NUM_PHONES, dim, kernel, nn.ReLU()), conv_norm(dim, dim, kernel, nn.ReLU()))
        self.lstm = nn.LSTM(dim, dim // 2, batch_first=True, bidirectional=True)

    def forward(self, phones: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(phones.clamp(0, NUM_PHONES - 1), NUM_PHONES).float()
        h = self.convs(one_hot.transpose(1, 2)).transpose(1, 2)
        return self.lstm(h)[0]


class Decoder(nn.Module):
    """[upsampled codes, speaker, phones] -> LSTM -> ConvNorm x n -> LSTMs -> linear 80, and a
    postnet whose output is added (AutoVC). Returns (before postnet, after postnet)."""

    def __init__(self, code_dim: int, cfg: CrossRepresentationConfig):
        super().__init__()
        self.lstm1 = nn.LSTM(code_dim + SPEAKER_DIM + cfg.phone_dim, cfg.decoder_lstm1, batch_first=True)
        self.convs = nn.Sequential(*[conv_norm(cfg.decoder_lstm1 if i == 0 else cfg.channels, cfg.channels,
                                               cfg.kernel, nn.ReLU()) for i in range(cfg.decoder_convs)])
        c = cfg.channels if cfg.decoder_convs else cfg.decoder_lstm1
        self.lstm2 = nn.LSTM(c, cfg.decoder_lstm2, num_layers=cfg.decoder_lstm2_layers, batch_first=True)
        self.linear = nn.Linear(cfg.decoder_lstm2, MEL_BINS)
        post, c = [], MEL_BINS
        for i in range(cfg.postnet_convs):
            last = i == cfg.postnet_convs - 1
            post.append(conv_norm(c, MEL_BINS if last else cfg.postnet_channels, cfg.kernel,
                                  None if last else nn.Tanh()))
            c = cfg.postnet_channels
        self.postnet = nn.Sequential(*post)

    def forward(self, codes: torch.Tensor, speaker: torch.Tensor, phones: torch.Tensor):
        h = torch.cat([codes, speaker[:, None].expand(-1, codes.shape[1], -1), phones], dim=-1)
        h = self.lstm1(h)[0]
        h = self.convs(h.transpose(1, 2)).transpose(1, 2)
        mel = self.linear(self.lstm2(h)[0])
        return mel, mel + self.postnet(mel.transpose(1, 2)).transpose(1, 2)


def masked_mse(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real frames ``mask (B, T)`` of ``(B, T, C)``."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (((x - y) ** 2) * m).sum() / (m.sum() * x.shape[-1]).clamp(min=1.0)


class CrossRepresentation(nn.Module):
    """The speech model of one bottleneck configuration (``d``, ``f``).

    Training (``model.train()``): one random ``segment``-frame crop per utterance; with the
    batch extras ``mel`` and ``phones`` the decoder reconstructs the crop's mel spectrogram.
    Evaluation: logits are the log of the chunk-averaged class probabilities.
    """

    def __init__(self, audio: tuple[int, int], num_classes: int, cfg: CrossRepresentationConfig, *, d: int, f: int):
        super().__init__()
        if cfg.segment % f:
            raise ValueError(f"the segment ({cfg.segment} frames) must be a multiple of the downsampling factor {f}")
        layers, dim = audio
        self.segment, self.f, self.subsample = cfg.segment, f, cfg.speech_subsample
        self.norm = Standardize(layers, dim)
        self.mel_norm = Standardize(1, MEL_BINS)
        self.encoder = SpeechEncoder(layers, dim, d, f, cfg)
        self.code_dim = 2 * d * (cfg.segment // f)
        self.classifier = mlp([self.code_dim, *cfg.classifier, num_classes], dropout=cfg.dropout)
        self.phones = PhoneEncoder(cfg.phone_dim, cfg.kernel)
        self.decoder = Decoder(2 * d, cfg)

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = subsample_layers(self.norm(batch.audio, batch.audio_mask), batch.audio_mask, self.subsample)
        return x, mask

    def codes(self, x: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """Flattened bottleneck codes of segments ``(N, L, segment, D)``: ``(N, code_dim)``."""
        return self.encoder(x, speaker).flatten(1)

    def chunks(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every utterance cut into chunks: (chunks, their speakers, owner index per chunk)."""
        x, mask = self.inputs(batch)
        lengths = mask.sum(1).tolist()
        parts = [chunk(x[i], max(int(n), 1), self.segment) for i, n in enumerate(lengths)]
        owner = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(parts)])
        return torch.cat(parts), batch.extras["speaker"].float()[owner], owner

    def forward(self, batch: Batch) -> Output:
        if self.training:
            return self._train_forward(batch)
        segs, spk, owner = self.chunks(batch)
        codes = self.codes(segs, spk)
        probs = torch.softmax(self.classifier(codes), dim=-1)
        b = len(batch.ids)
        total = torch.zeros(b, probs.shape[1]).index_add_(0, owner, probs)
        count = torch.zeros(b).index_add_(0, owner, torch.ones(len(owner)))
        mean = total / count.clamp(min=1).unsqueeze(-1)
        emb = torch.zeros(b, codes.shape[1]).index_add_(0, owner, codes) / count.clamp(min=1).unsqueeze(-1)
        return Output(logits=torch.log(mean.clamp(min=1e-8)), embedding=emb)

    def _train_forward(self, batch: Batch) -> Output:
        x, mask = self.inputs(batch)
        b, seg = x.shape[0], self.segment
        lengths = mask.sum(1)
        starts = (torch.rand(b) * (lengths - seg).clamp(min=0).float()).long()
        idx = starts[:, None] + torch.arange(seg)[None]  # (B, seg)
        valid = idx < lengths[:, None]
        safe = idx.clamp(max=x.shape[2] - 1)
        crop = torch.gather(x, 2, safe[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))
        crop = crop * valid[:, None, :, None]
        spk = batch.extras["speaker"].float()
        codes = self.encoder(crop, spk)
        extras: dict = {"valid": valid}
        if "mel" in batch.extras and "phones" in batch.extras:
            target, phones = self._targets(batch, lengths, idx, valid)
            mel, post = self.decoder(upsample(codes, self.f), spk, self.phones(phones))
            extras.update(mel=mel, mel_post=post, mel_target=target)
        return Output(logits=self.classifier(codes.flatten(1)), embedding=codes.flatten(1), extras=extras)

    def _targets(self, batch: Batch, lengths, idx, valid):
        """The crop's standardised mel frames and phone ids, on the input's clock."""
        mel, mel_len = batch.extras["mel"].float(), batch.extras["mel_len"]
        phones, phones_len = batch.extras["phones"], batch.extras["phones_len"]
        targets, ids = [], []
        for i in range(mel.shape[0]):
            n = max(int(lengths[i]), 1)
            m = self.mel_norm(mel[i, : int(mel_len[i])][None, None])[0, 0]
            m = align_frames(m, n)
            p = phones[i, : int(phones_len[i])]
            p = p[(torch.arange(n) * len(p) // n).clamp(max=max(len(p) - 1, 0))] if len(p) else torch.ones(n, dtype=torch.long)
            j = idx[i].clamp(max=n - 1)
            targets.append(m[j] * valid[i, :, None])
            ids.append(torch.where(valid[i], p[j], torch.zeros_like(p[j])))
        return torch.stack(targets), torch.stack(ids)

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        parts = {"e": masked_cross_entropy(out.logits, batch.category)}
        if "mel" in out.extras:
            parts["r1"] = masked_mse(out.extras["mel"], out.extras["mel_target"], out.extras["valid"])
            parts["r2"] = masked_mse(out.extras["mel_post"], out.extras["mel_target"], out.extras["valid"])
        return {"loss": sum(parts.values()), **parts}


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
        mask = strip_special(batch.text_mask)
        h = self.weighting(self.norm(batch.text, mask))
        h = self.convs(h.transpose(1, 2)).transpose(1, 2)
        v = masked_max(h, mask)
        return Output(logits=self.head(self.dropout(v)), embedding=v)

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        loss = masked_cross_entropy(out.logits, batch.category)
        return {"loss": loss}


def strip_special(mask: torch.Tensor) -> torch.Tensor:
    """The token mask without each sequence's first and last token (``[CLS]``/``[SEP]``);
    a sequence with nothing else keeps its tokens."""
    length = mask.sum(1, keepdim=True)
    pos = torch.arange(mask.shape[1], device=mask.device)[None]
    inner = mask & (pos >= 1) & (pos < length - 1)
    return torch.where(inner.any(1, keepdim=True), inner, mask)


def fusion_grid(p_s: np.ndarray, p_t: np.ndarray, truth: np.ndarray, grid: list[float]) -> list[dict]:
    """UA and WA of ``argmax(w1 p_s + w2 p_t)`` for every pair of the grid (``(0, 0)`` left out)."""
    from sermo.evaluation.metrics import classification_metrics

    out = []
    for w1 in grid:
        for w2 in grid:
            if w1 == 0 and w2 == 0:
                continue
            m = classification_metrics(truth, (w1 * p_s + w2 * p_t).argmax(1))
            out.append({"w1": w1, "w2": w2, "ua": m["ua"], "wa": m["wa"]})
    return out


# -- data ---------------------------------------------------------------------------------

class _Inputs:
    """What a fold's speech models read besides the features: speaker embeddings, mel and phones."""

    def __init__(self, ctx):
        from sermo.encoders.speaker import speaker_embeddings
        from sermo.features.phones import align_manifest

        self.ctx = ctx
        run, cfg = ctx.run, ctx.cfg.model
        state = run.shared.get("cross_representation")
        if state is None:  # computed once per run: none of it depends on the fold's labels
            manifest = run.manifest
            emb_src = run.source("resemblyzer")
            utt = {u: np.asarray(emb_src.get(u), dtype=np.float32).ravel() for u in manifest.df["id"] if emb_src.has(u)}
            speakers = dict(zip(manifest.df["id"], manifest.df["speaker"]))
            per_speaker = speaker_embeddings(utt, speakers, max_utterances=cfg.speaker_utterances,
                                             seed=ctx.cfg.train.seed)
            mel = run.source(cfg.mel_encoder)
            labelled = [u for u, c in run.labels.category.items() if c >= 0]
            phones, report = align_manifest(manifest, run.store, ids=labelled, progress=run.progress)
            state = dict(utt=utt, speakers=speakers, per_speaker=per_speaker, mel=mel, phones=phones,
                         align_report=report)
            run.shared["cross_representation"] = state
        self.__dict__.update(state)

    def speaker(self, uid: str) -> np.ndarray:
        """The speaker's embedding (mean over its utterances), else the utterance's own."""
        spk = self.speakers.get(uid)
        if spk in self.per_speaker:
            return self.per_speaker[spk]
        return self.utt.get(uid, np.zeros(SPEAKER_DIM, dtype=np.float32))

    def mel_frames(self, uid: str) -> np.ndarray:
        return np.asarray(self.mel.get(uid)[0], dtype=np.float32)

    def phone_frames(self, uid: str) -> np.ndarray:
        """Per-frame phone ids on the mel spectrogram's clock (not identified where unaligned)."""
        from sermo.encoders.asr import NOT_IDENTIFIED, phones_to_frames

        n = self.mel.length(uid)
        segs = self.phones.get(uid)
        if segs is None:
            return np.full(n, NOT_IDENTIFIED, dtype=np.int64)
        return phones_to_frames(segs, n, self.mel.frame_rate)

    def extras(self, training: bool) -> dict:
        out = {"speaker": self.speaker}
        if training:
            out.update(mel=self.mel_frames, phones=self.phone_frames)
        return out


# -- the fold -------------------------------------------------------------------------------

def run_fold(ctx) -> list:
    """The speech rows, the text row(s), the fusion and (first folds) the speaker probe."""
    from sermo.training.datamodule import FeatureSource

    cfg: CrossRepresentationConfig = ctx.cfg.model
    unknown = [r for r in cfg.rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown cross_representation row(s) {unknown}; known: {', '.join(ROWS)}")
    for name in {SPEECH_ROWS[r][0] for r in cfg.rows if r in SPEECH_ROWS}:
        if name not in cfg.bottlenecks:
            raise ValueError(f"bottleneck {name!r} is not configured; model.bottlenecks has {list(cfg.bottlenecks)}")
    results, models = [], {}
    speech_rows = [r for r in cfg.rows if r in SPEECH_ROWS]
    inputs = _Inputs(ctx) if speech_rows else None
    for row in speech_rows:
        size, kind = SPEECH_ROWS[row]
        src = ctx.run.audio if kind == "features" else inputs.mel
        if src is None:
            results.append(ctx.skipped_row(row, ("audio",), "the recipe has no audio encoder"))
            continue
        d, f = cfg.bottlenecks[size]
        ctx.seed(row)
        model = CrossRepresentation((src.num_layers, src.dim), ctx.num_classes, cfg, d=d, f=f)
        model.norm.set(*ctx.feature_stats("audio", src))
        model.mel_norm.set(*ctx.feature_stats("audio", inputs.mel))

        def data(split, src=src):
            return ctx.dataset(split, audio_source=src, extras=inputs.extras(split == "train"))

        model = ctx.fit(model, row, data("train"), data("valid"))
        preds = ctx.predict(model, data)
        models[row] = (model, data, preds)
        info = {"bottleneck": {"d": d, "f": f, "codes": f"{cfg.segment // f} x {2 * d}"},
                "layer_weights": [round(float(w), 4) for w in model.encoder.weighting.weights().detach()]}
        if inputs.align_report.failed:
            info["unaligned"] = len(inputs.align_report.failed)
        results.append(ctx.row(row, ("audio",), model, preds, info=info,
                               inputs={"audio": src, "speaker": True}))
    text_rows = [("text", None)] if "text" in cfg.rows else []
    text_rows += [(f"text@{name}", name) for name in cfg.text_encoders]
    for row, name in text_rows:
        if ctx.run.text is None and name is None:
            results.append(ctx.skipped_row(row, ("text",), "the recipe has no text encoder"))
            continue
        try:
            src = ctx.run.text if name is None else FeatureSource(name, ctx.cfg.data.text_layers, ctx.run.manifest,
                                                                 ctx.run.store, progress=ctx.run.progress)
        except (OSError, ValueError, RuntimeError) as exc:  # a Hub model that is not cached here
            results.append(ctx.skipped_row(row, ("text",), f"text encoder {name!r} unavailable: {exc}"))
            continue
        ctx.seed(row)
        model = TextCNN((src.num_layers, src.dim), ctx.num_classes, cfg)
        model.norm.set(*ctx.feature_stats("text", src))

        def tdata(split, src=src):
            return ctx.dataset(split, text_source=src)

        train_cfg = ctx.with_train(**{k: v for k, v in (("epochs", cfg.text_epochs), ("batch_size", cfg.text_batch_size),
                                                         ("lr", cfg.text_lr)) if v is not None})
        model = ctx.fit(model, re.sub(r"[^A-Za-z0-9_.-]", "_", row), tdata("train"), tdata("valid"), train_cfg)
        preds = ctx.predict(model, tdata)
        models[row] = (model, tdata, preds)
        results.append(ctx.row(row, ("text",), model, preds, inputs={"text": src},
                               info={"encoder": name or ctx.cfg.data.text_encoder}))
    if "fusion" in cfg.rows:
        results.append(score_fusion(ctx, models, cfg))
    digits = re.sub(r"\D", "", ctx.fold.name)
    if (int(digits) if digits else 1) <= cfg.probe_folds:
        probes = {}
        for row in ("speech_small", "speech_large"):
            if row in models:
                probes[SPEECH_ROWS[row][0]] = speaker_probe(ctx, models[row][0], inputs, cfg)
        if probes:
            analysis = ctx.folder / "analysis"
            analysis.mkdir(exist_ok=True)
            write_json_atomic(analysis / "probe.json", probes)
    return results


def score_fusion(ctx, models: dict, cfg: CrossRepresentationConfig):
    """``p_f = w1 p_s + w2 p_t``: the grid on validation, the best pair on the test sets."""
    from sermo.training.fold import aligned_probs

    if cfg.fusion_speech not in models or "text" not in models:
        return ctx.skipped_row("fusion", ("audio", "text"), f"needs the rows {cfg.fusion_speech} and text")
    speech, text = models[cfg.fusion_speech], models["text"]  # (model, data, test predictions)
    ids, (p_s, p_t) = aligned_probs(*(ctx.predict(m, d, ["valid"])["valid"] for m, d, _ in (speech, text)))
    truth = np.array([ctx.run.labels.category[u] for u in ids])
    grid = fusion_grid(p_s, p_t, truth, cfg.fusion_grid)
    best = max(grid, key=lambda g: (round(g["ua"], 6), round(g["wa"], 6)))
    analysis = ctx.folder / "analysis"
    analysis.mkdir(exist_ok=True)
    write_json_atomic(analysis / "fusion_grid.json", {"speech": cfg.fusion_speech, "valid": grid, "best": best})
    preds = {}
    for test in ctx.fold.tests:  # the rows' own test predictions
        ids, (p_s, p_t) = aligned_probs(speech[2][test], text[2][test])
        fused = best["w1"] * p_s + best["w2"] * p_t
        preds[test] = {"ids": ids, "dims": None, "probs": fused / fused.sum(1, keepdims=True)}
    return ctx.row("fusion", ("audio", "text"), nn.Identity(), preds, bundle=False,
                   info={"of": [cfg.fusion_speech, "text"], "w1": best["w1"], "w2": best["w2"]})


@torch.no_grad()
def bottleneck_features(model: CrossRepresentation, ctx, data_ids, src, inputs) -> tuple[np.ndarray, list[str]]:
    """Flattened codes of every chunk of the given utterances, and each chunk's utterance."""
    from sermo.training.datamodule import UtteranceDataset

    model.eval()
    d = ctx.cfg.data
    ds = UtteranceDataset(list(data_ids), ctx.run.labels, audio=src, max_frames=d.max_frames,
                          extras={"speaker": inputs.speaker})
    feats, owners = [], []
    for batch in ctx.batches(ds, 32):
        segs, spk, owner = model.chunks(batch)
        feats.append(model.codes(segs, spk).numpy())
        owners += [batch.ids[i] for i in owner.tolist()]
    return np.concatenate(feats), owners


def speaker_probe(ctx, model: CrossRepresentation, inputs: _Inputs, cfg: CrossRepresentationConfig) -> dict:
    """Table 3: speaker identification from the frozen bottleneck codes of the fold's training
    sessions, each speaker's utterances split ``probe_share`` / rest; UA over test utterances
    (chunk probabilities averaged), and the chance level."""
    from sermo.evaluation.metrics import classification_metrics

    src = ctx.run.audio
    if model.norm.mean.shape[-1] != src.dim:  # the mel-input model reads the mel spectrogram
        src = inputs.mel
    ids = [u for u in ctx.fold.train if src.has(u) and inputs.speakers.get(u) is not None]
    speakers = sorted({inputs.speakers[u] for u in ids})
    rng = np.random.default_rng(ctx.cfg.train.seed)
    train_ids, test_ids = [], []
    for spk in speakers:
        own = [u for u in ids if inputs.speakers[u] == spk]
        rng.shuffle(own)
        k = int(round(cfg.probe_share * len(own)))
        train_ids += own[:k]
        test_ids += own[k:]
    index = {s: i for i, s in enumerate(speakers)}
    x_tr, o_tr = bottleneck_features(model, ctx, train_ids, src, inputs)
    x_te, o_te = bottleneck_features(model, ctx, test_ids, src, inputs)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-5
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    y_tr = torch.tensor([index[inputs.speakers[u]] for u in o_tr])
    torch.manual_seed(ctx.cfg.train.seed)
    probe = mlp([x_tr.shape[1], *cfg.probe, len(speakers)])
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.probe_lr)
    xt = torch.from_numpy(x_tr).float()
    for _ in range(cfg.probe_epochs):
        for b in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(probe(xt[b]), y_tr[b]).backward()
            opt.step()
    probe.eval()
    with torch.no_grad():
        p = torch.softmax(probe(torch.from_numpy(x_te).float()), dim=-1).numpy()
    utts = sorted(set(o_te))
    at = {u: i for i, u in enumerate(utts)}
    total = np.zeros((len(utts), len(speakers)))
    for row, u in zip(p, o_te):
        total[at[u]] += row
    truth = np.array([index[inputs.speakers[u]] for u in utts])
    m = classification_metrics(truth, total.argmax(1))
    return {"ua": m["ua"], "wa": m["wa"], "speakers": len(speakers), "chance": 1.0 / len(speakers),
            "train_utterances": len(train_ids), "test_utterances": len(utts), "code_dim": int(x_tr.shape[1])}



def finish(out: Path, results: dict) -> str:
    """The fusion weight grid (validation UA per (w1, w2), averaged over folds) and the probe table."""
    import matplotlib.pyplot as plt

    from sermo.evaluation.plots import save_figure
    from sermo.evaluation.report import markdown_table

    sections = []
    grids = [json.loads(p.read_text()) for p in sorted(out.glob("*/analysis/fusion_grid.json"))]
    if grids:
        w1s = sorted({g["w1"] for g in grids[0]["valid"]})
        w2s = sorted({g["w2"] for g in grids[0]["valid"]})
        ua = np.full((len(w1s), len(w2s)), np.nan)
        for i, w1 in enumerate(w1s):
            for j, w2 in enumerate(w2s):
                vals = [g["ua"] for gr in grids for g in gr["valid"] if g["w1"] == w1 and g["w2"] == w2]
                if vals:
                    ua[i, j] = float(np.mean(vals))
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        im = ax.imshow(ua, origin="lower", cmap="viridis")
        ax.set_xticks(range(len(w2s)), [f"{w:g}" for w in w2s], fontsize=7)
        ax.set_yticks(range(len(w1s)), [f"{w:g}" for w in w1s], fontsize=7)
        ax.set_xlabel("w2 (text)")
        ax.set_ylabel(f"w1 (speech: {grids[0]['speech']})")
        fig.colorbar(im, ax=ax, label="validation UA")
        path = save_figure(fig, out / "plots" / "fusion_grid.png")
        chosen = [{"fold": p.parent.parent.name, "w1": json.loads(p.read_text())["best"]["w1"],
                   "w2": json.loads(p.read_text())["best"]["w2"],
                   "valid UA": json.loads(p.read_text())["best"]["ua"]}
                  for p in sorted(out.glob("*/analysis/fusion_grid.json"))]
        sections.append("## Score fusion weights\n\n`p_f = w1 p_s + w2 p_t`; each fold picks the pair with the best "
                        "validation UA (the paper's best: w1 = 0.6, w2 = 1).\n\n" + markdown_table(chosen)
                        + f"\n![fusion grid]({path.relative_to(out)})\n")
    probes = [(p.parent.parent.name, json.loads(p.read_text())) for p in sorted(out.glob("*/analysis/probe.json"))]
    if probes:
        rows = []
        for size in ("small", "large"):
            vals = [pr[size] for _, pr in probes if size in pr]
            if not vals:
                continue
            row = {"bottleneck": size, **{f"{fold} UA": pr[size]["ua"] for fold, pr in probes if size in pr}}
            row["mean UA"] = float(np.mean([v["ua"] for v in vals]))
            row["mean WA"] = float(np.mean([v["wa"] for v in vals]))
            row["chance"] = vals[0]["chance"]
            rows.append(row)
        sections.append("## Speaker identification from the bottleneck (Table 3)\n\nA probe (linear layers "
                        "2048, 1024, 1024) on the frozen codes of each fold's training sessions, 80% of each "
                        "speaker's utterances to train, the rest to test; UA (mean recall) over test utterances, WA "
                        "(accuracy) beside it. Lower is less speaker identity in the emotion features (paper, its "
                        "accuracy: small 17.6%, large 22.9%).\n\n"
                        + markdown_table(rows))
    return "\n".join(sections)


def build_model(row: str, cfg: CrossRepresentationConfig, spec: dict) -> nn.Module:
    """A row's model for a bundle."""
    c = int(spec["num_classes"])
    if row in SPEECH_ROWS:
        d, f = cfg.bottlenecks[SPEECH_ROWS[row][0]]
        return CrossRepresentation(tuple(spec["audio"]), c, cfg, d=d, f=f)
    if row == "text" or row.startswith("text@"):
        return TextCNN(tuple(spec["text"]), c, cfg)
    raise ValueError(f"cross_representation has no model for row {row!r}")


PAPER = {
    # Tables 1, 2, 4, 6 (IEMOCAP 4 classes, leave one session out). The paper swaps the names:
    # its "UA" is overall accuracy (WA here), its "WA" the mean recall (UA here).
    "iemocap": {
        "speech_small": {"wa": 0.701, "ua": 0.707}, "speech_large": {"wa": 0.681},
        "speech_mel_input": {"wa": 0.504}, "text": {"wa": 0.661, "ua": 0.670},
        "fusion": {"wa": 0.730, "ua": 0.735},
    },
}

register(SystemDef(
    name="cross_representation", config_cls=CrossRepresentationConfig, run_fold=run_fold,
    build_model=build_model, paper=PAPER, finish=finish,
    title="Cross-representation speech model, CNN text model and score fusion (Makiuchi et al., ASRU 2021)",
))
