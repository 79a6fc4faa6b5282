"""The baselines' linear-probe rows (``linear``, ``linear_text``): the field's reference (SUPERB,
EmoBox) the neural rows are read against. A probe's heads are fitted outside the network
(logistic and ridge regression, their strengths chosen on the validation split only) and copied
into a :class:`~sermo.nn.probe.LinearProbe`, so it predicts, saves and loads like every row."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sermo.data.batch import Batch
from sermo.nn.probe import LinearProbe
from sermo.systems.api import Output


class LinearRow(nn.Module):
    """A linear-probe row: :class:`~sermo.nn.probe.LinearProbe` on one modality's features."""

    def __init__(self, modality: str, num_layers: int, dim: int, num_classes: int, tasks):
        super().__init__()
        self.modality = modality
        self.probe = LinearProbe(num_layers, dim, num_classes, dims="dims" in tasks, category="category" in tasks)

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.need(self.modality), batch.need(f"{self.modality}_mask")

    def forward(self, batch: Batch) -> Output:
        dims, logits = self.probe(*self.inputs(batch))
        return Output(dims=dims, logits=logits)

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        return self.probe.losses_of(out.dims, out.logits, batch)


def fit_linear(probe: LinearProbe, train: tuple, valid: tuple, cfg) -> dict:
    """Fit a probe's heads on pooled features: ``train`` and ``valid`` are ``(features (n, w),
    dims (n, 3) on [0, 1] with NaN missing, class indices (n,) with -1 unlabelled)``. Logistic
    regression (balanced class weights) per ``cfg.linear_c`` and ridge per dimension per
    ``cfg.linear_alpha``, each chosen by its validation score (UA, CCC); the standardisation of
    the pooled features is folded into the linear maps. Returns what was chosen."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from sermo.evaluation.metrics import ccc, unweighted_accuracy

    (xt, dt, ct), (xv, dv, cv) = train, valid
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    zt, zv = (xt - mu) / sd, (xv - mu) / sd
    info: dict = {}

    def install(head: str, w, b, rows=None) -> None:
        w = np.atleast_2d(w) / sd
        probe.install(head, w, np.atleast_1d(b) - w @ mu, rows=rows)

    def choose(grid, fit, score):
        """The grid value with the best validation score (the first of equals: the most regularised)."""
        best = None
        for value in grid:
            model = fit(value)
            s = score(model)
            if best is None or s > best[0]:
                best = (s, value, model)
        return best

    if probe.cls_head is not None:
        with torch.no_grad():  # a class the training split lacks is never predicted
            probe.cls_head.weight.zero_()
            probe.cls_head.bias.fill_(-30.0)
        lt, lv = ct >= 0, cv >= 0
        present = np.unique(ct[lt])
        if len(present) >= 2:
            def fit_logistic(c: float) -> Any:
                return LogisticRegression(C=c, class_weight="balanced", max_iter=3000).fit(zt[lt], ct[lt])

            def score_logistic(m: Any) -> float:
                return unweighted_accuracy(cv[lv], m.predict(zv[lv])) if lv.any() else 0.0

            best, c, clf = choose(cfg.linear_c, fit_logistic, score_logistic)
            if len(present) == 2:  # one score for the second class against the first
                install("cls", np.zeros_like(clf.coef_), [0.0], rows=[int(present[0])])
                install("cls", clf.coef_, clf.intercept_, rows=[int(present[1])])
            else:
                install("cls", clf.coef_, clf.intercept_, rows=[int(k) for k in clf.classes_])
            info.update(linear_c=c, valid_ua=float(best) if lv.any() else None)
        elif len(present) == 1:
            with torch.no_grad():
                probe.cls_head.bias[int(present[0])] = 0.0
    if probe.dims_head is not None:
        with torch.no_grad():
            probe.dims_head.weight.zero_()
            probe.dims_head.bias.fill_(0.5)
        alphas: list[float | None] = []
        for j in range(3):
            lt, lv = np.isfinite(dt[:, j]), np.isfinite(dv[:, j])
            if lt.sum() < 2:
                alphas.append(None)
                continue
            def fit_ridge(a: float, j: int = j, lt: np.ndarray = lt) -> Any:
                return Ridge(alpha=a).fit(zt[lt], dt[lt, j])

            def score_ridge(m: Any, j: int = j, lv: np.ndarray = lv) -> float:
                return ccc(dv[lv, j], m.predict(zv[lv])) if lv.sum() > 1 else 0.0

            _, a, reg = choose(cfg.linear_alpha, fit_ridge, score_ridge)
            install("dims", reg.coef_, [reg.intercept_], rows=[j])
            alphas.append(a)
        info["linear_alpha"] = alphas
    return info


def train_linear(ctx, row: str, modality: str, cfg):
    """Pool the frozen features of a fold's splits, fit the probe (tuned on validation only),
    evaluate; returns its RowResult (``cfg``: the baselines' model config)."""
    ctx.seed(row)
    src = ctx.audio if modality == "audio" else ctx.text
    model = LinearRow(modality, src.num_layers, src.dim, ctx.num_classes, cfg.tasks)
    model.probe.norm.set(*ctx.feature_stats(src))

    def data(split):
        return ctx.dataset(split, audio=modality == "audio", text=modality == "text")

    def pooled(split) -> tuple:
        feats, dims, cls = [], [], []
        for batch, f in ctx.forward(model, data(split), 64, call=lambda m, b: m.probe.pooled(*m.inputs(b))):
            feats.append(f.float().cpu().numpy())
            dims.append(batch.dims.float().cpu().numpy())
            cls.append(batch.category.cpu().numpy())
        return np.concatenate(feats).astype(np.float64), np.concatenate(dims), np.concatenate(cls)

    info = fit_linear(model.probe, pooled("train"), pooled("valid"), cfg)
    return ctx.row(row, (modality,), model, ctx.predict(model, data), info=info)
