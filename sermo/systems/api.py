"""The contract between sermo's engine and its systems (documented in ``docs/systems.md``).

A system is a :class:`~sermo.systems.definition.SystemDef` registered with
:func:`~sermo.systems.definition.register`. It declares its rows (:class:`Row`: what each reads,
how its model is built); for every fold of a run the engine calls ``run_fold(ctx)`` with a
:class:`FoldContext` and gets back one :class:`RowResult` per row of the system's table (a row
trains with ``ctx.train(row)``). Everything a system may ask of the engine
is a member of :class:`FoldContext`; everything it gives back is typed here. A system imports
this module, ``sermo.nn``, ``sermo.encoders``, ``sermo.data`` and ``sermo.evaluation``: never
``sermo.training``, ``sermo.features`` or ``sermo.serving`` (a test checks the import graph).

Models are ``nn.Module``s with ``forward(batch: Batch) -> Output`` and
``losses(output, batch) -> {"loss": total, <name>: part, ...}``; they may define
``param_groups() -> [(params, lr_scale), ...]`` (see :func:`lr_groups`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, Collection, ContextManager, Iterable, Iterator, Mapping, Protocol,
                    Sequence, TypeVar)

import numpy as np
import torch

from sermo.config import RunConfig, TrainConfig
from sermo.data.batch import Batch, sequence
from sermo.data.labels import Labels, LabelSpace
from sermo.data.manifest import Manifest
from sermo.data.spec import FeatureInput, InputSpec, ModelSpec
from sermo.encoders.trainable import TrainableEncoder

if TYPE_CHECKING:
    from sermo.encoders.text import TextSSL


@dataclass
class Output:
    """What a system's ``forward`` returns (the same type every call).

    Attributes:
        dims: ``(B, 3)`` arousal, valence, dominance on [0, 1] (or ``None``; a model that learns
            fewer dimensions names them in its ``targets`` attribute).
        logits: ``(B, C)`` class scores (or ``None``).
        embedding: ``(B, E)`` the utterance embedding the heads read (or ``None``).
        extras: named tensors a system exposes (attention maps, layer weights, ...).
    """

    dims: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def need(self, name: str) -> torch.Tensor:
        """An output a loss reads (``dims``, ``logits``, ``embedding``), or a clear error."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"the model gave no {name}, which its loss reads")
        return value


@dataclass
class Predictions:
    """A model's predictions on one set of utterances.

    Attributes:
        ids: the utterances, in prediction order.
        dims: ``(n, 3)`` on each utterance's corpus scale (or ``None``).
        probs: ``(n, C)`` class probabilities (or ``None``).
        inputs: what the model read to make them (``None`` for combinations of other rows).
    """

    ids: list[str]
    dims: np.ndarray | None = None
    probs: np.ndarray | None = None
    inputs: InputSpec | None = None


@dataclass
class RowResult:
    """One row of a system's table for one fold.

    Attributes:
        name: the row name (``audio``, ``cts``, ...).
        modalities: what it uses (``audio``, ``text``).
        trainable_params: trainable parameters of the row's model.
        predictions: per test set.
        model: the trained module (for the bundle), or ``None``.
        spec: what rebuilds the model for a bundle (``None``: not servable).
        info: anything else the row reports (shares, weights, ...), JSON-ready.
        skipped: why the row could not run here (then it has no predictions).
    """

    name: str
    modalities: tuple[str, ...]
    trainable_params: int
    predictions: dict[str, Predictions]
    model: torch.nn.Module | None = None
    spec: ModelSpec | None = None
    info: dict = field(default_factory=dict)
    skipped: str = ""


M = TypeVar("M", bound=torch.nn.Module)
"""A model type (``fit`` gives back the model it was given, trained)."""

Stats = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""Per modality (``audio``, ``text``): the training split's per-layer feature mean and std ``(L, D)``."""


def layer_tuple(layers: Iterable[int] | None) -> tuple[int, ...] | None:
    """A recipe's hidden-state indices as a tuple (``None``: all), as feature reads and the plan key them."""
    return tuple(int(i) for i in layers) if layers is not None else None


