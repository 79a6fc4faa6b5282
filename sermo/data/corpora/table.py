"""Generic corpora described by a table (CSV or JSONL): the layout of any other dataset.

Required columns: ``path`` (audio file, absolute or relative to the table's folder) and
``speaker``. Optional: ``id`` (default: the file name without extension), ``category``,
``arousal``, ``valence``, ``dominance``, ``transcript``, ``session``, ``partition``,
``start``, ``end``, ``dialog``, ``turn_index``, ``gender``. Dimensional labels need a scale:
columns ``scale_min``/``scale_max`` or the ``scale`` argument.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sermo.data.audio import AudioError, audio_info
from sermo.data.manifest import DIMENSIONS, Manifest

REQUIRED = ("path", "speaker")
OPTIONAL = ("id", "category", "arousal", "valence", "dominance", "transcript", "session", "partition",
            "start", "end", "dialog", "turn_index", "gender", "scale_min", "scale_max", "transcript_source")


class TableLayoutError(ValueError):
    """The table lacks a required column or a scale; the message says what to add."""


def prepare_table(path: str | Path, *, name: str | None = None, scale: tuple[float, float] | None = None) -> Manifest:
    """Read a CSV/JSONL corpus table into a manifest.

    Args:
        path: the table file (``.csv``, ``.jsonl`` or ``.json`` lines).
        name: corpus name (default: the table's file name without extension).
        scale: ``(min, max)`` of the dimensional labels when the table has no scale columns.

    Raises:
        TableLayoutError: a required column is missing, an unknown column is present, or
            dimensional labels have no scale.
    """
    p = Path(path)
    if not p.is_file():
        raise TableLayoutError(f"{p}: table file does not exist")
    if p.suffix.lower() in (".jsonl", ".json"):
        df = pd.read_json(p, orient="records", lines=True, dtype=False)
    else:
        df = pd.read_csv(p, dtype={"speaker": str, "id": str, "category": str, "session": str, "partition": str})
    lacking = [c for c in REQUIRED if c not in df.columns]
    if lacking:
        raise TableLayoutError(f"{p}: missing required column(s) {lacking}; found {list(df.columns)}")
    unknown = [c for c in df.columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise TableLayoutError(f"{p}: unknown column(s) {unknown}; valid: {', '.join(REQUIRED + OPTIONAL)}")
    has_dims = any(c in df.columns and df[c].notna().any() for c in DIMENSIONS)
    if has_dims and "scale_min" not in df.columns:
        if scale is None:
            raise TableLayoutError(f"{p}: dimensional labels need a scale; add scale_min/scale_max columns "
                                   "or pass --scale MIN,MAX")
        df["scale_min"], df["scale_max"] = float(scale[0]), float(scale[1])
    base = p.parent
    audio = [str((Path(a) if Path(a).is_absolute() else base / a).resolve()) for a in df["path"].astype(str)]
    df = df.drop(columns="path")
    df["audio"] = audio
    if "id" not in df.columns:
        df["id"] = [Path(a).stem for a in audio]
    df["corpus"] = name or p.stem
    if "transcript" in df.columns and "transcript_source" not in df.columns:
        df["transcript_source"] = np.where(df["transcript"].notna(), "oracle", None)
    durations = []
    for a, s, e in zip(audio, df.get("start", [None] * len(df)), df.get("end", [None] * len(df))):
        try:
            full = audio_info(a).duration
        except AudioError:
            durations.append(float("nan"))
            continue
        s = 0.0 if s is None or pd.isna(s) else float(s)
        e = full if e is None or pd.isna(e) else float(e)
        durations.append(max(e - s, 0.0))
    df["duration"] = durations
    return Manifest(df)
