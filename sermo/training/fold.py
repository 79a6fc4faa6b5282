"""The engine's side of the system contract: :class:`FoldRun` implements
:class:`~sermo.systems.api.FoldContext` over a run's manifest, feature store and Lightning."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Collection, ContextManager, Iterable, Iterator, Sequence

import numpy as np
import torch

from sermo.accelerator import lightning_accelerator
from sermo.config import TrainConfig
from sermo.data.audio import SAMPLE_RATE
from sermo.data.batch import Batch
from sermo.data.io import atomic_path, write_json_atomic, write_text_atomic
from sermo.data.labels import Labels
from sermo.data.manifest import DIMENSIONS, Manifest
from sermo.data.protocols import Fold
from sermo.data.spec import InputSpec, ModelSpec
from sermo.encoders.text import TextSSL
from sermo.encoders.trainable import TrainableEncoder
from sermo.evaluation.metrics import score_predictions
from sermo.evaluation.runfolder import ANALYSIS
from sermo.features.pipeline import ManifestUtterances, UtteranceDataset
from sermo.systems.api import Dataset, Features, M, Predictions, Row, RowResult
from sermo.systems.common import softmax
from sermo.training.datamodule import loader, loader_workers
from sermo.training.distributed import barrier, is_rank_zero, rank_zero_first
from sermo.training.resume import atomic_checkpoint_io, merge_metrics, resume_from, set_metrics_aside
from sermo.training.rundata import WAVE_SECONDS, RunData
from sermo.training.task import SystemTask, count_trainable, load_checkpoint, predict


class FoldRun:
    """One fold of a run (see :class:`~sermo.systems.api.FoldContext` for every member)."""

    def __init__(self, run: RunData, fold: Fold, folder: Path, *, index: int = 1):
        self.run, self.fold, self.folder, self.index = run, fold, folder, index
        self.name = fold.name
        self.cfg = run.cfg
        self.manifest, self.labels, self.space = run.manifest, run.labels, run.space
        self.num_classes = run.space.num_classes
        self.tests = tuple(fold.tests)
        self.shared, self.progress = run.shared, run.progress
        self._stats: dict[tuple, tuple] = {}
        self._encoders: dict[tuple, tuple] = {}
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def audio(self) -> Features | None:
        return self.run.audio

    @property
    def text(self) -> Features | None:
        return self.run.text

    # -- data --------------------------------------------------------------------------
    def ids(self, split: str) -> tuple[str, ...]:
        ids = self.fold.train if split == "train" else self.fold.valid if split == "valid" else self.fold.tests[split]
        usable = self.run.usable
        return tuple(u for u in ids if u in usable)

    def is_analysis_fold(self, count: int) -> bool:
        return self.index <= count

    def analysis_folder(self) -> Path:
        path = self.folder / ANALYSIS
        path.mkdir(exist_ok=True)
        return path

    def rank_zero_first(self) -> ContextManager[None]:
        return rank_zero_first()

    def write_analysis(self, name: str, data: Any) -> Path:
        path = self.analysis_folder() / name
        if is_rank_zero():  # every rank computed it (the training in it is collective); one writes it
            write_json_atomic(path, data)
        return path

    def features(self, name: str, layers: Sequence[int] | None = None, *, manifest: Manifest | None = None,
                 pooled: bool = True) -> Features:
        return self.run.source(name, layers, None if manifest is self.manifest else manifest, pooled=pooled)

    def feature_stats(self, source: Features, max_items: int = 400) -> tuple[np.ndarray, np.ndarray]:
        key = (id(source), max_items)
        if key not in self._stats:  # the source is kept with its statistics, so its id stays its own
            self._stats[key] = (source, self._compute_stats(source, max_items))
        return self._stats[key][1]

    def _compute_stats(self, src: Features, max_items: int) -> tuple[np.ndarray, np.ndarray]:
        ids = [u for u in self.ids("train") if src.has(u)]
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

    def transcripts(self, manifest: Manifest | None = None) -> dict[str, str | None]:
        df = (manifest or self.manifest).df
        return dict(zip(df["id"], df["transcript"]))

    def transcribe(self, manifest: Manifest, engine: str) -> tuple[Manifest, float | None]:
        from sermo.features.transcripts import transcribe_manifest

        with rank_zero_first():  # one rank transcribes into the store's cache, the others read it
            out, report = transcribe_manifest(manifest, self.run.store, engine=engine, progress=self.progress,
                                              device=self.run.device)
        return out, report.wer

    def phone_alignments(self, ids: Iterable[str]) -> tuple[dict[str, list], list[tuple[str, str]]]:
        from sermo.features.phones import align_manifest

        with rank_zero_first():
            segments, report = align_manifest(self.manifest, self.run.store, ids=ids, progress=self.progress)
        return segments, report.failed

    def speaker_embeddings(self, max_utterances: int = 100) -> Callable[[str], np.ndarray]:
        return self.run.speaker_table(max_utterances)

    def waveform(self, uid: str, max_seconds: float | None = None) -> np.ndarray:
        wave = self.run.utterances.wave(uid)
        return wave[: int(max_seconds * SAMPLE_RATE)] if max_seconds else wave

    def trainable_encoder(self, kind: str, name: str | None = None, *,
                          layers: int | str = 0) -> tuple[TrainableEncoder | None, str]:
        from sermo.encoders.base import EncoderError
        from sermo.encoders.registry import checkpoint_folder, load_trainable

        if kind not in ("speech", "text"):
            raise ValueError(f"trainable_encoder kind {kind!r}; known: speech, text")
        d = self.cfg.data
        name = name or (d.audio_encoder if kind == "speech" else d.text_encoder)
        if not name:
            return None, f"the recipe has no {'audio' if kind == 'speech' else 'text'} encoder"
        key = (kind, name)
        if key not in self._encoders:  # loaded once per fold; every caller gets its own copy
            try:
                if checkpoint_folder(name)[0] != kind:
                    self._encoders[key] = (None, f"the {'audio' if kind == 'speech' else 'text'} encoder {name!r} "
                                                 f"is not a {kind} model")
                else:
                    self._encoders[key] = (load_trainable(name, max_tokens=d.max_tokens, padding=d.speech_padding), "")
            except (EncoderError, OSError, ValueError) as exc:
                self._encoders[key] = (None, f"no trainable copy of {name!r}: {exc}")
        enc, why = self._encoders[key]
        if enc is None:
            return None, why
        enc = copy.deepcopy(enc)
        enc.set_trainable_layers(layers)
        return enc, ""

    # -- training ----------------------------------------------------------------------
    def seed(self, stage: str) -> None:
        import zlib

        import lightning as L

        L.seed_everything((self.cfg.train.seed * 1_000_003 + zlib.crc32(f"{self.fold.name}/{stage}".encode()))
                          % (2**31), verbose=False)

    def dataset(self, split: str, *, audio: bool | Features = False, text: bool | Features = False,
                wave: bool = False, tokens: TextSSL | None = None, transcripts: dict | None = None,
                speaker: Callable[[str], np.ndarray] | None = None, extras: dict | None = None,
                ids: Iterable[str] | None = None, labels: Labels | None = None) -> UtteranceDataset:
        d = self.cfg.data
        utterances = self.run.utterances if transcripts is None else ManifestUtterances(self.manifest, transcripts)
        # without stored features, batches are bucketed by samples, else token ids
        length_of: Callable[[str], int] | None = None
        if wave and not audio:
            length_of = self.run.samples
        elif tokens is not None and not text:
            tokenize = tokens.tokenize
            length_of = lambda u: len(tokenize(str(utterances.transcript(u))))  # noqa: E731
        return UtteranceDataset(
            self.ids(split) if ids is None else list(ids), labels=labels or self.labels, utterances=utterances,
            audio=self.audio if audio is True else (audio or None), text=self.text if text is True else (text or None),
            wave=wave, tokenizer=(tokens.source, tokens.tokenize) if tokens is not None else None, speaker=speaker,
            readable=self.run.readable if wave else None, extras=extras, max_frames=d.max_frames,
            max_tokens=d.max_tokens, max_wave_seconds=WAVE_SECONDS if wave else None, length_of=length_of)

    def fit(self, model: M, stage: str, train: Dataset, valid: Dataset,
            train_cfg: TrainConfig | None = None, slower: Iterable[tuple[str, float]] = ()) -> M:
        """Train ``model`` as stage ``stage`` of this fold; return it with its best-epoch weights.

        The stage folder keeps ``last.ckpt`` (resumed by a rerun of the same command),
        ``best.ckpt`` (the best epoch on validation), ``metrics.csv`` and, once finished,
        ``DONE``: a finished stage is not trained again.
        """
        import lightning as L
        from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger

        cfg = train_cfg or self.cfg.train
        train, valid = ours(train), ours(valid)
        stage_dir = self.folder / stage
        done = stage_dir / "DONE"
        task = SystemTask(model, cfg, stage=f"{self.name}/{stage}", labelled=labelled(train),
                          missing=self.run.label_summary(), slower=slower)
        if done.is_file():
            task.load_state_dict(load_checkpoint(stage_dir / "best.ckpt")["state_dict"])
            return task.model
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        monitor = {"loss": "val_loss", "metrics": "val_select"}[cfg.select]  # checked when the recipe is read
        best = ModelCheckpoint(dirpath=stage_dir, filename="best", monitor=monitor, mode="min", save_last=True,
                               save_top_k=1, enable_version_counter=False)
        callbacks: list[Callback] = [best]
        if cfg.early_stopping:
            callbacks.append(EarlyStopping(monitor=monitor, patience=cfg.early_stopping, mode="min"))
        if self.run.epochs is not None:  # the run-level bar
            callbacks.append(self.run.epochs.callback())
        trainer = L.Trainer(
            max_epochs=cfg.epochs, accelerator=lightning_accelerator(cfg.accelerator), devices=cfg.devices,
            num_nodes=cfg.num_nodes, precision=cfg.precision,  # type: ignore[arg-type]  # the recipe's choices
            # systems leave some parameters out of some losses (a one-layer weighting, a
            # head a stage does not train): DDP must look for them
            strategy="ddp_find_unused_parameters_true" if cfg.devices * cfg.num_nodes > 1 and cfg.strategy == "auto"
            else cfg.strategy,
            gradient_clip_val=cfg.grad_clip, callbacks=callbacks,
            logger=CSVLogger(str(stage_dir), name="", version=""), enable_progress_bar=self.progress,
            enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
            log_every_n_steps=1, deterministic=False, plugins=[atomic_checkpoint_io()])
        last, _ = resume_from(stage_dir / "last.ckpt")
        if last is not None and trainer.is_global_zero:
            set_metrics_aside(stage_dir)  # the logger deletes metrics.csv when it starts
        # both splits read the same sources: one choice of workers
        workers = loader_workers(self.cfg.data.loader_workers, train, self.run.device, cfg.devices)
        pin = self.run.device.type == "cuda"
        trainer.fit(task, loader(train, cfg.batch_size, shuffle=True, seed=cfg.seed, pin=pin, workers=workers),
                    loader(valid, cfg.batch_size, shuffle=False, pin=pin, workers=workers),
                    ckpt_path=str(last) if last else None,
                    weights_only=True)
        kept = None
        if trainer.is_global_zero:
            merge_metrics(stage_dir)
            best_path = best.best_model_path or str(stage_dir / "last.ckpt")
            kept = load_checkpoint(best_path)
            if Path(best_path).name != "best.ckpt":
                with atomic_path(stage_dir / "best.ckpt") as tmp:
                    torch.save({"state_dict": kept["state_dict"], "epoch": kept.get("epoch")}, tmp)
            score = best.best_model_score
            # the epoch whose weights are kept: chosen by train.select, as the checkpoint was
            record = {"best_epoch": kept.get("epoch"), "selected_by": monitor,
                      "best_score": None if score is None else float(score), "epochs": trainer.current_epoch,
                      "steps": int(trainer.global_step)}
            if task.schedule is not None:
                record["schedule"] = task.schedule.to_dict()
            write_text_atomic(done, json.dumps(record))
        # every rank goes on from the best epoch's weights rank 0 kept: what a stage computes next
        # from its model (a teacher's embeddings, a residual mask, a frozen stream) is data, which
        # DDP's parameter broadcast never reaches
        barrier()
        if kept is None:
            kept = load_checkpoint(stage_dir / "best.ckpt")
        task.load_state_dict(kept["state_dict"])
        return task.model

    def train(self, row: Row, *, prepare: Callable[[torch.nn.Module], None] | None = None,
              info: dict | None = None, labels: Labels | None = None, only: Collection[str] | None = None) -> RowResult:
        if row.build is None:
            raise ValueError(f"row {row.name!r} declares no build: its system's run_fold trains it itself")
        reads = row.reading
        sources = {"audio": self.audio if reads.audio else None, "text": self.text if reads.text else None}
        # the statistics first: reading them may extract features, which the seed below then does not see
        stats = {m: self.feature_stats(src) for m, src in sources.items() if src is not None}
        options = {**row.options, "architecture": row.architecture}
        self.seed(row.stage)
        spec = ModelSpec(InputSpec(audio=sources["audio"].input if sources["audio"] else None,
                                   text=sources["text"].input if sources["text"] else None),
                         self.num_classes, options=dict(options))
        model = row.build(spec, stats)
        if prepare is not None:
            prepare(model)

        def data(split: str) -> UtteranceDataset:
            if split in ("train", "valid") and (labels is not None or only is not None):
                ids = [u for u in self.ids(split) if only is None or u in only]
                return self.dataset(split, audio=reads.audio, text=reads.text, labels=labels, ids=ids)
            return self.dataset(split, audio=reads.audio, text=reads.text)

        train_cfg = self.with_train(**row.train) if row.train else None
        model = self.fit(model, row.stage, data("train"), data("valid"), train_cfg, row.slower)
        return self.row(row.name, row.modalities, model, self.predict(model, data), info=info, options=options)

    def with_train(self, **changes: Any) -> TrainConfig:
        return replace(self.cfg.train, **changes)

    def predict(self, model: torch.nn.Module, make_dataset: Callable[[str], Dataset],
                splits: Iterable[str] | None = None) -> dict[str, Predictions]:
        out = {}
        for name in (self.tests if splits is None else splits):
            ds = ours(make_dataset(name))
            raw = predict(model, loader(ds, 64, shuffle=False), device=self.run.device,
                          precision=self.cfg.train.precision)
            for kind, values in (("dims", raw.dims), ("logits", raw.logits)):
                if values is not None and len(values) and not np.isfinite(values).any():
                    from sermo.config import RunError

                    raise RunError(f"{self.name}: every {kind} prediction on {name} is not finite: the model diverged "
                                   "(see its training log; a lower learning rate, or finite features)")
            dims = None if raw.dims is None else self.labels.to_corpus_scale(raw.ids, raw.dims)
            probs = None if raw.logits is None else softmax(raw.logits)
            out[name] = Predictions(raw.ids, dims, probs, ds.spec)
        return out

    @property
    def device(self) -> torch.device:
        return self.run.device

    def forward(self, model: torch.nn.Module, dataset: Dataset, batch_size: int = 64,
                call: Callable[[torch.nn.Module, Batch], Any] | None = None) -> Iterator[tuple[Batch, Any]]:
        from sermo.accelerator import autocast

        was, home = model.training, next(model.parameters(), torch.empty(0)).device
        model.to(self.device).eval()
        try:
            with torch.no_grad():
                for batch in loader(ours(dataset), batch_size, shuffle=False):
                    batch = batch.to(self.device)
                    with autocast(self.device, self.cfg.train.precision):
                        yield batch, (call(model, batch) if call is not None else model(batch))
        finally:
            model.train(was).to(home)

    def score(self, predictions: Predictions) -> dict[str, float]:
        truth_dims, truth_cls = self.truth(predictions.ids)
        return score_predictions(truth_dims, truth_cls, predictions.dims, predictions.probs)

    def truth(self, ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 3)`` dimensions on the corpus scale and ``(n,)`` class indices of utterances."""
        df = self.manifest.df.set_index("id")
        return (df.loc[list(ids), list(DIMENSIONS)].to_numpy(dtype=float),
                np.array([self.labels.category[u] for u in ids]))

    # -- results -----------------------------------------------------------------------
    def row(self, name: str, modalities: Iterable[str], model: torch.nn.Module, predictions: dict[str, Predictions], *,
            info: dict | None = None,
            bundle: bool = True, speech_model: str | None = None, text_model: str | None = None,
            options: dict | None = None) -> RowResult:
        inputs = next((p.inputs for p in predictions.values() if p.inputs is not None), None)
        spec = ModelSpec(inputs, self.num_classes, speech_model, text_model, dict(options or {})) \
            if bundle and inputs is not None else None
        return RowResult(name, tuple(modalities), count_trainable(model), predictions, model=model, spec=spec,
                         info=dict(info or {}))

    def combined_row(self, name: str, modalities: Iterable[str], predictions: dict[str, Predictions], *,
                     info: dict | None = None) -> RowResult:
        return RowResult(name, tuple(modalities), 0, predictions, info=dict(info or {}))

    def skipped_row(self, name: str, modalities: Iterable[str], reason: str) -> RowResult:
        return RowResult(name, tuple(modalities), 0, {}, skipped=reason)


def ours(dataset: Dataset) -> UtteranceDataset:
    """A dataset the engine can batch: one :meth:`FoldRun.dataset` made (or its ``select``)."""
    if not isinstance(dataset, UtteranceDataset):
        raise TypeError(f"a {type(dataset).__name__} is not a dataset of this fold: make datasets with ctx.dataset")
    return dataset


def labelled(dataset: UtteranceDataset) -> tuple[bool, bool]:
    """Whether a dataset's utterances carry any dimension, and any class."""
    labels = dataset.labels
    if labels is None:
        return False, False
    has_dims = any(np.isfinite(labels.dims[u]).any() for u in dataset.ids)
    has_classes = any(labels.category[u] >= 0 for u in dataset.ids)
    return has_dims, has_classes