@dataclass(frozen=True)
class FeatureRead:
    """Frozen features of one encoder that a row or an analysis reads besides the recipe's own.

    Attributes:
        encoder: the encoder's name.
        layers: the hidden states kept (``None``: all).
        readers: models that read them every epoch (0: read once, e.g. for statistics).
        pooled: averaged by ``data.frame_pool`` (false: frame by frame, the input of fine-tuned top layers).
        corpus: read for every utterance of the corpus, labelled or not (speaker embeddings).
        what: what reads them, in a few words.
    """

    encoder: str
    layers: tuple[int, ...] | None = None
    readers: int = 1
    pooled: bool = True
    corpus: bool = False
    what: str = ""


@dataclass(frozen=True)
class Reads:
    """What a row's model reads: the recipe's frozen ``audio`` and ``text`` features every epoch,
    and ``other`` encoders' features (its own speech encoder, the dialog context, ...)."""

    audio: bool = False
    text: bool = False
    other: tuple[FeatureRead, ...] = ()


@dataclass(frozen=True)
class Analysis:
    """An analysis a system runs on its first analysis folds, declared with what it reads.

    Attributes:
        name: its name (its file in ``<fold>/analysis/``).
        reads: the frozen features it reads.
    """

    name: str
    reads: tuple[FeatureRead, ...] = ()


@dataclass(frozen=True)
class Row:
    """A row of a system's table, declared: what it reads, how its model is built and trained.

    The engine derives from a system's declared rows the features ``sermo run --plan`` sizes,
    the default per-row routine (:meth:`FoldContext.train`) and the bundles' models.

    Attributes:
        name: the table's label; the stage folder and seed are :attr:`stage`.
        modalities: what it uses (``audio``, ``text``).
        architecture: which of the system's models it is (``build_model``'s first argument,
            recorded in its bundle): several rows may share one.
        build: ``(ModelSpec, Stats) -> nn.Module``: the model for the spec's input shapes and
            classes, standardising its inputs with the statistics (empty for a bundle's model,
            whose weights hold them); ``None``: the system's ``run_fold`` builds and trains it
            (a student after its teacher, a model around a fine-tuned encoder).
        reads: its inputs (default: the recipe's features of its modalities).
        options: the system's own build arguments, kept in its bundle's spec.
        slower: ``(submodule, lr_scale)``: submodules that learn at a share of the learning
            rate (a branch started from a trained row, a fine-tuned encoder).
        train: changes to the run's train config for this row's stage.
    """

    name: str
    modalities: tuple[str, ...]
    architecture: str
    build: Callable[[ModelSpec, Stats], torch.nn.Module] | None = None
    reads: Reads | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    slower: tuple[tuple[str, float], ...] = ()
    train: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reading(self) -> Reads:
        """What it reads (declared, or its modalities' features)."""
        return self.reads or Reads(audio="audio" in self.modalities, text="text" in self.modalities)

    @property
    def stage(self) -> str:
        """Its stage name (:func:`stage_name` of its name)."""
        return stage_name(self.name)


def stage_name(name: str) -> str:
    """A stage's folder name for a row or stage name: each run of characters a folder name should
    not hold (``@``, ``/``, spaces) made one ``_``."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


class Features(Protocol):
    """An encoder's frames per utterance (the feature store's, or computed on the fly)."""

    name: str
    num_layers: int
    dim: int
    frame_rate: float | None
    input: FeatureInput

    def has(self, uid: str) -> bool:
        """Whether the utterance has features (readable audio / a transcript)."""

    def get(self, uid: str) -> np.ndarray:
        """``(layers, frames, dim)`` of one utterance."""

    def read(self, uid: str) -> tuple[np.ndarray, list[int]]:
        """Its features and, for text, each token's word index (-1 on special tokens)."""

    def length(self, uid: str) -> int:
        """Frames (tokens) of one utterance."""


class Dataset(Protocol):
    """Utterances with the inputs a row's model reads (opaque to systems but for these)."""

    ids: list[str]
    spec: InputSpec
    labels: Labels | None

    def __len__(self) -> int: ...

    def select(self, ids: Iterable[str]) -> "Dataset":
        """The same inputs for other utterances."""


