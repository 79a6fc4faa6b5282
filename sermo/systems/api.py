"""The contract between sermo's engine and its systems (documented in ``docs/systems.md``).

A system is a :class:`SystemDef` registered with :func:`register`. For every fold of a run
the engine calls ``run_fold(ctx)`` with a :class:`FoldContext` and gets back one
:class:`RowResult` per row of the system's table. Everything a system may ask of the engine
is a member of :class:`FoldContext`; everything it gives back is typed here. A system imports
this module, ``sermo.nn``, ``sermo.encoders``, ``sermo.data`` and ``sermo.evaluation``: never
``sermo.training``, ``sermo.features`` or ``sermo.serving`` (a test checks the import graph).

Models are ``nn.Module``s with ``forward(batch: Batch) -> Output`` and
``losses(output, batch) -> {"loss": total, <name>: part, ...}``; they may define
``param_groups() -> [(params, lr_scale), ...]`` (see :func:`lr_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from sermo.config import ConfigError, RunConfig, TrainConfig
from sermo.data.batch import Batch, sequence
from sermo.data.labels import Labels, LabelSpace
from sermo.data.manifest import Manifest
from sermo.data.spec import FeatureInput, InputSpec, ModelSpec


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


@runtime_checkable
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


@runtime_checkable
class Dataset(Protocol):
    """Utterances with the inputs a row's model reads (opaque to systems but for these)."""

    ids: list[str]
    spec: InputSpec

    def __len__(self) -> int: ...

    def select(self, ids) -> "Dataset":
        """The same inputs for other utterances."""


@runtime_checkable
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
    audio: Features | None
    text: Features | None
    shared: dict
    progress: bool
    device: torch.device

    # -- data --------------------------------------------------------------------------
    def ids(self, split: str) -> tuple[str, ...]:
        """Utterance ids of ``train``, ``valid`` or a test set."""

    def is_analysis_fold(self, count: int) -> bool:
        """Whether this fold is among the first ``count`` (analyses run on those)."""

    def analysis_folder(self) -> Path:
        """``<fold>/analysis/`` (created); ``finish`` reads every fold's from the run folder."""

    def write_analysis(self, name: str, data) -> Path:
        """Write ``data`` as JSON to ``<fold>/analysis/<name>`` (atomically, from one rank of a
        multi-process run) and return the path."""

    def rank_zero_first(self) -> ContextManager[None]:
        """A context whose block rank 0 of a multi-process run runs first while the other ranks
        wait, then they run it (finding what rank 0 wrote: a cache, a checkpoint folder)."""

    def features(self, name: str, layers=None, *, manifest: Manifest | None = None, pooled: bool = True) -> Features:
        """Frames of encoder ``name`` for the run's utterances (or for ``manifest``'s, e.g. with
        other transcripts), extracted into the store on first use; a speech encoder's frames
        averaged by ``data.frame_pool`` unless not ``pooled`` (the input of fine-tuned top layers)."""

    def feature_stats(self, source: Features, max_items: int = 400) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer, per-dimension mean and std ``(L, D)`` of the training split's frames."""

    def transcripts(self, manifest: Manifest | None = None) -> dict[str, str | None]:
        """Each utterance's transcript by id (``manifest``: another transcript source)."""

    def transcribe(self, manifest: Manifest, engine: str) -> tuple[Manifest, float | None]:
        """``manifest`` with the ASR engine's transcripts (cached), and their WER."""

    def phone_alignments(self, ids) -> tuple[dict[str, list], list[tuple[str, str]]]:
        """Forced phone alignments of utterances (cached): segments by id, and failures."""

    def speaker_embeddings(self, max_utterances: int = 100) -> Callable[[str], np.ndarray]:
        """``uid -> (256,)``: the mean Resemblyzer embedding of up to ``max_utterances`` of the
        utterance's speaker (its own where the speaker is unknown)."""

    def waveform(self, uid: str, max_seconds: float | None = None) -> np.ndarray:
        """One utterance's 16 kHz samples (its first ``max_seconds``)."""

    def trainable_encoder(self, kind: str, name: str | None = None, *, layers: int | str = 0):
        """A fresh fine-tunable copy of a transformers encoder (``kind`` ``speech`` or ``text``;
        default: the recipe's) with its top ``layers`` trainable (``"all"``: all but the CNN),
        or ``(None, reason)`` when there is none (log-mel, eGeMAPS, not cached here)."""

    # -- training ----------------------------------------------------------------------
    def seed(self, stage: str) -> None:
        """Seed every RNG from (run seed, fold, stage) before building a stage's model."""

    def dataset(self, split: str, *, audio: bool | Features = False, text: bool | Features = False,
                wave: bool = False, tokens=None, transcripts: dict | None = None,
                speaker: Callable[[str], np.ndarray] | None = None, extras: dict | None = None, ids=None,
                labels: Labels | None = None) -> Dataset:
        """The utterances of a split (or ``ids``) with the inputs asked for: ``audio``/``text``
        (``True``: the recipe's features, or a :class:`Features`), ``wave`` (samples for a
        fine-tuned speech encoder), ``tokens`` (a fine-tuned text encoder, whose tokenizer reads
        ``transcripts`` or the run's), ``speaker``, a system's training ``extras``
        (``uid -> array``; sequences marked with :func:`sequence`) and other ``labels``."""

    def fit(self, model: torch.nn.Module, stage: str, train: Dataset, valid: Dataset,
            train_cfg: TrainConfig | None = None) -> torch.nn.Module:
        """Train ``model`` as stage ``stage`` of this fold (resumable; a finished stage is
        loaded, not trained again); return it with its best-epoch weights."""

    def with_train(self, **changes) -> TrainConfig:
        """The run's train config with some fields changed."""

    def predict(self, model: torch.nn.Module, make_dataset: Callable[[str], Dataset],
                splits=None) -> dict[str, Predictions]:
        """Predictions on every test set (or on ``splits``, e.g. ``["valid"]``)."""

    def forward(self, model: torch.nn.Module, dataset: Dataset, batch_size: int = 64,
                call: Callable[[torch.nn.Module, Batch], Any] | None = None) -> Iterator[tuple[Batch, Any]]:
        """The model's outputs batch by batch (``call(model, batch)`` instead of ``model(batch)``
        for other passes), in eval mode without gradients, on the run's device."""

    def score(self, predictions: Predictions) -> dict[str, float]:
        """The metrics of predictions against the run's labels (CCC, UA, WA, ...)."""

    # -- results -----------------------------------------------------------------------
    def row(self, name: str, modalities, model: torch.nn.Module, predictions: dict[str, Predictions], *,
            info: dict | None = None, bundle: bool = True, speech_model: str | None = None,
            text_model: str | None = None, options: dict | None = None) -> RowResult:
        """A row with a trained model; servable unless ``bundle`` is false. Its bundle reads what
        its predictions were made from; ``speech_model``/``text_model`` name fine-tuned encoders
        inside the model and ``options`` the system's own build arguments."""

    def combined_row(self, name: str, modalities, predictions: dict[str, Predictions], *,
                     info: dict | None = None) -> RowResult:
        """A row whose predictions combine other rows' (score fusion): no model of its own."""

    def skipped_row(self, name: str, modalities, reason: str) -> RowResult:
        """A row that could not run here, reported with its reason instead of numbers."""


