"""The plots of a run folder, from its saved predictions and training logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sermo.evaluation.metrics import DIMENSIONS
from sermo.evaluation.plots import confusion_plot, curves_plot, scatter_plot
from sermo.evaluation.runfolder import RunFolder, RunResults


def plot_run(out: Path, results: RunResults, classes) -> dict[str, list[Path]]:
    """Confusion matrix per classifier row, predicted-vs-true scatter per regression row (pooled
    over folds, primary test set), and training curves per stage. Returns row -> plot paths."""
    folder = RunFolder(out)
    plots: dict[str, list[Path]] = {}
    for row in results["rows"]:
        name, test = row["name"], row.get("test_set")
        if test is None:  # a skipped row
            continue
        paths = plots.setdefault(name, [])
        if "confusion" in row:
            paths.append(confusion_plot(np.array(row["confusion"]), list(classes),
                                        f"{name}: confusion over all folds", folder.plots / f"confusion_{name}.png"))
        if any(k.startswith("ccc_") for k in row["mean"]):
            frames = [pd.read_parquet(p) for _, p in folder.prediction_files(name, test)]
            frames = [f for f in frames if f"{DIMENSIONS[0]}_pred" in f]
            if frames:
                df = pd.concat(frames)
                truth = df[[f"{d}_true" for d in DIMENSIONS]].to_numpy(float)
                pred = df[[f"{d}_pred" for d in DIMENSIONS]].to_numpy(float)
                paths.append(scatter_plot(truth, pred, f"{name}: predicted vs true ({test}, all folds)",
                                          folder.plots / f"scatter_{name}.png"))
    stages: dict[str, dict[str, pd.DataFrame]] = {}
    for fold, stage, csv in folder.metrics_logs():
        stages.setdefault(stage, {})[fold] = pd.read_csv(csv)
    for stage, curves in stages.items():
        path = curves_plot(curves, f"{stage}: loss per epoch", folder.plots / f"curves_{stage}.png")
        plots.setdefault(stage, []).append(path)
    return plots
