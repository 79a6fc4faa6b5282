"""Words for the built-in corpus: a small grammar whose sentiment follows valence.

A sentence is an optional category cue phrase (anger, sadness and disgust words differ)
followed by a core clause from a template whose evaluative words are drawn by closeness to
a target valence. The target is the utterance's latent valence, except for the share of
utterances whose words disagree with their emotion: they get neutral wording, or words of
the opposite sentiment (positive words said angrily).

:data:`WORD_VALENCE` is the lexicon (word -> valence in [-1, 1]); :func:`lexicon_score`
scores any text with it, the simple text feature the corpus tests use.
"""

from __future__ import annotations

import re

import numpy as np

# Evaluative adjectives with their valence.
ADJECTIVES: dict[str, float] = {
    "wonderful": 0.9, "amazing": 0.9, "perfect": 0.9, "fantastic": 0.9, "brilliant": 0.8,
    "lovely": 0.8, "beautiful": 0.8, "great": 0.75, "delightful": 0.8, "cheerful": 0.7,
    "pleasant": 0.5, "nice": 0.5, "good": 0.5, "sweet": 0.55, "decent": 0.3, "fine": 0.2,
    "okay": 0.05, "ordinary": 0.0, "usual": 0.0, "normal": 0.0, "plain": -0.05, "quiet": 0.0,
    "strange": -0.2, "boring": -0.35, "tiring": -0.4, "wrong": -0.5, "bad": -0.6,
    "unfair": -0.6, "useless": -0.7, "stupid": -0.7, "ugly": -0.7, "painful": -0.75,
    "miserable": -0.8, "hopeless": -0.85, "awful": -0.9, "terrible": -0.9, "horrible": -0.9,
}
# Verbs of attitude with their valence.
VERBS: dict[str, float] = {
    "love": 0.9, "adore": 0.9, "enjoy": 0.7, "like": 0.5, "appreciate": 0.6, "accept": 0.1,
    "remember": 0.0, "noticed": 0.0, "checked": 0.0, "doubt": -0.3, "dislike": -0.55,
    "regret": -0.6, "resent": -0.75, "hate": -0.9, "despise": -0.9,
}
NOUNS = ("meeting", "dinner", "car", "house", "job", "plan", "phone call", "weekend", "letter",
         "movie", "trip", "party", "train ride", "office", "garden", "report", "idea", "news",
         "class", "game", "wedding", "interview", "apartment", "present", "song")
PLACES = ("office", "beach", "station", "kitchen", "park", "hospital", "airport", "restaurant",
          "market", "school")
PEOPLE = ("my brother", "your mother", "the manager", "our neighbour", "my friend", "the doctor",
          "your sister", "the teacher", "my father", "the landlord")

# Cue phrases of each emotion's vocabulary (said before the core clause).
CUES: dict[str, tuple[str, ...]] = {
    "angry": ("How dare you", "I am sick of this", "Stop it right now", "This is outrageous",
              "I am furious", "Do not ever do that again", "Shut up and listen", "Get out of here"),
    "sad": ("I miss the old days", "I feel so alone", "Nobody cares anymore", "It is all over now",
            "I lost everything", "I cannot go on like this", "I am so sorry", "Everything is gone"),
    "happy": ("I am so glad", "That is great news", "We did it", "I love this",
              "What a day", "Thank you so much", "This makes me smile", "I feel good"),
    "excited": ("Oh wow", "Guess what", "I cannot wait", "This is incredible", "Yes, finally",
                "You will not believe it", "Let us go right now", "Look at this"),
    "neutral": ("Okay", "Well", "So", "Let me see", "I think", "Right", "As I said", "By the way"),
    "frustrated": ("Why does this keep happening", "I already told you", "This never works",
                   "Whatever", "I have been waiting for hours", "Not again", "Seriously",
                   "How many times do I have to ask"),
    "surprised": ("Really", "No way", "I did not expect that", "What", "Oh my", "Are you serious",
                  "That is unbelievable", "Since when"),
    "fearful": ("I am scared", "What was that noise", "Please help me", "Something is wrong",
                "I am afraid", "Do not leave me here", "Someone is outside", "I cannot breathe"),
    "disgusted": ("That is gross", "Ugh", "It smells rotten", "How revolting", "That is sick",
                  "Get that filth away", "It makes me want to throw up", "Yuck"),
    "contempt": ("How pathetic", "Typical", "You call that work", "Spare me", "As if you knew",
                 "What a joke", "Nice try", "Oh please"),
    "other": ("Hmm", "Anyway", "I suppose", "Who knows", "Fair enough", "In a way", "Maybe", "Perhaps"),
}

