"""Metrics with the names used in every results file.

Dimensional: ``ccc_<dim>``, ``pearson_<dim>`` for arousal, valence, dominance and
``ccc_mean`` (mean of the three CCCs). Categorical: ``ua`` (unweighted accuracy: the mean of
per-class recalls), ``wa`` (weighted accuracy: overall accuracy), ``macro_f1`` and
``weighted_f1`` (F1 per class weighted by its share of the truth, what MELD-style corpora report).

Edge cases, defined rather than NaN:
- a constant prediction or a constant truth gives CCC 0 and Pearson 0 (no agreement can be
  shown; a perfect constant prediction of a constant truth is also 0);
- missing labels (NaN truth, or class index -1) are left out before computing;
- ``ua`` averages recall over the classes present in the truth of the evaluated set, so a
  class absent from a fold neither counts as 0 nor as 1 (scikit-learn's
  ``balanced_accuracy_score``);
- ``macro_f1`` averages F1 over the classes present in the truth or the predictions (a
  class that is predicted but never true scores 0; scikit-learn's ``f1_score(average="macro")``);
- an empty evaluation set raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np

from sermo.data.manifest import DIMENSIONS

METRIC_KEYS = (
    "ccc_arousal", "ccc_valence", "ccc_dominance", "ccc_mean",
    "pearson_arousal", "pearson_valence", "pearson_dominance",
    "ua", "wa", "macro_f1", "weighted_f1",
)
"""Every metric key a results file may hold, in report order."""


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth and predictions differ in length: {t.shape[0]} vs {p.shape[0]}")
    keep = np.isfinite(t) & np.isfinite(p)
    if not keep.any():
        raise ValueError("no labelled items to evaluate")
    return t[keep], p[keep]


def ccc(y_true, y_pred) -> float:
    """Concordance correlation coefficient (Lin, 1989), population moments.

    ``2 cov(t, p) / (var t + var p + (mean t - mean p)^2)``; 0 when either side is constant.
    """
    t, p = _pair(y_true, y_pred)
    vt, vp = t.var(), p.var()
    if vt <= 1e-12 or vp <= 1e-12:
        return 0.0
    cov = ((t - t.mean()) * (p - p.mean())).mean()
    return float(2.0 * cov / (vt + vp + (t.mean() - p.mean()) ** 2))


def pearson(y_true, y_pred) -> float:
    """Pearson's correlation; 0 when either side is constant."""
    t, p = _pair(y_true, y_pred)
    st, sp = t.std(), p.std()
    if st <= 1e-12 or sp <= 1e-12:
        return 0.0
    return float(((t - t.mean()) * (p - p.mean())).mean() / (st * sp))


def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth and predictions differ in length: {t.shape[0]} vs {p.shape[0]}")
    keep = t >= 0 if np.issubdtype(t.dtype, np.integer) else np.array([x is not None for x in t])
    if not keep.any():
        raise ValueError("no labelled items to evaluate")
    return t[keep], p[keep]


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``(C, C)`` counts: row = true class index, column = predicted class index.

    Args:
        y_true, y_pred: class indices (-1 in the truth = unlabelled, skipped).
        num_classes: C (default: 1 + the largest index seen).
    """
    t, p = _labels(np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64))
    c = int(num_classes if num_classes is not None else max(t.max(), p.max()) + 1)
    m = np.zeros((c, c), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def unweighted_accuracy(y_true, y_pred) -> float:
    """UA: mean recall over the classes present in the truth."""
    t, p = _labels(np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64))
    return float(np.mean([np.mean(p[t == c] == c) for c in np.unique(t)]))


def weighted_accuracy(y_true, y_pred) -> float:
    """WA: overall accuracy (share of items classified correctly)."""
    t, p = _labels(np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64))
    return float(np.mean(t == p))


def macro_f1(y_true, y_pred) -> float:
    """Macro-averaged F1 over the classes present in the truth or the predictions."""
    t, p = _labels(np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64))
    scores = []
    for c in np.union1d(np.unique(t), np.unique(p)):
        tp = np.sum((t == c) & (p == c))
        denom = np.sum(t == c) + np.sum(p == c)
        scores.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def weighted_f1(y_true, y_pred) -> float:
    """F1 per class present in the truth, weighted by its share of the truth (scikit-learn's
    ``f1_score(average="weighted")``)."""
    t, p = _labels(np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64))
    total = 0.0
    for c in np.unique(t):
        tp = np.sum((t == c) & (p == c))
        total += np.sum(t == c) * 2.0 * tp / (np.sum(t == c) + np.sum(p == c))
    return float(total / len(t))


def regression_metrics(y_true, y_pred, dims=DIMENSIONS) -> dict[str, float]:
    """CCC and Pearson per dimension and ``ccc_mean``.

    Args:
        y_true, y_pred: ``(n, len(dims))`` arrays in the order of ``dims`` (NaN = missing).
        dims: the dimension names of the columns.

    Returns:
        ``{"ccc_<dim>", "pearson_<dim>" for each dim with labels, "ccc_mean"}``.
    """
    t = np.asarray(y_true, dtype=np.float64).reshape(-1, len(dims))
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1, len(dims))
    out: dict[str, float] = {}
    cccs = []
    for j, dim in enumerate(dims):
        if not np.isfinite(t[:, j]).any():
            continue
        out[f"ccc_{dim}"] = ccc(t[:, j], p[:, j])
        out[f"pearson_{dim}"] = pearson(t[:, j], p[:, j])
        cccs.append(out[f"ccc_{dim}"])
    if not cccs:
        raise ValueError("no dimensional labels to evaluate")
    out["ccc_mean"] = float(np.mean(cccs))
    return out


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """``ua``, ``wa``, ``macro_f1`` and ``weighted_f1`` of class indices (-1 in the truth = unlabelled)."""
    return {
        "ua": unweighted_accuracy(y_true, y_pred),
        "wa": weighted_accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "weighted_f1": weighted_f1(y_true, y_pred),
    }


def score_predictions(truth_dims: np.ndarray, truth_cls: np.ndarray, dims: np.ndarray | None,
                      probs: np.ndarray | None, num_classes: int | None = None) -> dict:
    """Every metric a set of predictions can be scored on: the dimensional ones where the model
    predicts dimensions and the truth has some, the categorical ones (and ``confusion``, with
    ``num_classes``) where it predicts classes and some truth is known.

    Args:
        truth_dims: ``(n, 3)`` true arousal, valence, dominance (NaN = missing).
        truth_cls: ``(n,)`` true class indices (-1 = missing).
        dims: ``(n, 3)`` predicted dimensions on the truth's scale, or ``None``.
        probs: ``(n, C)`` class probabilities, or ``None``.
    """
    m: dict = {}
    if dims is not None and np.isfinite(truth_dims).any():
        m.update(regression_metrics(truth_dims, dims))
    if probs is not None and (np.asarray(truth_cls) >= 0).any():
        guess = np.asarray(probs).argmax(1)
        m.update(classification_metrics(truth_cls, guess))
        if num_classes is not None:
            m["confusion"] = confusion_matrix(truth_cls, guess, num_classes).tolist()
    return m