@dataclass(frozen=True)
class Deviation:
    """Where running the system differs from its paper (kept beside the system's code, so the
    report and the code cannot drift apart).

    Attributes:
        what: what differs.
        why: why it differs (the paper is silent, a checkpoint is not public, ...).
        effect: whether and how it bears on the paper's comparisons.
        profiles: the recipe profiles it applies to (empty: all).
        corpora: the corpora it applies to (empty: all): a run lists it when it reads one of them.
    """

    what: str
    why: str
    effect: str = ""
    profiles: tuple[str, ...] = ()
    corpora: tuple[str, ...] = ()

    def applies(self, profile: str | tuple[str, ...], corpora=()) -> bool:
        """Whether a run of ``profile`` (or a profile extending those listed) on ``corpora`` has it."""
        lineage = (profile,) if isinstance(profile, str) else tuple(profile)
        return ((not self.profiles or bool(set(lineage) & set(self.profiles)))
                and (not self.corpora or not corpora or bool(set(self.corpora) & set(corpora))))


@dataclass(frozen=True)
class FeatureUse:
    """Frozen-encoder features a system reads (what ``sermo run --plan`` sizes before a run).

    Attributes:
        encoder: the encoder's name.
        layers: the hidden states kept (``None``: all).
        readers: models per fold that read them every epoch (each runs the encoder when the
            features are computed live instead of stored).
        analysis: read on the analysis folds only.
        corpus: read for every utterance of the corpus, labelled or not (speaker embeddings).
        what: what reads them, in a few words.
    """

    encoder: str
    layers: tuple[int, ...] | None = None
    readers: int = 1
    analysis: bool = False
    corpus: bool = False
    what: str = ""


def recipe_features(cfg: RunConfig, *, audio_readers: int = 1, text_readers: int = 1) -> list[FeatureUse]:
    """The recipe's own ``data.audio_encoder`` and ``data.text_encoder`` features, read by that
    many models per fold (none: left out)."""
    d = cfg.data
    out = []
    if d.audio_encoder and audio_readers:
        out.append(FeatureUse(d.audio_encoder, _layers(d.audio_layers), audio_readers, what="audio"))
    if d.text_encoder and text_readers:
        out.append(FeatureUse(d.text_encoder, _layers(d.text_layers), text_readers, what="text"))
    return out


