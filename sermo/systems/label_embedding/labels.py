"""The label embeddings: TF-IDF keywords of each class's transcripts (``L_t``) and TF-IDF speech
units of each class's audio (``L_s``; the wav2vec 2.0 quantizer's codes or k-means units)."""

from __future__ import annotations

import numpy as np
import torch

from sermo.systems.label_embedding.model import Modality


def tfidf_top_k(docs_by_class: list[list[list]], k: int, stop: set | frozenset = frozenset()) -> list[list]:
    """Per class, the ``k`` terms with the highest TF-IDF, each class's items taken together as
    one document.

    The term frequency is counted over all of a class's training items; the inverse document
    frequency over the classes, ``log((1 + C) / (1 + classes with the term))``, so a term every
    class uses (a function word, the silence unit) scores zero whatever its count and is never
    picked, and a term of one class scores highest. (An IDF over the utterances instead let the
    frequent words of every class top every class's list: ../shared/reviews/tfidf_check.py.)

    Args:
        docs_by_class: per class, its items, each a list of terms (words or unit ids).
        k: terms per class.
        stop: terms never chosen (stop words).

    Returns:
        Per class, its top terms, best first (ties broken by the term's sort order).
    """
    classes = [{t for d in docs for t in d} for docs in docs_by_class]
    vocab = sorted(set().union(*classes) - set(stop), key=str)
    index = {t: i for i, t in enumerate(vocab)}
    df = np.zeros(len(vocab))
    for terms in classes:
        for t in terms:
            if t in index:
                df[index[t]] += 1
    idf = np.log((1 + len(classes)) / (1 + df))
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


def keyword_overlap(top: list[list]) -> float:
    """How much the classes' term lists share: the mean over class pairs of ``|A & B| / |A | B|``
    (0: every class has its own terms, 1: the same list for every class)."""
    sets = [set(t) for t in top]
    pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1:] if a or b]
    return float(np.mean([len(a & b) / len(a | b) for a, b in pairs])) if pairs else 0.0


def words(text) -> list[str]:
    """Lower-case word tokens of a transcript (punctuation stripped)."""
    import re

    return re.findall(r"[a-z']+", str(text).lower())


def kmeans_units(frames: np.ndarray, units: int, seed: int = 0):
    """k-means on ``(n, D)`` frames; returns the fitted model (its ``cluster_centers_``)."""
    from sklearn.cluster import MiniBatchKMeans

    units = min(units, len(frames))
    return MiniBatchKMeans(n_clusters=units, random_state=seed, n_init=3, batch_size=2048).fit(frames)


class LabelEmbeddings:
    """The label embeddings and units of one fold, built from its training split."""

    def __init__(self, ctx):
        self.ctx, self.cfg = ctx, ctx.cfg.model
        self.space = ctx.space
        self._units = None

    def train_by_class(self) -> dict[int, list[str]]:
        labels = self.ctx.labels.category
        out: dict[int, list[str]] = {c: [] for c in range(self.space.num_classes)}
        for u in self.ctx.ids("train"):
            if labels.get(u, -1) >= 0:
                out[labels[u]].append(u)
        return out

    def text_labels(self, init: str, src) -> tuple[torch.Tensor, dict]:
        """``L_t`` in the (standardised) feature space: ``(c, D)`` and what it was made from."""
        from sermo.encoders import get_encoder

        d = self.ctx.cfg.data
        mean, std = self.ctx.feature_stats(src)
        if init == "random":
            return torch.randn(self.space.num_classes, src.dim) * 0.5, {"init": "random"}
        if init == "label_words":
            terms = [[c] for c in self.space.classes]
        else:
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            df = self.ctx.manifest.df.set_index("id")
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
                                                                        zip(self.space.classes, terms)},
                                              "overlap": keyword_overlap(terms)}

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
                train = set(self.ctx.ids("train"))
                seqs = {u: q for u, q in self._quantizer_units(quantizer).items() if u in train}
                self._units = (seqs, lambda ids: quantizer.vectors(ids).mean(0),
                               f"wav2vec 2.0 quantizer ({quantizer.groups} x {quantizer.entries} codes)")
                return self._units
            if self.cfg.speech_units == "quantizer":
                raise ValueError(f"model.speech_units is quantizer but {why}")
        elif self.cfg.speech_units != "kmeans":
            raise ValueError(f"model.speech_units {self.cfg.speech_units!r}; known: auto, quantizer, kmeans")
        probe = Modality(src.dim, 8, num_classes=1, subsample=self.cfg.speech_subsample)
        probe.norm.set(*[s[-1:] for s in self.ctx.feature_stats(src)])
        rng = np.random.default_rng(self.ctx.cfg.train.seed)
        frames: dict[str, np.ndarray] = {}
        for u in self.ctx.ids("train"):
            if not src.has(u):
                continue
            x = torch.from_numpy(np.asarray(src.get(u), dtype=np.float32)[-1:][None])
            h, _ = probe.frames(x, torch.ones(1, x.shape[2], dtype=torch.bool), src.input.pool)
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
            return SpeechQuantizer(folder, device=self.ctx.device), ""
        except (EncoderError, OSError, ValueError) as exc:
            return None, f"the speech encoder has no quantizer: {exc}"

    def _quantizer_units(self, quantizer) -> dict[str, np.ndarray]:
        """Unit sequences of every labelled utterance, computed once per run (audio only)."""
        from tqdm import tqdm

        from sermo.data.audio import AudioError

        ctx = self.ctx
        cached = ctx.shared.get("label_embedding:quantizer_units")
        if cached is None:
            seconds = float(ctx.cfg.data.max_frames) / 50.0
            cached = {}
            ids = [u for u, c in ctx.labels.category.items() if c >= 0]
            for u in tqdm(ids, desc="quantizer units", unit="utt", disable=not ctx.progress):
                try:
                    cached[u] = quantizer.units(ctx.waveform(u, seconds))
                except AudioError:
                    continue  # unreadable audio: the feature extraction reported it already
            ctx.shared["label_embedding:quantizer_units"] = cached
        return cached

    def speech_labels(self, init: str, src, k: int, text_labels: torch.Tensor | None = None):
        """``L_s``: ``(c, D)`` in the standardised speech feature space, and its description."""
        if init == "random":
            return torch.randn(self.space.num_classes, src.dim) * 0.5, {"init": "random"}
        if init == "text":  # of another width, a learned linear map takes it to the speech features'
            if text_labels is None:
                return None, {"init": "text", "skipped": "the recipe has no text encoder to start it from"}
            return text_labels.clone(), {"init": "text", "width": int(text_labels.shape[1])}
        seqs, embed, what = self.units(src)
        docs = [[[int(x) for x in seqs[u]] for u in ids if u in seqs]
                for _, ids in sorted(self.train_by_class().items())]
        top = tfidf_top_k(docs, k)
        everything = sorted({int(x) for d in docs for item in d for x in item})
        emb = np.stack([embed(t if t else everything) for t in top])
        return torch.tensor(emb, dtype=torch.float32), {"init": "codebook", "units": what, "k": k,
                                                        "top_units": [list(map(int, t[:10])) for t in top],
                                                        "overlap": keyword_overlap(top)}