# Core clause templates; {adj} and {verb} carry valence, the rest is content.
TEMPLATES = (
    "the {noun} was {adj}",
    "it is a {adj} {noun}",
    "I {verb} this {noun}",
    "we had a {adj} time at the {place}",
    "{person} said the {noun} was {adj}",
    "your {noun} looks {adj} today",
    "I {verb} what {person} did with the {noun}",
    "the {place} was {adj} this morning",
    "honestly the whole {noun} felt {adj}",
    "you know I {verb} the {noun} at the {place}",
)

_TOKEN = re.compile(r"[a-z']+")
WORD_VALENCE: dict[str, float] = {**ADJECTIVES, **VERBS}
"""The lexicon: valence of every evaluative word of the grammar."""


def _pick_graded(rng: np.random.Generator, words: dict[str, float], target: float, sharpness: float = 6.0) -> str:
    names = list(words)
    vals = np.array([words[n] for n in names])
    weights = np.exp(-sharpness * np.abs(vals - target))
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def compose(rng: np.random.Generator, *, emotion: str, valence: float, arousal: float,
            incongruent: str | None = None) -> str:
    """Compose the words of one utterance.

    Args:
        rng: the utterance's random generator.
        emotion: latent emotion name (picks the cue vocabulary).
        valence: latent valence in [-1, 1] (drives the evaluative words).
        arousal: latent arousal in [-1, 1] (only punctuation: '!' is likelier when high).
        incongruent: ``None`` (words follow the emotion), ``"neutral"`` (neutral cues and
            words), or ``"flip"`` (cues and words of the opposite sentiment).

    Returns:
        The sentence, capitalised, with final punctuation.
    """
    target, cue_emotion = valence, emotion
    if incongruent == "neutral":
        target, cue_emotion = 0.0, "neutral"
    elif incongruent == "flip":
        target = -valence if abs(valence) > 0.2 else (0.7 if valence <= 0 else -0.7)
        cue_emotion = "happy" if target > 0 else "frustrated"
    target = float(np.clip(target + rng.normal(0.0, 0.12), -1.0, 1.0))
    core = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(
        noun=NOUNS[int(rng.integers(len(NOUNS)))],
        place=PLACES[int(rng.integers(len(PLACES)))],
        person=PEOPLE[int(rng.integers(len(PEOPLE)))],
        adj=_pick_graded(rng, ADJECTIVES, target),
        verb=_pick_graded(rng, VERBS, target),
    )
    parts = []
    if rng.random() < 0.7:
        parts.append(CUES[cue_emotion][int(rng.integers(len(CUES[cue_emotion])))])
    parts.append(core)
    if rng.random() < 0.12:  # a second clause makes longer, more varied utterances
        parts.append(TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(
            noun=NOUNS[int(rng.integers(len(NOUNS)))], place=PLACES[int(rng.integers(len(PLACES)))],
            person=PEOPLE[int(rng.integers(len(PEOPLE)))], adj=_pick_graded(rng, ADJECTIVES, target),
            verb=_pick_graded(rng, VERBS, target)))
    text = ", ".join(parts)
    end = "?" if cue_emotion == "surprised" and rng.random() < 0.5 else (
        "!" if arousal > 0.4 and rng.random() < 0.5 else ".")
    return text[0].upper() + text[1:] + end


def lexicon_score(text: str) -> float:
    """Mean valence of the lexicon words in ``text`` (0 when it has none)."""
    vals = [WORD_VALENCE[w] for w in _TOKEN.findall(text.lower()) if w in WORD_VALENCE]
    return float(np.mean(vals)) if vals else 0.0
