"""A system written outside ``sermo/``, against the contract alone (``docs/systems.md``): the
mean of the recipe's audio features over time, one linear layer to the classes and one to the
dimensions. Its recipe lives wherever the test puts it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sermo.data.batch import Batch
from sermo.data.spec import ModelSpec
from sermo.nn.layers import Standardize
from sermo.nn.losses import ccc_loss, masked_cross_entropy
from sermo.nn.pooling import masked_mean
from sermo.systems.api import FoldContext, Output, SystemDef, register


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
        h = masked_mean(self.norm(batch.audio, batch.audio_mask)[:, self.layer], batch.audio_mask)
        return Output(dims=torch.sigmoid(self.dims(h)), logits=self.classes(h), embedding=h)

    def losses(self, out: Output, batch: Batch) -> dict:
        ccc, ce = ccc_loss(out.dims, batch.dims), masked_cross_entropy(out.logits, batch.category)
        return {"loss": ccc + ce, "ccc": ccc, "ce": ce}


def run_fold(ctx: FoldContext) -> list:
    results = []
    for row in ctx.cfg.model.rows:
        ctx.seed(row)
        model = Toy(ctx.audio.num_layers, ctx.audio.dim, ctx.num_classes, ctx.cfg.model)
        model.norm.set(*ctx.feature_stats(ctx.audio))

        def data(split):
            return ctx.dataset(split, audio=True)

        model = ctx.fit(model, row, data("train"), data("valid"))
        results.append(ctx.row(row, ("audio",), model, ctx.predict(model, data)))
    return results


def build_model(row: str, cfg: ToyConfig, spec: ModelSpec) -> Toy:
    return Toy(*spec.audio, spec.num_classes, cfg)


def define(recipe: Path) -> SystemDef:
    """Register the toy system with its recipe file."""
    return register(SystemDef(name="toy", config_cls=ToyConfig, run_fold=run_fold, build_model=build_model,
                              rows=("pooled",), recipe=recipe, title="A toy system from the test folder"))
