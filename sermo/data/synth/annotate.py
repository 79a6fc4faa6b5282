"""Simulated annotators of the built-in corpus.

Each annotator has a persistent bias on valence, arousal and dominance. For every utterance
they perceive its latent dimensions with bias and noise, rate them as integers on the
corpus scale, and vote a category: usually the latent one, otherwise the category whose
centre lies nearest to what they perceived. The consensus is the mean rating and the
majority vote; without a majority the category is ``xxx`` (IEMOCAP) or ``X`` (MSP-Podcast).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sermo.data.synth.emotions import Emotion, code_of, emotions_for
from sermo.data.synth.plan import Utterance, utterance_rng

SCALES = {"iemocap": (1, 5), "msp-podcast": (1, 7)}
NO_MAJORITY = {"iemocap": "xxx", "msp-podcast": "X"}
RATERS = {"iemocap": 3, "msp-podcast": 5}
POOL = {"iemocap": 6, "msp-podcast": 30}
P_TRUE_VOTE = 0.74
PERCEPTION_NOISE = 0.28


@dataclass(frozen=True)
class Rating:
    """One annotator's judgement of one utterance (dimensions on the corpus scale)."""

    rater: str
    categories: tuple[Emotion, ...]
    valence: int
    arousal: int
    dominance: int


@dataclass(frozen=True)
class Annotation:
    """Consensus and individual ratings of one utterance."""

    code: str
    valence: float
    arousal: float
    dominance: float
    ratings: tuple[Rating, ...]


def rater_biases(layout: str, seed: int) -> np.ndarray:
    """``(pool, 3)`` persistent V/A/D biases of the layout's annotator pool."""
    return np.random.default_rng([seed, 30_003]).normal(0.0, 0.12, (POOL[layout], 3))


def to_scale(x: np.ndarray | float, layout: str) -> np.ndarray:
    """Map latent values in [-1, 1] onto the layout's rating scale."""
    lo, hi = SCALES[layout]
    return (lo + hi) / 2 + (hi - lo) / 2 * np.asarray(x)


def annotate(u: Utterance, layout: str, seed: int, biases: np.ndarray) -> Annotation:
    """Simulate the annotators of one utterance."""
    rng = utterance_rng(seed, u.index, 2)
    lo, hi = SCALES[layout]
    cats = emotions_for(layout)
    centres = np.array([c.centre for c in cats])
    raters = rng.choice(POOL[layout], RATERS[layout], replace=False)
    ratings = []
    for r in sorted(raters):
        perceived = np.clip(np.array(u.latent) + biases[r] + rng.normal(0, PERCEPTION_NOISE, 3), -1, 1)
        v, a, d = (int(np.clip(np.rint(x), lo, hi)) for x in to_scale(perceived, layout))
        dist = np.linalg.norm(centres - perceived, axis=1)
        dist[cats.index(u.emotion)] = np.inf
        dist[[c.name == "other" for c in cats]] = np.inf  # nobody mistakes an emotion for "other"
        confusable = cats[int(np.argmin(dist))]
        first = u.emotion if rng.random() < P_TRUE_VOTE else confusable
        votes = (first,) if rng.random() > 0.12 else (first, confusable if first is u.emotion else u.emotion)
        prefix = "E" if layout == "iemocap" else "W"
        ratings.append(Rating(f"{prefix}{r + 1}", votes, v, a, d))
    firsts = [code_of(r.categories[0], layout) for r in ratings]
    codes, counts = np.unique(firsts, return_counts=True)
    code = str(codes[np.argmax(counts)]) if counts.max() * 2 > len(firsts) else NO_MAJORITY[layout]
    mean = np.mean([[r.valence, r.arousal, r.dominance] for r in ratings], axis=0)
    return Annotation(code, float(mean[0]), float(mean[1]), float(mean[2]), tuple(ratings))