def _layers(layers) -> tuple[int, ...] | None:
    return tuple(int(i) for i in layers) if layers is not None else None


@dataclass(frozen=True)
class SystemDef:
    """A registered system.

    Attributes:
        name: the system's name (module, recipe, CLI and report use it).
        config_cls: the dataclass of its ``model`` recipe section.
        run_fold: ``(FoldContext) -> list[RowResult]``: trains and predicts every row of one fold.
        build_model: ``(row, model_config, ModelSpec) -> nn.Module``: rebuilds a row's model for
            a bundle (the weights are loaded afterwards).
        rows: the row names the system knows; a recipe's ``model.rows`` must be among them (a
            row name may extend one with ``@...``).
        recipe: its YAML recipe (default ``sermo/recipes/<name>.yaml``).
        paper: the paper's own numbers per corpus name and row, for REPORT.md.
        title: the paper, for reports.
        finish: optional ``(run_folder, results) -> markdown`` for analyses beyond the table.
        demo_corpora: the built-in corpus layouts ``sermo demo`` runs it on, in order.
        demo_extra: further demo runs, each on the layouts given together.
        order: its place in listings and in the demo (the papers' order).
        targets: what its rows learn from (``dims``, ``category``): a run reads only the
            utterances that carry one of them.
        features: ``(RunConfig) -> list[FeatureUse]``: the frozen features a run reads (default:
            the recipe's audio and text encoders, one model each).
        deviations: where the system's runs differ from the paper (REPORT.md lists them).
        comparisons: the pairs of rows the paper compares, ``(a, b, metric)`` (on the run's main
            test set) or ``(a, b, metric, test_sets)`` (on each of those test sets), or
            ``(RunConfig) -> list`` of them: REPORT.md gives each difference with a bootstrap interval.
        plan_epochs: ``(RunConfig, modality, training utterances) -> epochs`` the models reading a
            modality's features train for, where the system derives them (default ``train.epochs``).
    """

    name: str
    config_cls: type
    run_fold: Callable[[Any], list]
    build_model: Callable[..., torch.nn.Module]
    rows: tuple[str, ...] = ()
    recipe: Path | None = None
    paper: dict = field(default_factory=dict)
    title: str = ""
    finish: Callable[..., str] | None = None
    demo_corpora: tuple[str, ...] = ("iemocap",)
    demo_extra: tuple[tuple[str, ...], ...] = ()
    order: float = 100.0
    targets: tuple[str, ...] = ("dims", "category")
    features: Callable[[RunConfig], list[FeatureUse]] | None = None
    deviations: tuple[Deviation, ...] = ()
    comparisons: tuple[tuple, ...] | Callable[[RunConfig], list] = ()
    plan_epochs: Callable[[RunConfig, str, int], int] | None = None

    def paper_comparisons(self, cfg: RunConfig) -> list[tuple]:
        """The pairs of rows the paper compares, for this recipe."""
        return list(self.comparisons(cfg) if callable(self.comparisons) else self.comparisons)

    def deviations_for(self, profile: str | tuple[str, ...], corpora=()) -> list[Deviation]:
        """The deviations of a profile, or of a lineage ``(profile, *extends)`` (on these corpora)."""
        return [d for d in self.deviations if d.applies(profile, corpora)]

    def feature_uses(self, cfg: RunConfig) -> list[FeatureUse]:
        """The frozen features a run of this recipe reads."""
        return self.features(cfg) if self.features is not None else recipe_features(cfg)

    @property
    def recipe_path(self) -> Path:
        """The recipe file."""
        return self.recipe or Path(__file__).resolve().parent.parent / "recipes" / f"{self.name}.yaml"

    def check_rows(self, rows) -> None:
        """Raise :class:`~sermo.config.ConfigError` naming unknown rows and the known ones (or none)."""
        if not self.rows:
            return
        if not list(rows):
            raise ConfigError(f"model.rows is empty: a {self.name} run needs at least one row of {', '.join(self.rows)}")
        unknown = [r for r in rows if r.split("@")[0] not in self.rows]
        if unknown:
            raise ConfigError(f"unknown {self.name} row(s) {unknown} in model.rows; known: {', '.join(self.rows)}")


_REGISTRY: dict[str, SystemDef] = {}


def register(system: SystemDef) -> SystemDef:
    """Add a system to the registry (a system module calls it at import)."""
    _REGISTRY[system.name] = system
    return system


def lr_groups(model: torch.nn.Module, slower: list[tuple[torch.nn.Module | None, float]]):
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
