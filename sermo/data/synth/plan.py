"""What the built-in corpus contains: speakers, dialogs, latent emotions, words, prosody.

:func:`plan_corpus` decides everything about a corpus from a seed, before any audio exists;
rendering (``render.py``) and annotation (``annotate.py``) follow the plan. Every random
choice about utterance ``i`` comes from generators seeded with ``(seed, i, ...)``, so a plan
is reproducible and the audio of one utterance does not depend on how work is split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sermo.data.synth.emotions import EMOTIONS, PRIORS, Emotion, code_of, emotions_for
from sermo.data.synth.espeak import Prosody
from sermo.data.synth.lexicon import compose

ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
MSP_SPLIT_SHARES = {"Train": 0.58, "Development": 0.12, "Test1": 0.15, "Test2": 0.15}


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an espeak voice plus personal prosodic baselines."""

    id: str
    gender: str  # "F" or "M"
    voice: str
    pitch: float
    rate: float
    pitch_range: float
    gain_db: float


@dataclass
class Utterance:
    """Everything about one utterance that the plan fixes.

    ``file`` is the audio path relative to the corpus root; ``group`` is the IEMOCAP dialog or
    the MSP-Podcast podcast; ``partition`` only for MSP-Podcast.
    """

    index: int
    id: str
    file: str
    speaker: Speaker
    group: str
    emotion: Emotion
    latent: tuple[float, float, float]  # valence, arousal, dominance in [-1, 1]
    incongruent: str | None
    text: str
    prosody: Prosody
    gain_db: float
    pre_silence: float
    post_silence: float
    snr_db: float
    partition: str | None = None
    extra: dict = field(default_factory=dict)


def utterance_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The generator for one purpose (``stream``) of utterance ``index``."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def _speaker(rng: np.random.Generator, sid: str, gender: str, voice: str) -> Speaker:
    lo, hi = (48, 66) if gender == "F" else (26, 42)
    return Speaker(sid, gender, voice, pitch=float(rng.uniform(lo, hi)), rate=float(rng.uniform(185, 215)),
                   pitch_range=float(rng.uniform(40, 60)), gain_db=float(rng.uniform(-3, 3)))


def _latent(rng: np.random.Generator, emotion: Emotion) -> tuple[float, float, float]:
    v, a, d = np.clip(np.array(emotion.centre) + rng.normal(0.0, emotion.spread, 3), -1.0, 1.0)
    return float(v), float(a), float(d)


def _prosody(rng: np.random.Generator, spk: Speaker, emo: Emotion, lat) -> tuple[Prosody, float]:
    v, a, d = lat
    rate = spk.rate * np.exp(0.22 * a + 0.06 * d + emo.rate + rng.normal(0, 0.04))
    pitch = spk.pitch + 16 * a + 3 * v + emo.pitch + rng.normal(0, 3)
    prange = spk.pitch_range + 25 * a + 6 * d + emo.pitch_range + rng.normal(0, 5)
    gap = int(round(max(0.0, -3.0 * a))) if a < -0.2 else 0
    gain = spk.gain_db + 7 * a + 3 * d + emo.gain_db + rng.normal(0, 1.0)
    pros = Prosody(spk.voice, int(np.clip(rate, 90, 380)), int(np.clip(pitch, 0, 99)),
                   int(np.clip(prange, 0, 99)), gap)
    return pros, float(gain)


def _make_utterance(seed: int, index: int, uid: str, file: str, spk: Speaker, group: str, emo: Emotion,
                    incongruent_share: float, partition: str | None = None) -> Utterance:
    rng = utterance_rng(seed, index, 0)
    lat = _latent(rng, emo)
    incongruent = None
    if rng.random() < incongruent_share:
        incongruent = "flip" if (abs(lat[0]) > 0.3 and rng.random() < 0.5) else "neutral"
    text = compose(rng, emotion=emo.name, valence=lat[0], arousal=lat[1], incongruent=incongruent)
    prosody, gain = _prosody(rng, spk, emo, lat)
    return Utterance(index, uid, file, spk, group, emo, lat, incongruent, text, prosody, gain,
                     pre_silence=float(rng.uniform(0.08, 0.35)), post_silence=float(rng.uniform(0.08, 0.35)),
                     snr_db=float(rng.uniform(18, 35)), partition=partition)


def _draw_emotion(rng: np.random.Generator, layout: str) -> Emotion:
    names = list(PRIORS[layout])
    p = np.array([PRIORS[layout][n] for n in names])
    return EMOTIONS[names[int(rng.choice(len(names), p=p / p.sum()))]]


