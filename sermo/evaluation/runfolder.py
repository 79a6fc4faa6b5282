"""A run folder's layout and the schema of what it holds, read and written in one place.

Layout::

    made_with.json            what the folder was made with (a rerun with other settings refuses)
    config.yaml               the resolved recipe profile (after --set overrides)
    protocol.json             the protocol, each fold's description and utterance ids
    PLAN.md                   per encoder: utterances, hours, bytes stored, stored or live, passes
    <fold>/<stage>/           Lightning checkpoints (last.ckpt resumes, best.ckpt), metrics.csv, DONE
    <fold>/rows.json          the fold's finished rows with metrics (a rerun skips finished folds)
    <fold>/seconds.json       how long the fold took
    <fold>/analysis/<name>    a system's analyses of its first folds (JSON)
    predictions/<row>.<fold>.<test>.parquet   per-utterance predictions with the truth
    results.json              every row: per-fold metrics, mean and sample std (ddof 1) over folds
    REPORT.md                 the paper-style table, the protocol in words, the paper's numbers
    plots/                    confusion matrices, predicted-vs-true scatter, training curves
    bundles/<row>/            the first fold's model of each servable row (safetensors + config)

``results.json`` is :class:`RunResults`; each fold's ``rows.json`` a list of :class:`FoldRow`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

from sermo.data.io import atomic_path, write_text_atomic

RECORD, CONFIG, PROTOCOL, PLAN = "made_with.json", "config.yaml", "protocol.json", "PLAN.md"
RESULTS, REPORT, PLOTS, PREDICTIONS, BUNDLES = "results.json", "REPORT.md", "plots", "predictions", "bundles"
ANALYSIS = "analysis"
"""A fold's folder of a system's analyses (``<fold>/analysis/<name>``)."""
ENTRIES = (RECORD, CONFIG, PROTOCOL, PLAN, RESULTS, REPORT, PLOTS, PREDICTIONS, BUNDLES)
"""What sermo writes at the top of a run folder, beside one folder per fold (protocol.json names them)."""


class FoldRow(TypedDict, total=False):
    """One row of one fold (``<fold>/rows.json``): its metrics per test set."""

    name: str
    modalities: list[str]
    trainable_params: int
    metrics: dict[str, dict[str, Any]]
    info: dict[str, Any]
    skipped: str


class TestSummary(TypedDict, total=False):
    """A row's numbers on one test set over the folds."""

    folds: list[dict[str, Any]]
    mean: dict[str, float]
    std: dict[str, float | None]
    utterances: int
    ids_digest: str
    confusion: list[list[int]]


class RowSummary(TestSummary, total=False):
    """A row of ``results.json``: its primary test set's summary at the top, other test sets under
    ``tests``, each fold's ``info``."""

    name: str
    modalities: list[str]
    trainable_params: int
    test_set: str | None
    tests: dict[str, TestSummary]
    info: list[dict[str, Any]]
    skipped: str


class RunResults(TypedDict, total=False):
    """``results.json``."""

    system: str
    corpus: str
    protocol: str
    profile: str
    label_space: str
    rows: list[RowSummary]
    classes: list[str]
    left_out: Any
    transcripts: dict[str, Any]
    unplanned: list[str]
    seconds_this_session: float
    seconds_earlier: float
    seconds: float


class RunFolder:
    """A run folder: where each part lies, and its JSON read and written (atomically)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- where things lie -----------------------------------------------------------------
    @property
    def results_path(self) -> Path:
        return self.root / RESULTS

    @property
    def report_path(self) -> Path:
        return self.root / REPORT

    @property
    def plots(self) -> Path:
        return self.root / PLOTS

    def fold(self, name: str) -> Path:
        """A fold's folder (its stages, rows.json, analyses)."""
        return self.root / name

    def bundle(self, row: str) -> Path:
        """A servable row's bundle folder."""
        return self.root / BUNDLES / row

    def predictions(self, row: str, fold: str, test: str) -> Path:
        """A row's predictions in one fold on one test set."""
        return self.root / PREDICTIONS / f"{row}.{fold}.{test}.parquet"

    def prediction_files(self, row: str, test: str) -> list[tuple[str, Path]]:
        """Every fold's predictions of a row on one test set: ``[(fold, path), ...]``, by fold name."""
        files = sorted((self.root / PREDICTIONS).glob(f"{row}.*.{test}.parquet"))
        return [(p.name[len(row) + 1:-len(f".{test}.parquet")], p) for p in files]

    def stage_records(self) -> list[tuple[str, Path]]:
        """Every finished stage's ``DONE`` record: ``[(stage, path), ...]`` in fold and stage order."""
        return [(p.parent.name, p) for p in sorted(self.root.glob("*/*/DONE"))]

    def metrics_logs(self) -> list[tuple[str, str, Path]]:
        """Every stage's training log: ``[(fold, stage, metrics.csv), ...]``."""
        return [(p.parent.parent.name, p.parent.name, p) for p in sorted(self.root.glob("*/*/metrics.csv"))]

    # -- what they hold -------------------------------------------------------------------
    def write_results(self, results: RunResults) -> None:
        write_text_atomic(self.results_path, json.dumps(results, indent=1))

    def read_results(self) -> RunResults:
        """``results.json``.

        Raises:
            FileNotFoundError: the run has not finished (or this is not a run folder).
        """
        if not self.results_path.is_file():
            raise FileNotFoundError(f"{self.results_path}: no results (the run has not finished, or {self.root} is "
                                    "not a run folder)")
        results: RunResults = json.loads(self.results_path.read_text())
        return results

    def fold_rows(self, fold: str) -> list[FoldRow] | None:
        """A finished fold's rows (``None``: the fold has not finished)."""
        path = self.fold(fold) / "rows.json"
        if not path.is_file():
            return None
        rows: list[FoldRow] = json.loads(path.read_text())
        return rows

    def write_fold_rows(self, fold: str, rows: list[FoldRow], seconds: float) -> None:
        """A fold's rows and its time; ``rows.json`` last, as it marks the fold finished."""
        write_text_atomic(self.fold(fold) / "seconds.json", json.dumps({"seconds": round(seconds, 1)}))
        write_text_atomic(self.fold(fold) / "rows.json", json.dumps(rows, indent=1))

    def fold_seconds(self, fold: str) -> float:
        """How long a finished fold took (0 for a fold finished before sermo recorded it)."""
        try:
            return float(json.loads((self.fold(fold) / "seconds.json").read_text())["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    def analyses(self, name: str) -> list[tuple[str, Any]]:
        """Every fold's ``<fold>/analysis/<name>`` JSON: ``[(fold, data), ...]`` in fold order (what
        systems' ``finish`` gather from the first folds' analyses)."""
        return [(p.parent.parent.name, json.loads(p.read_text())) for p in sorted(self.root.glob(f"*/{ANALYSIS}/{name}"))]

    def protocol_folds(self) -> list[str]:
        """The fold names ``protocol.json`` lists (none where it is missing)."""
        try:
            return [f["name"] for f in json.loads((self.root / PROTOCOL).read_text()).get("folds", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []


def write_parquet(path: Path, frame: Any) -> None:
    """A DataFrame written atomically (a killed run never leaves half a file)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
