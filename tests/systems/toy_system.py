"""A system written outside ``sermo/``, against the contract alone (``docs/systems.md``): the
mean of the recipe's audio features over time, one linear layer to the classes and one to the
dimensions. Its recipe lives wherever the test puts it."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sermo.config import RunConfig
from sermo.data.batch import Batch
from sermo.data.spec import ModelSpec
from sermo.nn.layers import Standardize
from sermo.nn.losses import ccc_loss, masked_cross_entropy
from sermo.nn.pooling import masked_mean
from sermo.systems.api import FoldContext, Output, Row, RowResult, Stats
from sermo.systems.definition import SystemDef, register


@dataclass
class ToyConfig:
    """Model section of the toy recipe."""

    rows: list[str] = field(default_factory=lambda: ["pooled"])
    layer: int = -1


class Toy(nn.Module):
    def __init__(self, layers: int, dim: int, num_classes: int, cfg: ToyConfig):
        super().__init__()
        self.norm, self.layer = Standardize(layers, dim), cfg.layer
        self.dims, self.classes = nn.Linear(dim, 3), nn.Linear(dim, num_classes)

    def forward(self, batch: Batch) -> Output:
        audio, mask = batch.need("audio"), batch.need("audio_mask")
        h = masked_mean(self.norm(audio, mask)[:, self.layer], mask)
        return Output(dims=torch.sigmoid(self.dims(h)), logits=self.classes(h), embedding=h)

    def losses(self, out: Output, batch: Batch) -> dict:
        assert out.dims is not None and out.logits is not None
        ccc, ce = ccc_loss(out.dims, batch.dims), masked_cross_entropy(out.logits, batch.category)
        return {"loss": ccc + ce, "ccc": ccc, "ce": ce}


def build_model(architecture: str, cfg: ToyConfig, spec: ModelSpec, stats: Stats | None = None) -> Toy:
    assert spec.audio is not None, "the toy reads audio features"
    model = Toy(*spec.audio, spec.num_classes, cfg)
    if stats:
        model.norm.set(*stats["audio"])
    return model


def rows(cfg: RunConfig) -> list[Row]:
    """Every row of the recipe is the same model on the recipe's audio features."""
    return [Row(name, ("audio",), "pooled", functools.partial(build_model, "pooled", cfg.model))
            for name in cfg.model.rows]


def run_fold(ctx: FoldContext) -> list[RowResult]:
    return [ctx.train(row) for row in rows(ctx.cfg)]


def contract_examples(enc: dict[str, str]) -> list:
    """Its contract examples (``tests/systems/contract.py``)."""
    from tests.systems.contract import Example, feats, spec

    return [Example("pooled", ToyConfig(), spec(audio=feats(2, 6))), Example("pooled", ToyConfig(layer=0),
                                                                             spec(audio=feats(3, 4)))]


def define(recipe: Path) -> SystemDef:
    """Register the toy system with its recipe file."""
    return register(SystemDef(name="toy", config_cls=ToyConfig, run_fold=run_fold, build_model=build_model,
                              declare=rows, rows=("pooled",), recipe=recipe, title="A toy system from the test folder"))
