"""Length-bucketed, DDP-aware loaders over the input pipeline's datasets."""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import DataLoader, Sampler

from sermo.features.pipeline import UtteranceDataset, collate_for
from sermo.training.distributed import world as _world


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


def loader(dataset: UtteranceDataset, batch_size: int, *, shuffle: bool, seed: int = 0, workers: int = 0,
           pin: bool = False) -> DataLoader:
    """A DataLoader with length-bucketed batches and :func:`collate`; shuffled loaders (training)
    are sharded across DDP ranks. ``workers`` processes prepare batches beside the training
    (:func:`loader_workers`); ``pin``: batches in page-locked memory, for a GPU to copy from."""
    lengths = [dataset.length(i) for i in range(len(dataset))]
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, seed=seed, shard=shuffle)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_for(dataset), num_workers=workers,
                      pin_memory=pin, persistent_workers=workers > 0)


def loader_workers(asked: int | None, dataset: UtteranceDataset, device, devices: int = 1) -> int:
    """DataLoader worker processes for ``dataset``: ``asked`` (``data.loader_workers``) when set;
    otherwise none on the CPU (the workers would take the cores training needs) and none for
    features computed live (their encoder runs on the accelerator, which a forked worker cannot
    use), and on a GPU up to 4, sharing the machine's cores with the other ranks."""
    import os

    from sermo.features.source import LiveFeatures

    if asked is not None:
        return int(asked)
    if getattr(device, "type", str(device)) != "cuda":
        return 0
    if any(isinstance(s, LiveFeatures) for s in (dataset.audio, dataset.text)):
        return 0
    return max(0, min(4, (os.cpu_count() or 1) // max(devices, 1) - 1))
