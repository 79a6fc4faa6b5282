"""The latent emotions of the built-in corpus: where each sits in V/A/D and how it sounds.

Latent valence, arousal and dominance live on [-1, 1]; the corpus scales them to its own
rating scale (IEMOCAP 1-5, MSP-Podcast 1-7). Each emotion has a centre with a spread, a
prosodic signature on top of the continuous A/D effects, and its codes and annotator words
in both corpora.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Emotion:
    """One latent emotion category.

    Attributes:
        name: canonical name (``angry``).
        centre: (valence, arousal, dominance) on [-1, 1].
        spread: standard deviation of the latent dimensions around the centre.
        rate, pitch, pitch_range, gain_db: prosodic signature added to the continuous
            effects (log-rate change, espeak pitch units, espeak range units, dB).
        iemocap, msp: category codes (``None``: the corpus has no such category).
        iemocap_word: the word IEMOCAP evaluators write (``Anger``).
    """

    name: str
    centre: tuple[float, float, float]
    spread: float
    rate: float
    pitch: float
    pitch_range: float
    gain_db: float
    iemocap: str | None
    msp: str | None
    iemocap_word: str


EMOTIONS: dict[str, Emotion] = {e.name: e for e in (
    Emotion("neutral",    (0.00, -0.15, 0.00), 0.18, 0.00, 0.0, 0.0, 0.0, "neu", "N", "Neutral"),
    Emotion("happy",      (0.60, 0.25, 0.20), 0.20, 0.03, 5.0, 12.0, 1.0, "hap", "H", "Happiness"),
    Emotion("excited",    (0.55, 0.70, 0.35), 0.18, 0.08, 8.0, 15.0, 2.0, "exc", None, "Excited"),
    Emotion("angry",      (-0.60, 0.75, 0.60), 0.18, 0.05, -2.0, 5.0, 3.0, "ang", "A", "Anger"),
    Emotion("sad",        (-0.60, -0.60, -0.50), 0.18, -0.12, -5.0, -15.0, -3.0, "sad", "S", "Sadness"),
    Emotion("frustrated", (-0.40, 0.30, 0.10), 0.20, 0.00, 0.0, 3.0, 1.0, "fru", None, "Frustration"),
    Emotion("surprised",  (0.20, 0.60, -0.10), 0.20, 0.00, 10.0, 20.0, 1.0, "sur", "U", "Surprise"),
    Emotion("fearful",    (-0.50, 0.50, -0.50), 0.18, 0.10, 10.0, -5.0, -1.0, "fea", "F", "Fear"),
    Emotion("disgusted",  (-0.60, 0.20, 0.30), 0.18, -0.08, -3.0, 5.0, 0.0, "dis", "D", "Disgust"),
    Emotion("contempt",   (-0.50, 0.10, 0.45), 0.18, -0.05, -4.0, -5.0, 0.0, None, "C", "Other"),
    Emotion("other",      (0.00, 0.00, 0.00), 0.30, 0.00, 0.0, 0.0, 0.0, "oth", "O", "Other"),
)}

# How often each latent emotion occurs; roughly the shape of the real corpora (IEMOCAP is
# dominated by neutral, frustration, anger, sadness and excitement; MSP-Podcast by neutral
# and happy).
PRIORS: dict[str, dict[str, float]] = {
    "iemocap": {"neutral": 0.22, "frustrated": 0.16, "angry": 0.12, "sad": 0.12, "excited": 0.12,
                "happy": 0.09, "surprised": 0.04, "fearful": 0.04, "disgusted": 0.05, "other": 0.04},
    "msp-podcast": {"neutral": 0.30, "happy": 0.22, "angry": 0.10, "sad": 0.10, "surprised": 0.06,
                    "fearful": 0.05, "disgusted": 0.06, "contempt": 0.07, "other": 0.04},
}


def emotions_for(layout: str) -> list[Emotion]:
    """The latent emotions a corpus layout uses, in a fixed order."""
    return [EMOTIONS[n] for n in PRIORS[layout]]


def code_of(emotion: Emotion, layout: str) -> str:
    """The emotion's category code in ``layout``."""
    code = emotion.iemocap if layout == "iemocap" else emotion.msp
    if code is None:
        raise ValueError(f"{emotion.name} has no code in the {layout} layout")
    return code
