"""The dialog context of the text rows: previous turns before the utterance's own words."""

from __future__ import annotations

import numpy as np

from sermo.systems.api import Features


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
    the same interface as a stored feature source."""

    def __init__(self, own: Features, previous: Features):
        self.own, self.previous = own, previous
        # described as the utterance's own features are (the context adds tokens, not layers or width)
        self.name, self.input = own.name, own.input
        self.num_layers, self.dim, self.frame_rate = own.num_layers, own.dim, own.frame_rate

    def has(self, uid: str) -> bool:
        return self.own.has(uid)

    def read(self, uid: str) -> tuple[np.ndarray, list[int]]:
        own, words = self.own.read(uid)
        if not self.previous.has(uid):
            return own, words
        before, before_words = self.previous.read(uid)
        return np.concatenate([before, own], axis=1), list(before_words) + list(words)

    def get(self, uid: str) -> np.ndarray:
        return self.read(uid)[0]

    def length(self, uid: str) -> int:
        return self.own.length(uid) + (self.previous.length(uid) if self.previous.has(uid) else 0)

    def own_length(self, uid: str) -> np.int64:
        """Tokens of the utterance itself (the last ones of :meth:`get`)."""
        return np.int64(self.own.length(uid))
