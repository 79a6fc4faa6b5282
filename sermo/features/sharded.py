"""Sharded extraction across processes, GPUs or nodes with Lightning (``predict`` under DDP).

Every rank reads the same manifest; Lightning's distributed sampler gives each rank its
share of utterances. A rank loads an utterance, hashes it, and encodes it only when the
store lacks it; entries are content-addressed and written atomically, so ranks never
conflict and an interrupted sharded run resumes like a single-process one. ``sermo extract
--devices N`` takes this path (on CPU too, with gloo).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sermo.data.audio import AudioError, load_audio
from sermo.data.manifest import Manifest
from sermo.features.extraction import ExtractReport
from sermo.features.store import FeatureStore, _none, text_content_key


class _Items(Dataset):
    """Utterance ``i`` of the manifest: ``{"id", "key", "input"}``; ``input`` is ``None`` when
    the store already has it, ``error`` is set when it cannot be read."""

    def __init__(self, manifest: Manifest, modality: str, store_root: str, identity):
        self.rows = manifest.df[["id", "audio", "start", "end", "transcript"]].to_dict("records")
        self.modality, self.store_root, self.identity = modality, store_root, identity
        self._store: FeatureStore | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        if self._store is None:  # one connection per worker process
            self._store = FeatureStore(self.store_root)
        r = self.rows[i]
        if self.modality == "text":
            if r["transcript"] is None:
                return {"id": r["id"], "error": "no transcript"}
            item: str | np.ndarray
            key, item = text_content_key(str(r["transcript"])), str(r["transcript"])
        else:
            try:
                samples = load_audio(str(r["audio"]), start=_none(r["start"]), end=_none(r["end"]))
            except AudioError as exc:
                return {"id": r["id"], "error": str(exc)}
            key, item = self._store.audio_key(str(r["audio"]), r["start"], r["end"], samples=samples), samples
        cached = self._store.has(self.identity, key)
        return {"id": r["id"], "key": key, "input": None if cached else item}


class _ExtractTask(L.LightningModule):
    def __init__(self, encoder, store_root: str):
        super().__init__()
        self.encoder, self.store_root = encoder, store_root
        self.counts = torch.zeros(3, dtype=torch.long)  # computed, cached, skipped
        self.skipped: list[tuple[str, str]] = []
        self._store: FeatureStore | None = None

    def on_predict_start(self) -> None:
        self.encoder.to(self.device)  # the rank's own device (the encoder is not a submodule Lightning moves)

    def predict_step(self, batch: list[dict], batch_idx: int) -> int:
        if self._store is None:
            self._store = FeatureStore(self.store_root)
        todo = [b for b in batch if b.get("input") is not None]
        for b in batch:
            if "error" in b:
                self.counts[2] += 1
                self.skipped.append((b["id"], b["error"]))
            elif b["input"] is None:
                self.counts[1] += 1
        if todo:
            for b, out in zip(todo, self.encoder.encode_batch([b["input"] for b in todo])):
                self._store.put(self.encoder.identity, b["key"], out)
            self.counts[0] += len(todo)
        return len(todo)

    def on_predict_epoch_end(self) -> None:
        import sys

        if not self.trainer.is_global_zero:  # rank 0 reports its own in the summary
            for uid, why in self.skipped:
                print(f"  skipped {uid} (rank {self.trainer.global_rank}): {why}", file=sys.stderr)
        # summed over ranks while the process group is alive (padding may count an item twice)
        self.counts = self.trainer.strategy.reduce(self.counts.float().to(self.device), reduce_op="sum").long().cpu()


def extract_sharded(manifest: Manifest, encoder, store: FeatureStore, *, devices: int = 2, num_nodes: int = 1,
                    accelerator: str = "cpu", batch_size: int = 8, progress: bool = True) -> ExtractReport | None:
    """Extract with ``devices`` x ``num_nodes`` ranks under Lightning DDP.

    Returns:
        The summed report on global rank 0; ``None`` on the other ranks.
    """
    import time
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    t0 = time.perf_counter()
    task = _ExtractTask(encoder, str(store.root))
    data = DataLoader(_Items(manifest, encoder.modality, str(store.root), encoder.identity), batch_size=batch_size,
                      collate_fn=list, num_workers=0)
    strategy = "ddp" if devices * num_nodes > 1 else "auto"
    trainer = L.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                        logger=False, enable_checkpointing=False, enable_progress_bar=progress,
                        enable_model_summary=False)
    trainer.predict(task, dataloaders=data, return_predictions=False)
    rank_zero = trainer.is_global_zero
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # an undestroyed gloo group aborts the process at exit ("terminate called without an
        # active exception"): take it down while every rank is still here
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if not rank_zero:
        return None
    computed, cached, skipped = (int(x) for x in task.counts)
    return ExtractReport(encoder.name, computed=computed, cached=cached, skipped=task.skipped,
                         wall_seconds=time.perf_counter() - t0)