class FoldContext(Protocol):
    """What a system sees while it runs one fold of a run.

    Attributes:
        name: the fold's name (``fold1``, ``partitions``, ``transfer``).
        index: its 1-based position in the protocol.
        folder: the fold's folder in the run folder (stages, analyses).
        cfg: the resolved recipe; ``cfg.model`` is the system's own config dataclass.
        manifest: every utterance of the run (read-only).
        labels: the targets in the run's label space.
        space: the label space; ``num_classes`` its size.
        tests: the names of the fold's test sets.
        audio, text: the recipe's audio and text features (``data.audio_encoder`` and
            ``data.text_encoder``), or ``None``.
        shared: what a system computes once per run and every fold reads, under its own keys.
        progress: whether to show progress bars.
        device: where models run (for a system's own training loops).
    """

    name: str
    index: int
    folder: Path
    cfg: RunConfig
    manifest: Manifest
    labels: Labels
    space: LabelSpace
    num_classes: int
    tests: tuple[str, ...]
    shared: dict
    progress: bool

    @property
    def audio(self) -> Features | None: ...

    @property
    def text(self) -> Features | None: ...

    @property
    def device(self) -> torch.device: ...

    # -- data --------------------------------------------------------------------------
    def ids(self, split: str) -> tuple[str, ...]:
        """Utterance ids of ``train``, ``valid`` or a test set."""

    def is_analysis_fold(self, count: int) -> bool:
        """Whether this fold is among the first ``count`` (analyses run on those)."""

    def analysis_folder(self) -> Path:
        """``<fold>/analysis/`` (created); ``finish`` reads every fold's from the run folder."""

    def write_analysis(self, name: str, data: Any) -> Path:
        """Write ``data`` as JSON to ``<fold>/analysis/<name>`` (atomically, from one rank of a
        multi-process run) and return the path."""

    def rank_zero_first(self) -> ContextManager[None]:
        """A context whose block rank 0 of a multi-process run runs first while the other ranks
        wait, then they run it (finding what rank 0 wrote: a cache, a checkpoint folder)."""

    def features(self, name: str, layers: Sequence[int] | None = None, *, manifest: Manifest | None = None,
                 pooled: bool = True) -> Features:
        """Frames of encoder ``name`` for the run's utterances (or for ``manifest``'s, e.g. with
        other transcripts), extracted into the store on first use; a speech encoder's frames
        averaged by ``data.frame_pool`` unless not ``pooled`` (the input of fine-tuned top layers)."""

    def feature_stats(self, source: Features, max_items: int = 400) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer, per-dimension mean and std ``(L, D)`` of the training split's frames."""

    def transcripts(self, manifest: Manifest | None = None) -> dict[str, str | None]:
        """Each utterance's transcript by id (``manifest``: another transcript source)."""

    def transcribe(self, manifest: Manifest, engine: str) -> tuple[Manifest, float | None]:
        """``manifest`` with the ASR engine's transcripts (cached), and their WER."""

    def phone_alignments(self, ids: Iterable[str]) -> tuple[dict[str, list], list[tuple[str, str]]]:
        """Forced phone alignments of utterances (cached): segments by id, and failures."""

    def speaker_embeddings(self, max_utterances: int = 100) -> Callable[[str], np.ndarray]:
        """``uid -> (256,)``: the mean Resemblyzer embedding of up to ``max_utterances`` of the
        utterance's speaker (its own where the speaker is unknown)."""

    def waveform(self, uid: str, max_seconds: float | None = None) -> np.ndarray:
        """One utterance's 16 kHz samples (its first ``max_seconds``)."""

    def trainable_encoder(self, kind: str, name: str | None = None, *,
                          layers: int | str = 0) -> tuple[TrainableEncoder | None, str]:
        """A fresh fine-tunable copy of a transformers encoder (``kind`` ``speech`` or ``text``;
        default: the recipe's) with its top ``layers`` trainable (``"all"``: all but the CNN),
        or ``(None, reason)`` when there is none (log-mel, eGeMAPS, not cached here)."""

    # -- training ----------------------------------------------------------------------
    def seed(self, stage: str) -> None:
        """Seed every RNG from (run seed, fold, stage) before building a stage's model."""

    def dataset(self, split: str, *, audio: bool | Features = False, text: bool | Features = False,
                wave: bool = False, tokens: TextSSL | None = None, transcripts: dict | None = None,
                speaker: Callable[[str], np.ndarray] | None = None, extras: dict | None = None,
                ids: Iterable[str] | None = None, labels: Labels | None = None) -> Dataset:
        """The utterances of a split (or ``ids``) with the inputs asked for: ``audio``/``text``
        (``True``: the recipe's features, or a :class:`Features`), ``wave`` (samples for a
        fine-tuned speech encoder), ``tokens`` (a fine-tuned text encoder, whose tokenizer reads
        ``transcripts`` or the run's), ``speaker``, a system's training ``extras``
        (``uid -> array``; sequences marked with :func:`sequence`) and other ``labels``."""

    def fit(self, model: M, stage: str, train: Dataset, valid: Dataset,
            train_cfg: TrainConfig | None = None, slower: Iterable[tuple[str, float]] = ()) -> M:
        """Train ``model`` as stage ``stage`` of this fold (resumable; a finished stage is
        loaded, not trained again); return it with its best-epoch weights. ``slower``: submodules
        that learn at a share of the learning rate (else the model's ``param_groups()``)."""

    def train(self, row: Row, *, prepare: Callable[[torch.nn.Module], None] | None = None,
              info: dict | None = None, labels: Labels | None = None, only: Collection[str] | None = None) -> RowResult:
        """A declared row, the whole routine: seed its stage, its datasets from what it reads,
        its model built with the training split's feature statistics (then ``prepare(model)``:
        what the fold adds, e.g. weights from another row), trained, its predictions on every
        test set, its result (servable, its bundle recording the architecture and options).
        ``labels`` and ``only``: training and validation read these targets and only these
        utterances (the test sets are scored on the run's labels, all of theirs)."""

    def with_train(self, **changes: Any) -> TrainConfig:
        """The run's train config with some fields changed."""

    def predict(self, model: torch.nn.Module, make_dataset: Callable[[str], Dataset],
                splits: Iterable[str] | None = None) -> dict[str, Predictions]:
        """Predictions on every test set (or on ``splits``, e.g. ``["valid"]``)."""

    def forward(self, model: torch.nn.Module, dataset: Dataset, batch_size: int = 64,
                call: Callable[[torch.nn.Module, Batch], Any] | None = None) -> Iterator[tuple[Batch, Any]]:
        """The model's outputs batch by batch (``call(model, batch)`` instead of ``model(batch)``
        for other passes), in eval mode without gradients, on the run's device."""

    def score(self, predictions: Predictions) -> dict[str, float]:
        """The metrics of predictions against the run's labels (CCC, UA, WA, ...)."""

    def truth(self, ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 3)`` dimensions on the corpus scale and ``(n,)`` class indices (-1: none) of utterances."""

    # -- results -----------------------------------------------------------------------
    def row(self, name: str, modalities: Iterable[str], model: torch.nn.Module, predictions: dict[str, Predictions], *,
            info: dict | None = None, bundle: bool = True, speech_model: str | None = None,
            text_model: str | None = None, options: dict | None = None) -> RowResult:
        """A row with a trained model; servable unless ``bundle`` is false. Its bundle reads what
        its predictions were made from; ``speech_model``/``text_model`` name fine-tuned encoders
        inside the model and ``options`` the system's own build arguments."""

    def combined_row(self, name: str, modalities: Iterable[str], predictions: dict[str, Predictions], *,
                     info: dict | None = None) -> RowResult:
        """A row whose predictions combine other rows' (score fusion): no model of its own."""

    def skipped_row(self, name: str, modalities: Iterable[str], reason: str) -> RowResult:
        """A row that could not run here, reported with its reason instead of numbers."""


def lr_groups(model: torch.nn.Module,
              slower: list[tuple[torch.nn.Module | None, float]]) -> list[tuple[list[torch.nn.Parameter], float]]:
    """``[(params, lr_scale), ...]`` for a model's ``param_groups()``: each module of ``slower``
    (a fine-tuned encoder, a pre-trained branch) at its own share of the learning rate, every
    other parameter at the full rate."""
    groups, taken = [], set()
    for module, scale in slower:
        if module is None:
            continue
        params = [p for p in module.parameters() if id(p) not in taken]
        taken |= {id(p) for p in params}
        groups.append((params, scale))
    return [([p for p in model.parameters() if id(p) not in taken], 1.0)] + groups
