"""Is a difference between two rows more than noise? A paired bootstrap over test utterances.

For a pair of rows a paper compares, the predictions of both rows on the same test
utterances (every fold's test set pooled, as the run's ``predictions/`` files hold them) are
resampled together, with replacement, ``n`` times; each resample gives the metric of each row
and their difference. The table reports the difference on all utterances, its 95% interval
(the 2.5th and 97.5th percentiles of the resampled differences) and, per fold, its sign.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sermo.evaluation.metrics import DIMENSIONS, ccc, classification_metrics
from sermo.evaluation.runfolder import RunFolder

BOOTSTRAPS = 1000


def metric_of(df: pd.DataFrame, metric: str) -> float:
    """A metric of a predictions table (columns ``<dim>_true``/``<dim>_pred``, ``category_true``/
    ``category_pred``): ``ccc_<dim>``, ``ccc_mean``, ``ua``, ``wa`` or ``macro_f1``."""
    return _metric(_arrays(df, metric), metric, np.arange(len(df)))


def _arrays(df: pd.DataFrame, metric: str) -> dict[str, np.ndarray]:
    """The columns ``metric`` reads, as arrays (a bootstrap indexes them a thousand times)."""
    if metric.startswith("ccc_"):
        dims = DIMENSIONS if metric == "ccc_mean" else (metric[4:],)
        return {c: df[c].to_numpy(float) for d in dims for c in (f"{d}_true", f"{d}_pred")}
    return {c: df[c].to_numpy() for c in ("category_true", "category_pred")}


def _metric(cols: dict[str, np.ndarray], metric: str, idx: np.ndarray) -> float:
    """``metric`` on the utterances ``idx`` (with repeats) of :func:`_arrays`' columns."""
    if metric.startswith("ccc_"):
        dims = DIMENSIONS if metric == "ccc_mean" else (metric[4:],)
        vals = []
        for d in dims:
            truth, pred = cols[f"{d}_true"][idx], cols[f"{d}_pred"][idx]
            ok = np.isfinite(truth)
            vals.append(ccc(truth[ok], pred[ok]))
        return float(np.mean(vals))
    truth, pred = cols["category_true"][idx], cols["category_pred"][idx]
    known = truth >= 0
    return float(classification_metrics(truth[known], pred[known])[metric])


def load_predictions(run: Path, row: str, test: str) -> pd.DataFrame:
    """Every fold's predictions of a row on one test set, with a ``fold`` column."""
    parts = []
    for fold, path in RunFolder(run).prediction_files(row, test):
        parts.append(pd.read_parquet(path).assign(fold=fold))
    if not parts:
        raise FileNotFoundError(f"{run}: no predictions of row {row!r} on {test!r}")
    return pd.concat(parts, ignore_index=True)


def paired_bootstrap(a: pd.DataFrame, b: pd.DataFrame, metric: str, *, n: int = BOOTSTRAPS,
                     seed: int = 0) -> dict:
    """``metric(b) - metric(a)`` on the utterances both predicted, its 95% bootstrap interval and
    the sign per fold.

    Returns:
        ``{"difference", "low", "high", "utterances", "folds": {fold: difference}}``.
    """
    keys = ["fold", "id"]
    both = a.merge(b, on=keys, suffixes=("_a", "_b"))
    if both.empty:
        raise ValueError("the two rows share no test utterance")

    def side(df: pd.DataFrame, s: str) -> pd.DataFrame:
        cols = {c[: -len(s)]: c for c in df.columns if c.endswith(s)}
        out = df[list(cols.values())].rename(columns={v: k for k, v in cols.items()})
        return out

    left, right = _arrays(side(both, "_a"), metric), _arrays(side(both, "_b"), metric)
    everything = np.arange(len(both))
    diff = _metric(right, metric, everything) - _metric(left, metric, everything)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n):
        idx = rng.integers(0, len(both), len(both))
        try:
            draws.append(_metric(right, metric, idx) - _metric(left, metric, idx))
        except ValueError:  # a resample without any labelled utterance
            continue
    folds = {}
    for fold, g in both.groupby("fold", sort=True):
        idx = g.index.to_numpy()  # both has a fresh RangeIndex: labels are positions
        folds[fold] = _metric(right, metric, idx) - _metric(left, metric, idx)
    low, high = (np.percentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan))
    return {"difference": float(diff), "low": float(low), "high": float(high), "utterances": len(both),
            "folds": folds}


def significance_table(run: Path, comparisons, tests, rows: list[str]) -> list[dict]:
    """One line per comparison whose rows both ran and per test set it applies to: the
    difference b - a, its interval, whether the interval excludes zero, the signs per fold.

    ``comparisons``: ``(a, b, metric)`` (on the run's main test set, the first of ``tests``) or
    ``(a, b, metric, test_sets)`` (on each of those test sets the run has: a paper that reports
    UA on one corpus and macro-F1 on another compares each on its own)."""
    tests = [tests] if isinstance(tests, str) else list(tests)
    out = []
    for test in tests:
        for a, b, metric, *where in comparisons:
            if a not in rows or b not in rows or test not in (where[0] if where else tests[:1]):
                continue
            try:
                r = paired_bootstrap(load_predictions(run, a, test), load_predictions(run, b, test), metric)
            except (FileNotFoundError, ValueError, KeyError):
                continue
            signs = "".join("+" if d > 0 else "-" if d < 0 else "0" for d in r["folds"].values())
            out.append({"comparison": f"{b} vs {a}", "test set": test, "metric": metric,
                        "difference": f"{r['difference']:+.3f}",
                        "95% interval": f"[{r['low']:+.3f}, {r['high']:+.3f}]",
                        "significant": "yes" if r["low"] > 0 or r["high"] < 0 else "no",
                        "per fold": signs, "utterances": r["utterances"]})
    if len({line["test set"] for line in out}) < 2:
        for line in out:
            del line["test set"]
    return out
