"""One fold of cross_representation: speech rows, text rows, fusion, the speaker probe."""

from __future__ import annotations

import dataclasses
import numpy as np

from sermo.systems.common import lacking
from sermo.systems.api import FoldContext, RowResult, sequence, stage_name
from sermo.systems.cross_representation.config import SPEECH_ROWS, CrossRepresentationConfig, declare
from sermo.systems.cross_representation.fusion import score_fusion
from sermo.systems.cross_representation.model import CrossRepresentation
from sermo.systems.cross_representation.probe import speaker_probe
from sermo.systems.cross_representation.text import TextCNN


class Inputs:
    """What a fold's speech models read besides the features: the speaker's embedding, and in
    training the mel spectrogram and the phones the decoder reconstructs from."""

    def __init__(self, ctx):
        cfg = ctx.cfg.model
        self.speaker = ctx.speaker_embeddings(cfg.speaker_utterances)
        self.speakers = dict(zip(ctx.manifest.df["id"], ctx.manifest.df["speaker"]))
        state = ctx.shared.get("cross_representation")
        if state is None:  # computed once per run: none of it depends on the fold's labels
            labelled = [u for u, c in ctx.labels.category.items() if c >= 0]
            mel = ctx.features(cfg.mel_encoder, pooled=False)  # the target keeps its own frames
            phones, failed = ctx.phone_alignments(labelled)
            state = ctx.shared["cross_representation"] = dict(mel=mel, phones=phones, unaligned=failed)
        self.mel, self.phones, self.unaligned = state["mel"], state["phones"], state["unaligned"]

    def mel_frames(self, uid: str) -> np.ndarray:
        """``(T, 80)`` log-mel frames (the reconstruction target)."""
        return np.asarray(self.mel.get(uid)[0], dtype=np.float32)

    def phone_frames(self, uid: str) -> np.ndarray:
        """Per-frame phone ids on the mel spectrogram's clock (not identified where unaligned)."""
        from sermo.encoders.asr import NOT_IDENTIFIED, phones_to_frames

        n = self.mel.length(uid)
        segs = self.phones.get(uid)
        if segs is None:
            return np.full(n, NOT_IDENTIFIED, dtype=np.int64)
        return phones_to_frames(segs, n, self.mel.frame_rate)

    def training_extras(self) -> dict:
        """The decoder's targets and phone inputs, padded per batch with their lengths."""
        return {"mel": sequence(self.mel_frames), "phones": sequence(self.phone_frames)}


def epochs_for(ctx, iterations: int | None, utterances: int, batch_size: int, train_cfg=None):
    """The train config that makes about ``iterations`` optimizer steps over ``utterances``, and
    what was derived (for the report); the config unchanged when no iterations are asked for."""
    import math

    train_cfg = train_cfg or ctx.with_train()
    if not iterations or not utterances:
        return train_cfg, {}
    per_epoch = math.ceil(utterances / batch_size)
    epochs = iteration_epochs(iterations, utterances, batch_size)
    return dataclasses.replace(train_cfg, epochs=epochs), {
        "iterations": iterations, "derived_epochs": epochs, "steps": epochs * per_epoch, "train_utterances": utterances}


def iteration_epochs(iterations: int, utterances: int, batch_size: int) -> int:
    """Epochs of about ``iterations`` optimizer steps over ``utterances`` in batches of ``batch_size``."""
    import math

    return max(1, math.ceil(iterations / math.ceil(utterances / batch_size)))


def plan_epochs(cfg, modality: str, utterances: int) -> int:
    """The epochs the rows reading ``modality``'s features train for (the plan's live passes)."""
    m = cfg.model
    if modality == "audio":
        iterations, batch, epochs = m.speech_iterations, cfg.train.batch_size, cfg.train.epochs
    else:
        iterations = m.text_iterations
        batch, epochs = m.text_batch_size or cfg.train.batch_size, m.text_epochs or cfg.train.epochs
    return iteration_epochs(iterations, utterances, batch) if iterations and utterances else epochs


SSL_FRAME_RATE = 50.0  # wav2vec 2.0's 20 ms frames, the clock of the paper's segments


def mel_clock(frame_rate: float | None) -> int:
    """How many frames of a ``frame_rate`` input make one 20 ms frame of the wav2vec rows (2 for
    10 ms log-mel)."""
    return max(1, round((frame_rate or SSL_FRAME_RATE) / SSL_FRAME_RATE))


def segment_seconds(frames: int, frame_rate: float | None) -> float | None:
    """A training crop's length in seconds."""
    return round(frames / frame_rate, 2) if frame_rate else None


