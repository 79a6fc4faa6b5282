"""What a system is to sermo: its registration (:class:`SystemDef`), where its runs differ
from its paper (:class:`Deviation`) and the frozen features a run reads (:class:`FeatureUse`).
The per-fold contract a system's code runs against is :mod:`sermo.systems.api`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from sermo.config import ConfigError, RunConfig
from sermo.data.spec import ModelSpec
from sermo.systems.api import Analysis, FeatureRead, FoldContext, Row, RowResult, layer_tuple


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

    def applies(self, profile: str | tuple[str, ...], corpora: Iterable[str] = ()) -> bool:
        """Whether a run of ``profile`` (or a profile extending those listed) on ``corpora`` has it."""
        lineage = (profile,) if isinstance(profile, str) else tuple(profile)
        return ((not self.profiles or bool(set(lineage) & set(self.profiles)))
                and (not self.corpora or not corpora or bool(set(self.corpora) & set(corpora))))


@dataclass(frozen=True)
class FeatureUse(FeatureRead):
    """Frozen-encoder features a run reads, as ``sermo run --plan`` sizes them: a row's or an
    analysis's :class:`~sermo.systems.api.FeatureRead` (``readers``: models per fold that read
    them every epoch, each running the encoder when the features are computed live instead of
    stored), and whether only the analysis folds read them (``analysis``)."""

    analysis: bool = False


def recipe_features(cfg: RunConfig, *, audio_readers: int = 1, text_readers: int = 1) -> list[FeatureUse]:
    """The recipe's own ``data.audio_encoder`` and ``data.text_encoder`` features, read by that
    many models per fold (none: left out)."""
    d = cfg.data
    out = []
    if d.audio_encoder and audio_readers:
        out.append(FeatureUse(d.audio_encoder, layer_tuple(d.audio_layers), audio_readers, what="audio"))
    if d.text_encoder and text_readers:
        out.append(FeatureUse(d.text_encoder, layer_tuple(d.text_layers), text_readers, what="text"))
    return out


def _use(read: FeatureRead, what: str, analysis: bool = False) -> FeatureUse:
    return FeatureUse(read.encoder, read.layers, read.readers, read.pooled, read.corpus, what, analysis=analysis)


@dataclass(frozen=True)
class SystemDef:
    """A registered system.

    Attributes:
        name: the system's name (module, recipe, CLI and report use it).
        config_cls: the dataclass of its ``model`` recipe section.
        run_fold: ``(FoldContext) -> list[RowResult]``: trains and predicts every row of one fold.
        build_model: ``(architecture, model_config, ModelSpec) -> nn.Module``: builds a row's model
            (a bundle's, whose weights are loaded afterwards). The architecture is what a declared
            :class:`~sermo.systems.api.Row` names (bundles record it), else the row's name.
        declare: ``(RunConfig) -> list[Row]``: the rows a recipe trains, as typed declarations. The
            plan's feature uses, the default per-row routine (:meth:`FoldContext.train`) and the
            bundles derive from them (without it: one model reads the recipe's audio and text).
        analyses: ``(RunConfig) -> list[Analysis]``: the analyses a recipe runs on its analysis
            folds, with what they read (the plan sizes it).
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
        deviations: where the system's runs differ from the paper (REPORT.md lists them).
        comparisons: the pairs of rows the paper compares, ``(a, b, metric)`` (on the run's main
            test set) or ``(a, b, metric, test_sets)`` (on each of those test sets), or
            ``(RunConfig) -> list`` of them: REPORT.md gives each difference with a bootstrap interval.
        plan_epochs: ``(RunConfig, modality, training utterances) -> epochs`` the models reading a
            modality's features train for, where the system derives them (default ``train.epochs``).
    """

    name: str
    config_cls: type
    run_fold: Callable[[FoldContext], list[RowResult]]
    build_model: Callable[..., torch.nn.Module]
    declare: Callable[[RunConfig], list[Row]] | None = None
    analyses: Callable[[RunConfig], list[Analysis]] | None = None
    rows: tuple[str, ...] = ()
    recipe: Path | None = None
    paper: dict = field(default_factory=dict)
    title: str = ""
    finish: Callable[..., str] | None = None
    demo_corpora: tuple[str, ...] = ("iemocap",)
    demo_extra: tuple[tuple[str, ...], ...] = ()
    order: float = 100.0
    targets: tuple[str, ...] = ("dims", "category")
    deviations: tuple[Deviation, ...] = ()
    comparisons: tuple[tuple, ...] | Callable[[RunConfig], list] = ()
    plan_epochs: Callable[[RunConfig, str, int], int] | None = None

    def paper_comparisons(self, cfg: RunConfig) -> list[tuple]:
        """The pairs of rows the paper compares, for this recipe."""
        return list(self.comparisons(cfg) if callable(self.comparisons) else self.comparisons)

    def deviations_for(self, profile: str | tuple[str, ...], corpora: Iterable[str] = ()) -> list[Deviation]:
        """The deviations of a profile, or of a lineage ``(profile, *extends)`` (on these corpora)."""
        return [d for d in self.deviations if d.applies(profile, corpora)]

    def feature_uses(self, cfg: RunConfig) -> list[FeatureUse]:
        """The frozen features a run of this recipe reads: what its declared rows and analyses
        read (without declared rows: the recipe's encoders, read by one model each)."""
        if self.declare is None:
            return recipe_features(cfg)
        d = cfg.data
        out = []
        for row in self.declare(cfg):  # each read named by the row that reads it (the plan's "for")
            reads = row.reading
            if reads.audio and d.audio_encoder:
                out.append(FeatureUse(d.audio_encoder, layer_tuple(d.audio_layers), what=row.name))
            if reads.text and d.text_encoder:
                out.append(FeatureUse(d.text_encoder, layer_tuple(d.text_layers), what=row.name))
            out += [_use(read, f"{row.name} ({read.what})" if read.what else row.name) for read in reads.other]
        for analysis in self.analyses(cfg) if self.analyses is not None else []:
            out += [_use(read, analysis.name, analysis=True) for read in analysis.reads]
        return out

    def model_for(self, row: str, model_cfg: Any, spec: ModelSpec) -> torch.nn.Module:
        """A bundle's model, untrained: the architecture its spec records (else the row's name)."""
        return self.build_model(str(spec.options.get("architecture", row)), model_cfg, spec)

    @property
    def recipe_path(self) -> Path:
        """The recipe file."""
        return self.recipe or Path(__file__).resolve().parent.parent / "recipes" / f"{self.name}.yaml"

    def check_rows(self, rows: Iterable[str]) -> None:
        """Raise :class:`~sermo.config.ConfigError` naming unknown rows and the known ones (or none)."""
        if not self.rows:
            return
        if not list(rows):
            raise ConfigError(f"model.rows is empty: a {self.name} run needs at least one row of {', '.join(self.rows)}")
        unknown = [r for r in rows if r.split("@")[0] not in self.rows]
        if unknown:
            raise ConfigError(f"unknown {self.name} row(s) {unknown} in model.rows; known: {', '.join(self.rows)}")


REGISTRY: dict[str, SystemDef] = {}
"""Every registered system by name (:mod:`sermo.systems` fills it by importing them)."""


def register(system: SystemDef) -> SystemDef:
    """Add a system to the registry (a system module calls it at import)."""
    REGISTRY[system.name] = system
    return system
