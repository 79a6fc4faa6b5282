"""Datasets over a manifest + the feature store, length-bucketed batches, collation to :class:`Batch`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sermo.data.batch import Batch, pad_sequences
from sermo.data.labels import LabelSpace
from sermo.data.manifest import DIMENSIONS, Manifest
from sermo.features import FeatureStore, extract, feature_keys


class FeatureSource:
    """Features of one frozen encoder for a manifest, extracted into the store when missing.

    Args:
        name: encoder name (registry, Hub id or folder).
        layers: hidden states to keep (``None``: all).
        manifest: the utterances.
        store: the feature store.
    """

    def __init__(self, name: str, layers, manifest: Manifest, store: FeatureStore, *, progress: bool = True):
        from sermo.encoders import get_encoder

        encoder = get_encoder(name, layers=layers)
        self.name, self.modality = name, encoder.modality
        self.report = extract(manifest, encoder, store, verify=False, progress=progress)
        self.identity = encoder.identity
        self.num_layers, self.dim = len(encoder.layers), encoder.dim
        self.frame_rate = encoder.frame_rate
        self.keys = feature_keys(manifest, encoder.modality, store)
        self.store = store
        self._lengths: dict[str, int] = {}

    def has(self, uid: str) -> bool:
        """Whether the utterance has features (readable audio / a transcript)."""
        return uid in self.keys

    def get(self, uid: str) -> np.ndarray:
        """``(layers, frames, dim)`` features of one utterance (memory-mapped float16)."""
        return self.store.get(self.identity, self.keys[uid]).hidden

    def length(self, uid: str) -> int:
        """Frames (or tokens) of one utterance; read from the store once, then remembered."""
        if uid not in self._lengths:
            self._lengths[uid] = int(self.get(uid).shape[1])
        return self._lengths[uid]


@dataclass
class Labels:
    """Targets of a manifest: dims scaled to [0, 1] per corpus scale, class indices, scales."""

    dims: dict[str, np.ndarray]
    category: dict[str, int]
    scale: dict[str, tuple[float, float]]

    @classmethod
    def from_manifest(cls, manifest: Manifest, space: LabelSpace) -> "Labels":
        df = manifest.df
        lo = df["scale_min"].to_numpy(dtype=float)
        hi = df["scale_max"].to_numpy(dtype=float)
        raw = df[list(DIMENSIONS)].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            norm = (raw - lo[:, None]) / (hi - lo)[:, None]
        cats = space.indices(df["category"].tolist())
        ids = df["id"].tolist()
        return cls(dims={u: norm[i].astype(np.float32) for i, u in enumerate(ids)},
                   category={u: int(cats[i]) for i, u in enumerate(ids)},
                   scale={u: (float(lo[i]), float(hi[i])) for i, u in enumerate(ids)})

    def to_corpus_scale(self, ids: list[str], dims01: np.ndarray) -> np.ndarray:
        """Map ``(n, 3)`` [0, 1] predictions back to each utterance's corpus scale."""
        lo = np.array([self.scale[u][0] for u in ids], dtype=float)
        hi = np.array([self.scale[u][1] for u in ids], dtype=float)
        lo, hi = np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)
        return dims01 * (hi - lo)[:, None] + lo[:, None]


