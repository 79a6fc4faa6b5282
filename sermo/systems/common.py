"""Helpers several systems share: which modalities a corpus lacks, combining rows' predictions
(score fusion), probabilities, the deviations they have in common."""

from __future__ import annotations

from typing import Callable

import numpy as np

from sermo.systems.api import Predictions
from sermo.systems.definition import Deviation

FINETUNED_AUDIO_CAP = Deviation(
    "Fine-tuned rows read at most the first 20 s of an utterance (training and test); frozen rows up to 60 s "
    "(data.max_frames).", "The papers are silent; a fine-tuned encoder's memory grows with the audio and a few "
    "IEMOCAP utterances run to 34 s.", "A small share of IEMOCAP's utterances is cut for the fine-tuned rows only; "
    "MSP-Podcast's segments are all shorter.", corpora=("iemocap",))
"""A deviation of every system that fine-tunes a speech encoder on waveforms."""

FINETUNED_MASKING = Deviation(
    "A fine-tuned HuBERT / wav2vec 2.0 encoder trains with its checkpoint's own time masking (mask_time_prob, "
    "SpecAugment-style) and dropout, as Hugging Face fine-tuning does; frozen encoders and every prediction run "
    "without them.", "The papers fine-tune these checkpoints without saying whether they kept the masking; it is "
    "the checkpoints' published fine-tuning setting.", "Fine-tuned rows are regularised a little more than a bare "
    "fine-tune; frozen rows are unaffected.")
"""Paired with :data:`FINETUNED_AUDIO_CAP` wherever a speech encoder is fine-tuned."""


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, C)`` scores."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def aligned_probs(*predictions: Predictions) -> tuple[list[str], list[np.ndarray]]:
    """The utterances every one of several predictions covers, in the first one's order, and
    each one's class probabilities for them."""
    common = set.intersection(*(set(p.ids) for p in predictions))
    ids = [u for u in predictions[0].ids if u in common]
    out = []
    for p in predictions:
        at = {u: i for i, u in enumerate(p.ids)}
        out.append(np.asarray(p.probs)[[at[u] for u in ids]])
    return ids, out


def fuse(rows: list[dict[str, Predictions]], combine: Callable[..., np.ndarray]) -> dict[str, Predictions]:
    """Score fusion of rows' test predictions: per test set, ``combine(p_1, ..., p_k)`` of their
    aligned class probabilities (each ``(n, C)``) gives the fused probabilities."""
    out = {}
    for test in rows[0]:
        ids, probs = aligned_probs(*(r[test] for r in rows))
        out[test] = Predictions(ids, None, combine(*probs))
    return out


def lacking(ctx, modalities) -> str:
    """Why a row reading ``modalities`` cannot train in this fold ("" when it can): the recipe has
    no encoder for one of them, or no utterance of the training split has it (a text-only table,
    a corpus without transcripts). Read from the manifest and the run's transcripts: asking a
    feature source would extract features that rows reading waveforms never use."""
    reasons, train, data = [], set(ctx.ids("train")), ctx.cfg.data
    for modality in modalities:
        if not (data.audio_encoder if modality == "audio" else data.text_encoder):
            reasons.append(f"the recipe has no {modality} encoder")
        elif modality == "audio":
            df = ctx.manifest.df
            paths = df.loc[df["id"].isin(train), "audio"]
            if not any(isinstance(p, str) and p for p in paths):
                reasons.append("the corpus has no audio")
        elif not any(isinstance(t, str) and t.strip() for u, t in ctx.transcripts().items() if u in train):
            reasons.append("the corpus has no transcripts")
    return "; ".join(reasons)


def fold_task(ctx, task: str) -> str:
    """A dimensional system's ``model.task`` for this fold: ``auto`` is the paper's ``dims`` where the
    training split has any A/V/D value, ``category`` on a corpus with categories only."""
    if task != "auto":
        return task
    return "dims" if any(np.isfinite(ctx.labels.dims[u]).any() for u in ctx.ids("train")) else "category"
