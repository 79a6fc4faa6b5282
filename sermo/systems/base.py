"""What every system shares: the typed model output and the system definition.

Systems know ``sermo.nn`` and the :class:`~sermo.data.batch.Batch` type, not the store or
the engine: the runner hands each system a fold context (``sermo.training.fold.FoldContext``)
whose ``dataset``, ``fit``, ``predict`` and ``row`` methods it drives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class Output:
    """What a system's ``forward`` returns (the same type every call).

    Attributes:
        dims: ``(B, 3)`` arousal, valence, dominance on [0, 1] (or ``None``).
        logits: ``(B, C)`` class scores (or ``None``).
        embedding: ``(B, E)`` the utterance embedding the heads read (or ``None``).
        extras: named tensors a system exposes (attention maps, layer weights, ...).
    """

    dims: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SystemDef:
    """A registered system.

    Attributes:
        name: the system's name (module, recipe, CLI and report use it).
        config_cls: the dataclass of its ``model`` recipe section.
        run_fold: ``(fold_context) -> list[RowResult]``: trains and predicts every row of one fold.
        build_model: ``(row, model_config, input_spec) -> nn.Module``: rebuilds a row's model
            from a bundle (``input_spec`` gives the encoders' dims and layers, the classes).
        paper: the paper's own numbers per corpus name and row, for REPORT.md.
        title: the paper, for reports.
        finish: optional ``(run_folder, results) -> markdown`` for analyses beyond the table.
        demo_corpora: the built-in corpus layouts ``sermo demo`` runs it on, in order.
        demo_extra: further demo runs, each on the layouts given together (e.g. both corpora
            for a cross-corpus experiment); their folders are ``<system>-<layouts>``.
    """

    name: str
    config_cls: type
    run_fold: Callable[[Any], list]
    build_model: Callable[..., torch.nn.Module]
    paper: dict = field(default_factory=dict)
    title: str = ""
    finish: Callable[..., str] | None = None
    demo_corpora: tuple[str, ...] = ("iemocap",)
    demo_extra: tuple[tuple[str, ...], ...] = ()