class UtteranceDataset(Dataset):
    """Items of one split: ``{"id", "audio" (L,T,D) | None, "text" (L,N,D) | None, "dims", "category"}``.

    ``extras`` maps an extra name to a function ``uid -> array`` (speaker embeddings, ...);
    arrays of equal shape are stacked in the batch, ``(T,)`` sequences padded.
    """

    def __init__(self, ids, labels: Labels, *, audio: FeatureSource | None = None, text: FeatureSource | None = None,
                 max_frames: int = 3000, max_tokens: int = 128, extras: dict | None = None):
        self.ids = [u for u in ids if (audio is None or audio.has(u)) and (text is None or text.has(u))]
        self.dropped = len(list(ids)) - len(self.ids)
        self.labels, self.audio, self.text = labels, audio, text
        self.max_frames, self.max_tokens = max_frames, max_tokens
        self.extras = extras or {}

    def __len__(self) -> int:
        return len(self.ids)

    def length(self, i: int) -> int:
        """Sequence length of item ``i`` (frames, else tokens), for bucketing."""
        uid = self.ids[i]
        src = self.audio or self.text
        return 1 if src is None else src.length(uid)

    def __getitem__(self, i: int) -> dict:
        uid = self.ids[i]
        item = {"id": uid, "dims": self.labels.dims[uid], "category": self.labels.category[uid]}
        if self.audio is not None:
            item["audio"] = self.audio.get(uid)[:, : self.max_frames]
        if self.text is not None:
            item["text"] = self.text.get(uid)[:, : self.max_tokens]
        for name, fn in self.extras.items():
            item[name] = fn(uid)
        return item


SEQUENCES = {"wave", "phones", "tokens"}
"""Extras that are sequences even when a batch happens to hold equal lengths."""


def collate(items: list[dict]) -> Batch:
    """Stack items into a :class:`Batch` (padding audio frames and text tokens)."""
    batch = Batch(ids=[it["id"] for it in items],
                  dims=torch.from_numpy(np.stack([it["dims"] for it in items]).astype(np.float32)),
                  category=torch.tensor([it["category"] for it in items], dtype=torch.long))
    if "audio" in items[0]:
        batch.audio, batch.audio_mask = pad_sequences([it["audio"] for it in items])
    if "text" in items[0]:
        batch.text, batch.text_mask = pad_sequences([it["text"] for it in items])
    for key in items[0]:
        if key in ("id", "dims", "category", "audio", "text"):
            continue
        values = [np.asarray(it[key]) for it in items]
        if key not in SEQUENCES and all(v.shape == values[0].shape for v in values):
            batch.extras[key] = torch.from_numpy(np.stack(values))
        else:  # sequences: pad with zeros along the first axis, lengths in <key>_len
            n = max(len(v) for v in values)
            padded = np.zeros((len(values), n) + values[0].shape[1:], dtype=values[0].dtype)
            for j, v in enumerate(values):
                padded[j, : len(v)] = v
            batch.extras[key] = torch.from_numpy(padded)
            batch.extras[f"{key}_len"] = torch.tensor([len(v) for v in values], dtype=torch.long)
    return batch


class BucketBatchSampler(Sampler):
    """Batches of similar length: shuffle (seed + epoch), sort within pools of 50 batches, cut,
    shuffle the batches. With ``shard`` (training under DDP) each rank takes every world-th
    batch, padded to an equal count; evaluation loaders see every batch on every rank."""

    def __init__(self, lengths: list[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 shard: bool = False):
        self.lengths, self.batch_size, self.shuffle, self.seed = lengths, batch_size, shuffle, seed
        self.shard = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop so each epoch has its own (reproducible) order."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        pool = self.batch_size * 50
        batches = []
        for s in range(0, n, pool):
            chunk = sorted(order[s:s + pool].tolist(), key=lambda i: self.lengths[i])
            batches += [chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        world, rank = _world() if self.shard else (1, 0)
        if world > 1:
            total = math.ceil(len(batches) / world) * world
            batches = (batches * 2)[:total][rank::world]
        return batches

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        world, _ = _world() if self.shard else (1, 0)
        n = math.ceil(len(self.lengths) / self.batch_size)
        return math.ceil(n / world) if world > 1 else n


def is_rank_zero() -> bool:
    """True in the process that writes results (global rank 0, or no distributed run)."""
    return _world()[1] == 0


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def loader(dataset: UtteranceDataset, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader with length-bucketed batches and :func:`collate`; shuffled loaders (training)
    are sharded across DDP ranks."""
    lengths = [dataset.length(i) for i in range(len(dataset))]
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, seed=seed, shard=shuffle)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0)
