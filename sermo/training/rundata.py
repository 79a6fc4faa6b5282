"""What a run shares across its folds (:class:`RunData`): manifest, labels, feature sources,
the store, speaker embeddings."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from sermo.config import RunConfig
from sermo.data.audio import SAMPLE_RATE
from sermo.data.labels import Labels, LabelSpace, label_summary
from sermo.data.manifest import Manifest
from sermo.features import FeatureStore
from sermo.features.pipeline import ManifestUtterances
from sermo.features.source import FeatureSource, MemoryBudget
from sermo.systems.api import Features
from sermo.training.plan import Plan
from sermo.training.progress import RunProgress

WAVE_SECONDS = 20.0
"""Seconds of each utterance a fine-tuned speech encoder reads in training."""


class RunData:
    """Everything a run shares across folds: manifest, labels, feature sources, store.

    ``usable``: the utterances the run reads (features are extracted for these only); ``plan``
    says which encoders' features are stored and which computed live.
    """

    def __init__(self, cfg: RunConfig, manifest: Manifest, space: LabelSpace, store: FeatureStore, *,
                 progress: bool = True, usable: set[str] | None = None, plan: Plan | None = None,
                 epochs: RunProgress | None = None):
        from sermo.accelerator import resolve_device

        self.cfg, self.manifest, self.space, self.store, self.progress = cfg, manifest, space, store, progress
        self.epochs = epochs  # the run-level progress bar every fold's training advances
        self.device = resolve_device(cfg.train.accelerator)
        self.labels = Labels.from_manifest(manifest, space)
        self.usable = set(manifest.ids) if usable is None else set(usable)
        self.used = self.restrict(manifest)
        self.plan = plan
        self.utterances = ManifestUtterances(manifest)
        self._sources: dict[tuple, Features] = {}
        self.memory = MemoryBudget(cfg.data.memory_gb * 1e9)
        self._audio_keys: dict[str, str] | None = None
        self._speakers: dict[int, Callable[[str], np.ndarray]] = {}
        self._samples: dict[str, int] = {}
        self._rows = manifest.df.set_index("id")
        self.shared: dict = {}
        self.unplanned: set[str] = set()  # features read that the plan did not size (a system's declarations lack them)

    def restrict(self, manifest: Manifest) -> Manifest:
        """The rows of ``manifest`` the run uses, in its order."""
        if len(self.usable) == len(manifest) and self.usable == set(manifest.ids):
            return manifest
        return manifest.subset([u for u in manifest.ids if u in self.usable])

    def source(self, name: str, layers: Sequence[int] | None = None, manifest: Manifest | None = None, *,
               pooled: bool = True) -> Features:
        """Features of encoder ``name`` for the used utterances (of ``manifest``, default the
        run's): stored (extracted on first use) or live, as the plan says; speech frames averaged
        by ``data.frame_pool`` unless not ``pooled``."""
        pool = self.cfg.data.frame_pool if pooled else 1
        key = (name, tuple(layers) if layers is not None else None, pool)
        self.check_planned(name, layers)
        mode = self.plan.mode(name, layers) if self.plan is not None else "stored"
        if manifest is not None:
            manifest = self.restrict(manifest)
            return self._make_source(mode, name, layers, manifest, pool)
        if key not in self._sources:
            self._sources[key] = self._make_source(mode, name, layers, self.used, pool)
        return self._sources[key]

    def check_planned(self, name: str, layers: Sequence[int] | None) -> None:
        """Note features the plan did not size (``results.json`` lists them as ``unplanned``)."""
        if self.plan is not None and self.plan.entry(name, layers) is None:
            self.unplanned.add(name + ("" if layers is None else f" layers {list(layers)}"))

    @property
    def audio(self) -> Features | None:
        d = self.cfg.data
        return self.source(d.audio_encoder, d.audio_layers) if d.audio_encoder else None

    @property
    def text(self) -> Features | None:
        d = self.cfg.data
        return self.source(d.text_encoder, d.text_layers) if d.text_encoder else None

    def label_summary(self) -> str:
        """What labels the corpus has and what the label space takes of them (for errors)."""
        return label_summary(self.manifest, self.space)

    def _make_source(self, mode: str, name: str, layers: Sequence[int] | None, manifest: Manifest,
                     pool: int) -> Features:
        from sermo.features.source import LiveSource

        dtype, padding = self.cfg.data.feature_dtype, self.cfg.data.speech_padding
        if mode == "live":
            return LiveSource(name, layers, manifest, self.store, device=self.device, dtype=dtype, pool=pool,
                              padding=padding)
        return FeatureSource(name, layers, manifest, self.store, progress=self.progress, device=self.device,
                             dtype=dtype, pool=pool, memory=self.memory, padding=padding)

    def readable(self, uid: str) -> bool:
        """Whether an utterance's audio could be read (it has a content key in the store)."""
        if self._audio_keys is None:
            from sermo.features import feature_keys

            self._audio_keys = feature_keys(self.used, "audio", self.store)
        return uid in self._audio_keys

    def samples(self, uid: str) -> int:
        """16 kHz samples of an utterance (cut to what a fine-tuned encoder reads), from the store's index."""
        if uid not in self._samples:
            row = self._rows.loc[uid]
            n = self.store.audio_samples(str(row["audio"]), row["start"], row["end"])
            self._samples[uid] = min(n, int(WAVE_SECONDS * SAMPLE_RATE))
        return self._samples[uid]

    def speaker_table(self, max_utterances: int) -> Callable[[str], np.ndarray]:
        """``uid -> (256,)``: the speaker's mean Resemblyzer embedding, else the utterance's own."""
        if max_utterances not in self._speakers:
            from sermo.encoders.speaker import chosen_utterances, speaker_embeddings
            from sermo.features import feature_keys

            # every utterance of a speaker may count, labelled or not (the embedding needs no labels);
            # only those averaged (and the run's own utterances without a speaker) are encoded
            df = self.manifest.df
            speakers = dict(zip(df["id"], df["speaker"]))
            readable = feature_keys(self.manifest, "audio", self.store)
            chosen = chosen_utterances(speakers, readable, max_utterances=max_utterances, seed=self.cfg.train.seed)
            need = {u for ids in chosen.values() for u in ids}
            need |= {u for u in self.usable if speakers.get(u) is None and u in readable}
            self.check_planned("resemblyzer", None)
            src = FeatureSource("resemblyzer", None, self.manifest.subset([u for u in df["id"] if u in need]),
                                self.store, progress=self.progress, device=self.device)
            own = {u: np.asarray(src.get(u), dtype=np.float32).ravel() for u in need if src.has(u)}
            mean = speaker_embeddings(own, speakers, max_utterances=max_utterances, seed=self.cfg.train.seed)
            zero = np.zeros(src.dim, dtype=np.float32)

            def embedding(uid: str) -> np.ndarray:
                spk = speakers.get(uid)
                return mean[spk] if spk in mean else own.get(uid, zero)

            self._speakers[max_utterances] = embedding
        return self._speakers[max_utterances]