def plan_iemocap(n: int, seed: int, incongruent_share: float) -> list[Utterance]:
    """Five sessions of one female and one male speaker, in improvised and scripted dialogs.

    Each dialog has a theme emotion that most of its turns share; turns alternate between
    the two speakers (sometimes one speaks twice), and utterance ids follow IEMOCAP:
    ``Ses01F_impro01_F000``, ``Ses02M_script01_2_M003``.
    """
    rng = np.random.default_rng([seed, 10_001])
    speakers = {}
    for s in range(1, 6):
        for g, variants in (("F", FEMALE_VARIANTS), ("M", MALE_VARIANTS)):
            voice = f"{ACCENTS[(s - 1 + (g == 'M')) % len(ACCENTS)]}+{variants[(s - 1) % len(variants)]}"
            speakers[(s, g)] = _speaker(rng, f"Ses{s:02d}_{g}", g, voice)
    per_session = [n // 5 + (1 if s < n % 5 else 0) for s in range(5)]
    utts: list[Utterance] = []
    for s, count in enumerate(per_session, start=1):
        impro = script = 0
        left = count
        while left > 0:
            size = min(left, int(rng.integers(8, 25)))
            if left - size < 4:
                size = left  # no dialog shorter than 4 turns
            lead = "F" if rng.random() < 0.5 else "M"
            if rng.random() < 0.5:
                impro += 1
                dialog = f"Ses{s:02d}{lead}_impro{impro:02d}"
            else:
                script += 1
                dialog = f"Ses{s:02d}{lead}_script{(script + 1) // 2:02d}_{(script - 1) % 2 + 1}"
            theme = _draw_emotion(rng, "iemocap")
            who = "F" if rng.random() < 0.5 else "M"
            counters = {"F": 0, "M": 0}
            for _ in range(size):
                emo = theme if rng.random() < 0.55 else _draw_emotion(rng, "iemocap")
                uid = f"{dialog}_{who}{counters[who]:03d}"
                counters[who] += 1
                file = f"Session{s}/sentences/wav/{dialog}/{uid}.wav"
                utts.append(_make_utterance(seed, len(utts), uid, file, speakers[(s, who)], dialog, emo,
                                            incongruent_share))
                if rng.random() > 0.15:
                    who = "M" if who == "F" else "F"
            left -= size
    return utts


def plan_msp_podcast(n: int, seed: int, incongruent_share: float) -> list[Utterance]:
    """Podcasts of one to three speakers, each podcast in one split (so splits share no
    speaker, and Test2's speakers appear nowhere else); utterance counts per speaker vary."""
    rng = np.random.default_rng([seed, 20_002])
    n_speakers = int(np.clip(n // 20, 12, 80))
    voices = [f"{a}+{v}" for v in FEMALE_VARIANTS + MALE_VARIANTS for a in ACCENTS]
    order = rng.permutation(len(voices))
    speakers = []
    for k in range(n_speakers):
        voice = voices[order[k % len(voices)]]
        gender = "F" if voice.split("+")[1].startswith("f") else "M"
        speakers.append(_speaker(rng, str(k + 1), gender, voice))
    podcasts: list[list[Speaker]] = []
    i = 0
    while i < n_speakers:
        size = min(int(rng.integers(1, 4)), n_speakers - i)
        podcasts.append(speakers[i:i + size])
        i += size
    weights = rng.gamma(2.0, 1.0, n_speakers)
    per_speaker = rng.multinomial(n - n_speakers, weights / weights.sum()) + 1
    sizes = [int(sum(per_speaker[int(spk.id) - 1] for spk in members)) for members in podcasts]
    splits = _assign_splits(rng, sizes)
    utts: list[Utterance] = []
    for p, (members, split) in enumerate(zip(podcasts, splits), start=1):
        turns = [spk for spk in members for _ in range(per_speaker[int(spk.id) - 1])]
        rng.shuffle(turns)
        for seg, spk in enumerate(turns, start=1):
            uid = f"MSP-PODCAST_{p:04d}_{seg:04d}"
            emo = _draw_emotion(rng, "msp-podcast")
            utts.append(_make_utterance(seed, len(utts), uid, f"Audios/{uid}.wav", spk, f"MSP-PODCAST_{p:04d}",
                                        emo, incongruent_share, partition=split))
    return utts


def _assign_splits(rng: np.random.Generator, sizes: list[int]) -> list[str]:
    """Whole podcasts to splits, so that each split's share of utterances is near its target."""
    names = list(MSP_SPLIT_SHARES)
    total = sum(sizes)
    order = [int(j) for j in rng.permutation(len(sizes))]
    out = [""] * len(sizes)
    filled = dict.fromkeys(names, 0)
    for split, j in zip(names[::-1], sorted(order[:len(names)], key=lambda j: sizes[j])):
        out[j] = split  # every split gets a podcast; the smallest go to the test sets
        filled[split] += sizes[j]
    for j in order[len(names):]:
        split = max(names, key=lambda s: MSP_SPLIT_SHARES[s] * total - filled[s])
        out[j] = split
        filled[split] += sizes[j]
    return out


MINIMUM = {"iemocap": 20, "msp-podcast": 40}
"""The fewest utterances each layout can be planned with."""


def plan_corpus(layout: str, n: int, seed: int, incongruent_share: float = 0.15) -> list[Utterance]:
    """Plan a corpus of ``n`` utterances in ``layout`` (``iemocap`` or ``msp-podcast``).

    Raises:
        ValueError: unknown layout, or too few utterances for the layout.
    """
    if layout not in MINIMUM:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(MINIMUM)}")
    if n < MINIMUM[layout]:
        raise ValueError(f"the {layout} layout needs at least {MINIMUM[layout]} utterances, got {n}")
    plan = plan_iemocap if layout == "iemocap" else plan_msp_podcast
    utts = plan(n, seed, incongruent_share)
    for u in utts:  # every category must have a code in its layout
        code_of(u.emotion, layout)
    return utts


__all__ = ["Speaker", "Utterance", "plan_corpus", "utterance_rng", "emotions_for"]
