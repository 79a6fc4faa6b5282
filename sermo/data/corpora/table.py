"""Generic corpora described by a table (CSV or JSONL): the layout of any other dataset.

Columns: ``path`` (audio file, absolute or relative to the table's folder; may be left out for a
text-only corpus, which then needs ``transcript``) and ``speaker``. Optional: ``id`` (default:
the audio path relative to the table's folder without its extension, ``train/dia0_utt0``, so
files of the same name in two folders stay apart; text-only rows: ``<table>-<line>``),
``category``, ``arousal``, ``valence``, ``dominance``, ``transcript``, ``session``,
``partition``, ``start``, ``end``, ``dialog``, ``turn_index``, ``gender``. Any other column is
kept in the manifest as it is (and can group folds: ``speaker-folds`` by any column). Dimensional
labels need a scale: columns ``scale_min``/``scale_max`` or the ``scale`` argument.
"""

from __future__ import annotations

import os

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sermo.data.audio import AudioError, audio_info
from sermo.data.manifest import DIMENSIONS, Manifest

REQUIRED = ("speaker",)
KNOWN = ("path", "id", "category", "arousal", "valence", "dominance", "transcript", "session", "partition",
         "start", "end", "dialog", "turn_index", "gender", "scale_min", "scale_max", "transcript_source")
NUMERIC = ("arousal", "valence", "dominance", "start", "end", "scale_min", "scale_max")


class TableLayoutError(ValueError):
    """The table lacks a required column or a scale; the message says what to add."""


def prepare_table(path: str | Path, *, name: str | None = None, scale: tuple[float, float] | None = None) -> Manifest:
    """Read a CSV/JSONL corpus table into a manifest.

    Args:
        path: the table file (``.csv``, ``.jsonl`` or ``.json`` lines).
        name: corpus name (default: the table's file name without extension).
        scale: ``(min, max)`` of the dimensional labels when the table has no scale columns.

    Raises:
        TableLayoutError: a required column is missing, ids repeat, a label is not a number, or
            dimensional labels have no scale (the message names the file and the line).
    """
    p = Path(path)
    if not p.is_file():
        raise TableLayoutError(f"{p}: table file does not exist")
    try:
        if p.suffix.lower() in (".jsonl", ".json"):
            df = pd.read_json(p, orient="records", lines=True, dtype=False)
        else:
            # cells as written: only an empty one is missing (a transcript 'NA' stays words, a label
            # 'n/a' is reported as not a number)
            df = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise TableLayoutError(f"{p}: not a readable table ({str(exc).splitlines()[0]})") from None
    line = lambda i: i + 2 if p.suffix.lower() == ".csv" else i + 1  # noqa: E731  (the header is line 1)
    lacking = [c for c in REQUIRED if c not in df.columns]
    if "path" not in df.columns and "transcript" not in df.columns:
        lacking.append("path (or transcript, for a text-only corpus)")
    if lacking:
        raise TableLayoutError(f"{p}: missing required column(s) {lacking}; found {list(df.columns)}")
    if df.empty:
        raise TableLayoutError(f"{p}: has a header and no rows; a corpus table needs one row per utterance")
    extra = [c for c in df.columns if c not in KNOWN + REQUIRED]
    if extra:
        warnings.warn(f"{p}: column(s) {extra} kept in the manifest as they are", stacklevel=2)
    for col in [c for c in NUMERIC if c in df.columns]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise TableLayoutError(f"{p}, line {line(i)}: {col} {df[col].iloc[i]!r} is not a number "
                                   f"({int(bad.sum())} such value(s))")
        df[col] = values
    has_dims = any(c in df.columns and df[c].notna().any() for c in DIMENSIONS)
    if has_dims and "scale_min" not in df.columns:
        if scale is None:
            raise TableLayoutError(f"{p}: dimensional labels need a scale; add scale_min/scale_max columns "
                                   "or pass --scale MIN,MAX")
        df["scale_min"], df["scale_max"] = float(scale[0]), float(scale[1])
    base = p.parent.resolve()
    if "path" in df.columns:
        paths = [None if pd.isna(a) or str(a).strip() == "" else Path(str(a)) for a in df["path"]]
        audio = [None if a is None else str((a if a.is_absolute() else base / a).resolve()) for a in paths]
        df = df.drop(columns="path")
    else:
        paths, audio = [None] * len(df), [None] * len(df)
    df["audio"] = audio
    if "id" not in df.columns:
        df["id"] = [_default_id(a, base, p, line(i)) for i, a in enumerate(audio)]
    dup = df["id"].astype(str).duplicated(keep=False)
    if dup.any():
        first = df["id"].astype(str)[dup].iloc[0]
        lines = [int(line(i)) for i in np.flatnonzero((df["id"].astype(str) == first).to_numpy())][:5]
        raise TableLayoutError(f"{p}: {int(dup.sum())} rows share an id, e.g. {first!r} on lines {lines}; give each "
                               "row its own id (an id column, or distinct audio paths)")
    df["corpus"] = name or p.stem
    if "transcript" in df.columns and "transcript_source" not in df.columns:
        df["transcript_source"] = np.where(df["transcript"].notna(), "oracle", None)  # type: ignore[call-overload]
    durations, problems = [], []
    for i, (a, s, e) in enumerate(zip(audio, df.get("start", [None] * len(df)), df.get("end", [None] * len(df)))):
        try:
            full = audio_info(a).duration if a is not None else float("nan")
        except AudioError as exc:
            durations.append(float("nan"))
            if os.path.lexists(str(a)):  # a missing file is reported by Manifest.problems()
                problems.append(f"{p}, line {line(i)}: {exc}; that utterance has no usable audio")
            continue
        s = 0.0 if s is None or pd.isna(s) else float(s)
        e = full if e is None or pd.isna(e) else float(e)
        durations.append(max(e - s, 0.0) if np.isfinite(full) else float("nan"))
    df["duration"] = durations
    return Manifest(df, problems)


def _default_id(audio: str | None, base: Path, table: Path, line: int) -> str:
    """The audio path relative to the table's folder without its extension (unique where the
    paths are), else the table's name and the row's line."""
    if audio is None:
        return f"{table.stem}-{line}"
    a = Path(audio)
    try:
        return a.relative_to(base).with_suffix("").as_posix()
    except ValueError:
        return a.with_suffix("").as_posix().lstrip("/")
