"""What a system sees while it runs one fold: data, a ``fit`` that resumes, prediction."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from sermo.data.labels import LabelSpace
from sermo.data.manifest import Manifest
from sermo.data.protocols import Fold
from sermo.features import FeatureStore
from sermo.training.config import RunConfig, TrainConfig
from sermo.training.datamodule import FeatureSource, Labels, UtteranceDataset, loader
from sermo.training.task import SystemTask, count_trainable, predict


@dataclass
class RowResult:
    """One row of a system's table for one fold.

    Attributes:
        name: the row name (``audio``, ``cts``, ...).
        modalities: what it uses (``audio``, ``text``).
        trainable_params: trainable parameters of the row's model.
        predictions: per test set ``{"ids", "dims" (n, 3) corpus scale | None, "probs" (n, C) | None}``.
        model: the trained module (for the bundle), or ``None``.
        bundle: whether the row's model is worth serving.
        info: anything else the row reports (shares, weights, ...), JSON-ready.
        skipped: why the row could not run here (then it has no predictions).
        inputs: what the row's model reads when it differs from the recipe's ``data`` section:
            ``{"audio": FeatureSource | None, "text": FeatureSource | None}`` for stored
            features, ``"speech_model"`` / ``"text_model"``: the encoder names the model embeds
            (fine-tuned, fed waveforms / token ids), for the bundle.
    """

    name: str
    modalities: tuple[str, ...]
    trainable_params: int
    predictions: dict[str, dict]
    model: torch.nn.Module | None = None
    bundle: bool = True
    info: dict = field(default_factory=dict)
    skipped: str = ""
    inputs: dict = field(default_factory=dict)


class RunData:
    """Everything a run shares across folds: manifest, labels, feature sources, store."""

    def __init__(self, cfg: RunConfig, manifest: Manifest, space: LabelSpace, store: FeatureStore, *,
                 progress: bool = True):
        self.cfg, self.manifest, self.space, self.store, self.progress = cfg, manifest, space, store, progress
        self.labels = Labels.from_manifest(manifest, space)
        self._sources: dict[tuple, FeatureSource] = {}
        # what a system computes once per run and all its folds read (speaker embeddings,
        # phone alignments, quantizer units), under the system's own keys
        self.shared: dict = {}

    def source(self, name: str, layers=None) -> FeatureSource:
        """Features of encoder ``name`` (extracted on first use, then read from the store)."""
        key = (name, tuple(layers) if layers is not None else None)
        if key not in self._sources:
            self._sources[key] = FeatureSource(name, layers, self.manifest, self.store, progress=self.progress)
        return self._sources[key]

    @property
    def audio(self) -> FeatureSource | None:
        """The recipe's audio features (``data.audio_encoder``)."""
        d = self.cfg.data
        return self.source(d.audio_encoder, d.audio_layers) if d.audio_encoder else None

    @property
    def text(self) -> FeatureSource | None:
        """The recipe's text features (``data.text_encoder``)."""
        d = self.cfg.data
        return self.source(d.text_encoder, d.text_layers) if d.text_encoder else None


