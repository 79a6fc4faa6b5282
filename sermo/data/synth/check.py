"""Does a corpus carry emotion the way real ones do? Simple features, no training.

The papers report, for real corpora, that the words predict valence better than prosody
does and prosody predicts arousal better than the words do. :func:`modality_check` measures
that on any manifest with transcripts: a lexicon score of the words against prosodic
statistics (loudness, pitch level and spread, speaking rate), each fitted by 5-fold
cross-validated linear regression and correlated with the consensus labels.
"""

from __future__ import annotations

import numpy as np

from sermo.data.audio import SAMPLE_RATE, load_audio
from sermo.data.manifest import DIMENSIONS, Manifest
from sermo.data.synth.lexicon import lexicon_score

FRAME = 400  # 25 ms at 16 kHz


def prosodic_features(samples: np.ndarray, words: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``(4,)``: mean energy of speech frames (dB), median F0 and its spread (Hz), words per second.

    Speech frames are those within 25 dB of the loudest; F0 is the autocorrelation peak
    between 70 and 400 Hz of frames whose peak is at least 0.3 of the energy.
    """
    n = len(samples) // FRAME * FRAME
    frames = samples[:n].reshape(-1, FRAME)
    energy = 10 * np.log10((frames**2).mean(axis=1) + 1e-10)
    speech = energy > energy.max() - 25
    f0 = []
    lo, hi = sample_rate // 400, sample_rate // 70
    for f in frames[speech][::2]:
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[FRAME - 1:]
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[0] > 0 and ac[k] > 0.3 * ac[0]:
            f0.append(sample_rate / k)
    pitch = np.array(f0) if f0 else np.zeros(1)
    seconds = speech.sum() * FRAME / sample_rate
    return np.array([energy[speech].mean(), np.median(pitch), pitch.std(), words / max(seconds, 1e-3)])


def modality_check(manifest: Manifest, *, max_utterances: int = 400, seed: int = 0) -> dict[str, dict[str, float]]:
    """Cross-validated correlation of text-only and prosody-only predictions with each label.

    Returns:
        ``{dim: {"text": r, "prosody": r}}`` for each dimension the manifest has.
    """
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import cross_val_predict

    df = manifest.df[manifest.df["transcript"].notna()]
    if len(df) > max_utterances:
        df = df.sample(max_utterances, random_state=seed)
    if len(df) < 20:
        raise ValueError(f"modality_check needs at least 20 transcribed utterances, got {len(df)}")
    words = df["transcript"].str.split().str.len().to_numpy()
    pros = np.array([prosodic_features(load_audio(a, start=s if s == s else None, end=e if e == e else None), w)
                     for a, s, e, w in zip(df["audio"], df["start"], df["end"], words)])
    lex = df["transcript"].map(lexicon_score).to_numpy()[:, None]
    out = {}
    for dim in DIMENSIONS:
        y = df[dim].to_numpy(dtype=float)
        keep = np.isfinite(y)
        if keep.sum() < 20:
            continue
        r = {}
        for name, X in (("text", lex), ("prosody", pros)):
            pred = cross_val_predict(LinearRegression(), X[keep], y[keep], cv=5)
            r[name] = float(np.corrcoef(pred, y[keep])[0, 1])
        out[dim] = r
    return out
