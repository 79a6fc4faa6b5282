"""PNG plots of a run: confusion matrices, predicted-vs-true scatter, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sermo.evaluation.metrics import DIMENSIONS  # noqa: E402


def confusion_plot(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix with counts, saved as PNG."""
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(classes), 1.0 + 0.8 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(m[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, path)


def scatter_plot(truth: np.ndarray, pred: np.ndarray, title: str, path: Path) -> Path:
    """Predicted vs true per dimension (one panel each), with the identity line."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    for j, (ax, dim) in enumerate(zip(axes, DIMENSIONS)):
        t, p = truth[:, j], pred[:, j]
        ok = np.isfinite(t) & np.isfinite(p)
        ax.scatter(t[ok], p[ok], s=6, alpha=0.4)
        if ok.any():
            lo, hi = np.nanmin(t[ok]), np.nanmax(t[ok])
            ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
        ax.set_xlabel(f"true {dim}")
        ax.set_ylabel(f"predicted {dim}")
    fig.suptitle(title)
    return save_figure(fig, path)


def curves_plot(curves: dict[str, pd.DataFrame], title: str, path: Path) -> Path:
    """Training and validation loss per epoch, one line per fold/stage."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, df in curves.items():
        for col, style in (("train_loss", "--"), ("val_loss", "-")):
            if col in df:
                d = df[["epoch", col]].dropna().groupby("epoch").mean()
                ax.plot(d.index, d[col], style, label=f"{name} {col.split('_')[0]}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if curves:
        ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Lay out, write atomically as PNG, close; returns ``path``."""
    from sermo.data.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