class FoldContext:
    """One fold of a run: datasets for its splits, :meth:`fit` and :meth:`predict`."""

    def __init__(self, run: RunData, fold: Fold, folder: Path):
        self.run, self.fold, self.folder = run, fold, folder
        self.cfg = run.cfg
        self._stats: dict[tuple, tuple] = {}
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def num_classes(self) -> int:
        """Classes of the run's label space."""
        return self.run.space.num_classes

    def seed(self, stage: str) -> None:
        """Seed every RNG from (run seed, fold, stage) before building a stage's model, so its
        initial weights do not depend on what ran before it in the process."""
        import zlib

        import lightning as L

        L.seed_everything((self.cfg.train.seed * 1_000_003 + zlib.crc32(f"{self.fold.name}/{stage}".encode()))
                          % (2**31), verbose=False)

    def waveforms(self, max_seconds: float = 20.0) -> dict:
        """Dataset extras that load each utterance's 16 kHz waveform (for models that fine-tune a
        speech encoder): ``wave``, padded in the batch, with its lengths in ``wave_len``."""
        from sermo.data.audio import load_audio

        df = self.run.manifest.df.set_index("id")
        cap = int(max_seconds * 16000)

        def wave(uid: str):
            row = df.loc[uid]
            start = None if row["start"] != row["start"] else float(row["start"])
            end = None if row["end"] != row["end"] else float(row["end"])
            return load_audio(row["audio"], start=start, end=end)[:cap]

        return {"wave": wave}

    def trainable_speech_encoder(self, name: str | None = None):
        """A fine-tunable copy of a speech encoder (``SpeechSSL``; default: the recipe's), or
        ``None`` with the reason when it is not a transformers speech model (log-mel, eGeMAPS)."""
        from sermo.encoders.base import EncoderError
        from sermo.encoders.registry import checkpoint_folder
        from sermo.encoders.speech import SpeechSSL

        name = name or self.cfg.data.audio_encoder
        try:
            kind, folder = checkpoint_folder(name)
            if kind != "speech":
                return None, f"the audio encoder {name!r} is not a speech model"
            return SpeechSSL(folder), ""
        except (EncoderError, OSError, ValueError) as exc:
            return None, f"no trainable copy of {name!r}: {exc}"

    def trainable_text_encoder(self, name: str | None = None):
        """A fine-tunable copy of a text encoder (``TextSSL``; default: the recipe's), or ``None``
        with the reason."""
        from sermo.encoders.base import EncoderError
        from sermo.encoders.registry import checkpoint_folder
        from sermo.encoders.text import TextSSL

        name = name or self.cfg.data.text_encoder
        try:
            kind, folder = checkpoint_folder(name)
            if kind != "text":
                return None, f"the text encoder {name!r} is not a text model"
            return TextSSL(folder, max_tokens=self.cfg.data.max_tokens), ""
        except (EncoderError, OSError, ValueError) as exc:
            return None, f"no trainable copy of {name!r}: {exc}"

    def transcripts(self, manifest=None) -> dict[str, str]:
        """Each utterance's transcript by id (``manifest``: another transcript source, such as
        an ASR-transcribed copy of the run's manifest)."""
        df = (manifest or self.run.manifest).df
        return dict(zip(df["id"], df["transcript"]))

    def input_spec(self) -> dict:
        """What a model's inputs look like: ``{"audio": (layers, dim) | None, "text": ..., "num_classes"}``."""
        a, t = self.run.audio, self.run.text
        return {"audio": (a.num_layers, a.dim) if a else None, "text": (t.num_layers, t.dim) if t else None,
                "num_classes": self.num_classes}

    def feature_stats(self, kind: str, source: FeatureSource | None = None, max_items: int = 400):
        """Per-layer, per-dimension mean and std ``(L, D)`` of the training split's frames; computed
        once per source and fold (every row of a fold normalises with the same statistics)."""
        src = source or (self.run.audio if kind == "audio" else self.run.text)
        key = (id(src), max_items)
        if key not in self._stats:  # the source is kept with its statistics, so its id stays its own
            self._stats[key] = (src, self._compute_stats(src, max_items))
        return self._stats[key][1]

    def _compute_stats(self, src: FeatureSource, max_items: int):
        ids = [u for u in self.fold.train if src.has(u)]
        rng = np.random.default_rng(0)
        if len(ids) > max_items:
            ids = [ids[i] for i in sorted(rng.choice(len(ids), max_items, replace=False))]
        total = np.zeros((src.num_layers, src.dim))
        sq = np.zeros_like(total)
        n = 0
        for u in ids:
            x = np.asarray(src.get(u), dtype=np.float64)  # (L, T, D)
            total += x.sum(1)
            sq += (x**2).sum(1)
            n += x.shape[1]
        mean = total / max(n, 1)
        std = np.sqrt(np.maximum(sq / max(n, 1) - mean**2, 0.0))
        return mean.astype(np.float32), std.astype(np.float32)

    def ids(self, split: str) -> tuple[str, ...]:
        """Utterance ids of ``train``, ``valid`` or a test set name."""
        if split == "train":
            return self.fold.train
        if split == "valid":
            return self.fold.valid
        return self.fold.tests[split]

    def dataset(self, split: str, *, audio: bool = False, text: bool = False,
                audio_source: FeatureSource | None = None, text_source: FeatureSource | None = None,
                extras: dict | None = None, ids=None, labels: Labels | None = None) -> UtteranceDataset:
        """The utterances of a split (or ``ids``, a subset of it) with the requested inputs
        (utterances lacking one are left out); ``labels``: other targets (e.g. with some
        label types masked)."""
        d = self.cfg.data
        return UtteranceDataset(self.ids(split) if ids is None else list(ids), labels or self.run.labels,
                                audio=audio_source or (self.run.audio if audio else None),
                                text=text_source or (self.run.text if text else None),
                                max_frames=d.max_frames, max_tokens=d.max_tokens, extras=extras)

    def fit(self, model: torch.nn.Module, stage: str, train: UtteranceDataset, valid: UtteranceDataset,
            train_cfg: TrainConfig | None = None) -> torch.nn.Module:
        """Train ``model`` as stage ``stage`` of this fold; return it with its best-epoch weights.

        The stage folder keeps ``last.ckpt`` (resumed by a rerun of the same command),
        ``best.ckpt`` (lowest validation loss), ``metrics.csv`` and, once finished, ``DONE``:
        a finished stage is not trained again.
        """
        import lightning as L
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger

        cfg = train_cfg or self.cfg.train
        stage_dir = self.folder / stage
        done = stage_dir / "DONE"
        task = SystemTask(model, cfg)
        if done.is_file():
            state = torch.load(stage_dir / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
            task.load_state_dict(state)
            return task.model
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        monitor = {"loss": "val_loss", "metrics": "val_select"}.get(cfg.select)
        if monitor is None:
            raise ValueError(f"unknown train.select {cfg.select!r}; known: loss, metrics")
        callbacks = [ModelCheckpoint(dirpath=stage_dir, filename="best", monitor=monitor, mode="min",
                                     save_last=True, save_top_k=1, enable_version_counter=False)]
        if cfg.early_stopping:
            callbacks.append(EarlyStopping(monitor=monitor, patience=cfg.early_stopping, mode="min"))
        trainer = L.Trainer(
            max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
            # systems leave some parameters out of some losses (a one-layer weighting, a
            # head a stage does not train): DDP must look for them
            strategy="ddp_find_unused_parameters_true" if cfg.devices * cfg.num_nodes > 1 and cfg.strategy == "auto"
            else cfg.strategy,
            gradient_clip_val=cfg.grad_clip, callbacks=callbacks,
            logger=CSVLogger(str(stage_dir), name="", version=""), enable_progress_bar=self.run.progress,
            enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
            log_every_n_steps=1, deterministic=False)
        last = stage_dir / "last.ckpt"
        trainer.fit(task, loader(train, cfg.batch_size, shuffle=True, seed=cfg.seed),
                    loader(valid, cfg.batch_size, shuffle=False), ckpt_path=str(last) if last.is_file() else None)
        if trainer.is_global_zero:
            best = callbacks[0].best_model_path or str(last)
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
            task.load_state_dict(state)
            if Path(best).name != "best.ckpt":
                torch.save({"state_dict": state}, stage_dir / "best.ckpt")
            done.write_text(json.dumps({"best_epoch": _best_epoch(stage_dir), "epochs": trainer.current_epoch}))
        return task.model

    def predict(self, model: torch.nn.Module, make_dataset, splits=None) -> dict[str, dict]:
        """Predictions on every test set (or on ``splits``, e.g. ``["valid"]``):
        ``make_dataset(split) -> UtteranceDataset``.

        Returns:
            ``{split: {"ids", "dims" (corpus scale) | None, "probs" | None}}``.
        """
        out = {}
        for name in (self.fold.tests if splits is None else splits):
            ds = make_dataset(name)
            raw = predict(model, loader(ds, 64, shuffle=False))
            dims = None if raw["dims"] is None else self.run.labels.to_corpus_scale(raw["ids"], raw["dims"])
            probs = None if raw["logits"] is None else softmax(raw["logits"])
            out[name] = {"ids": raw["ids"], "dims": dims, "probs": probs}
        return out

    def batches(self, dataset: UtteranceDataset, batch_size: int = 64):
        """Batches of a dataset in a fixed order (for a system's own passes over data)."""
        return loader(dataset, batch_size, shuffle=False)

    def skipped_row(self, name: str, modalities, reason: str) -> RowResult:
        """A row that could not run here, reported with its reason instead of numbers."""
        return RowResult(name, tuple(modalities), 0, {}, bundle=False, skipped=reason)

    def row(self, name: str, modalities, model: torch.nn.Module, predictions: dict, **kw) -> RowResult:
        """A :class:`RowResult` with the model's trainable parameter count."""
        return RowResult(name, tuple(modalities), count_trainable(model), predictions, model=model, **kw)

    def with_train(self, **changes) -> TrainConfig:
        """The run's train config with some fields changed (for stages that differ)."""
        return replace(self.cfg.train, **changes)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, C)`` scores."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def aligned_probs(*predictions: dict) -> tuple[list[str], list[np.ndarray]]:
    """The utterances every one of several prediction dicts (``{"ids", "probs"}``) covers, in
    the first one's order, and each dict's probabilities for them (for score fusion)."""
    common = set.intersection(*(set(p["ids"]) for p in predictions))
    ids = [u for u in predictions[0]["ids"] if u in common]
    out = []
    for p in predictions:
        at = {u: i for i, u in enumerate(p["ids"])}
        out.append(np.asarray(p["probs"])[[at[u] for u in ids]])
    return ids, out


def _best_epoch(stage_dir: Path) -> int | None:
    import pandas as pd

    path = stage_dir / "metrics.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    if "val_loss" not in df or df["val_loss"].isna().all():
        return None
    return int(df.loc[df["val_loss"].idxmin(), "epoch"])