def run_fold(ctx: FoldContext) -> list[RowResult]:
    """The speech rows, the text row(s), the fusion and (first folds) the speaker probe."""
    cfg: CrossRepresentationConfig = ctx.cfg.model
    for name in {SPEECH_ROWS[r][0] for r in cfg.rows if r in SPEECH_ROWS}:
        if name not in cfg.bottlenecks:
            raise ValueError(f"bottleneck {name!r} is not configured; model.bottlenecks has {list(cfg.bottlenecks)}")
    results: list[RowResult] = []
    models: dict[str, tuple] = {}
    declared = declare(ctx.cfg)
    speech_rows = [r for r in declared if r.name in SPEECH_ROWS]
    inputs = Inputs(ctx) if speech_rows else None
    for decl in speech_rows:
        assert inputs is not None
        row, (size, kind) = decl.name, SPEECH_ROWS[decl.name]
        src = ctx.audio if decl.reading.audio else inputs.mel
        why = "the recipe has no audio encoder" if src is None else lacking(ctx, ("audio",))
        if why or src is None:
            results.append(ctx.skipped_row(row, ("audio",), why))
            continue
        d, f = cfg.bottlenecks[size]
        ctx.seed(row)
        # the mel-input row reads 10 ms frames: averaged on the wav2vec rows' 20 ms clock, its
        # segment spans the same 1.92 s (paper 004, section 6.1: the Small configuration's parameters)
        sub = cfg.speech_subsample * (mel_clock(src.frame_rate) if kind == "mel" else 1)
        row_cfg = dataclasses.replace(cfg, speech_subsample=sub)
        model = CrossRepresentation((src.num_layers, src.dim), ctx.num_classes, row_cfg, d=d, f=f)
        model.norm.set(*ctx.feature_stats(src))
        model.mel_norm.set(*ctx.feature_stats(inputs.mel))

        def data(split, src=src):
            return ctx.dataset(split, audio=src, speaker=inputs.speaker,
                               extras=inputs.training_extras() if split == "train" else None)

        train = data("train")
        speech_cfg, schedule = epochs_for(ctx, cfg.speech_iterations, len(train), ctx.cfg.train.batch_size)
        model = ctx.fit(model, row, train, data("valid"), speech_cfg)
        preds = ctx.predict(model, data)
        models[row] = (model, data, preds)
        info = {"bottleneck": {"d": d, "f": f, "codes": f"{cfg.segment // f} x {2 * d}"}, **schedule,
                "segment_seconds": segment_seconds(cfg.segment * sub, src.frame_rate),
                "layer_weights": [round(float(w), 4) for w in model.encoder.weighting.weights().detach()]}
        if inputs.unaligned:
            info["unaligned"] = len(inputs.unaligned)
        results.append(ctx.row(row, decl.modalities, model, preds, info=info, options={"speech_subsample": sub}))
    # the recipe's text encoder (``text``), or the one a Table 4 row reads
    text_rows = [(r.name, next((f.encoder for f in r.reading.other), None)) for r in declared if r.modalities == ("text",)]
    for row, encoder in text_rows:
        why = "the recipe has no text encoder" if ctx.text is None and encoder is None else lacking(ctx, ("text",))
        if why:
            results.append(ctx.skipped_row(row, ("text",), why))
            continue
        try:
            src = ctx.text if encoder is None else ctx.features(encoder, ctx.cfg.data.text_layers)
        except (OSError, ValueError, RuntimeError) as exc:  # a Hub model that is not cached here
            results.append(ctx.skipped_row(row, ("text",), f"text encoder {encoder!r} unavailable: {exc}"))
            continue
        assert src is not None  # a missing recipe encoder was skipped above
        ctx.seed(row)
        text_model = TextCNN((src.num_layers, src.dim), ctx.num_classes, cfg)
        text_model.norm.set(*ctx.feature_stats(src))

        def tdata(split, src=src):
            return ctx.dataset(split, text=src)

        train_cfg = ctx.with_train(**{k: v for k, v in (("epochs", cfg.text_epochs), ("batch_size", cfg.text_batch_size),
                                                         ("lr", cfg.text_lr)) if v is not None})
        train = tdata("train")
        train_cfg, schedule = epochs_for(ctx, cfg.text_iterations, len(train), train_cfg.batch_size, train_cfg)
        text_model = ctx.fit(text_model, stage_name(row), train, tdata("valid"), train_cfg)
        preds = ctx.predict(text_model, tdata)
        models[row] = (text_model, tdata, preds)
        # every text row (text@<encoder> too) is the text CNN: its bundle says so
        results.append(ctx.row(row, ("text",), text_model, preds, options={"architecture": "text"},
                               info={"encoder": encoder or ctx.cfg.data.text_encoder, **schedule}))
    if any(r.name == "fusion" for r in declared):
        results.append(score_fusion(ctx, models, cfg))
    if ctx.is_analysis_fold(cfg.probe_folds) and inputs is not None:
        probes = {}
        for row in ("speech_small", "speech_large"):
            if row in models:
                probes[SPEECH_ROWS[row][0]] = speaker_probe(ctx, models[row][0], inputs, cfg)
        if probes:
            ctx.write_analysis("probe.json", probes)
    return results
