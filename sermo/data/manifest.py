"""The manifest: one row per utterance, every field a corpus has, nothing dropped.

A :class:`Manifest` wraps a pandas DataFrame whose columns are :data:`COLUMNS`. Loaders
(``sermo/data/corpora/``) are the only code that builds one from a corpus layout; everything
after them reads manifests. Missing values are missing (NaN / None), never 0.

Columns:
    id: unique utterance id (the corpus's own, e.g. ``Ses01F_impro01_F000``).
    corpus: the corpus name (``iemocap``, ``msp-podcast``, or the table's name).
    audio: absolute path of the audio file.
    start, end: segment bounds in seconds within ``audio`` (NaN: the whole file).
    duration: seconds of audio of the utterance (from the file header).
    speaker, gender, session, dialog, turn_index: who, in which recording session and
        dialog, at which position in the dialog (0-based, in time order).
    dialog_start, dialog_end: the utterance's time within its dialog recording.
    transcript, transcript_source: the words and where they came from
        (``oracle`` or ``asr:<engine>``).
    partition: the corpus's own split name where it has one (MSP-Podcast ``Train``, ...).
    arousal, valence, dominance: consensus ratings on the corpus scale.
    category: the corpus's consensus category code (``neu``, ``xxx``, ``A``, ``X``, ...).
    scale_min, scale_max: the corpus scale of the dimensional ratings.
    ratings: JSON list of per-annotator ratings, as the corpus gives them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from sermo.data.io import atomic_path

COLUMNS: tuple[str, ...] = (
    "id", "corpus", "audio", "start", "end", "duration",
    "speaker", "gender", "session", "dialog", "turn_index", "dialog_start", "dialog_end",
    "transcript", "transcript_source", "partition",
    "arousal", "valence", "dominance", "category", "scale_min", "scale_max", "ratings",
)
DIMENSIONS: tuple[str, ...] = ("arousal", "valence", "dominance")
"""The dimensional labels, in the order every array of sermo uses: A, V, D."""

_FLOAT = ("start", "end", "duration", "dialog_start", "dialog_end", "arousal", "valence",
          "dominance", "scale_min", "scale_max")
_INT = ("turn_index",)
_TRANSCRIPT_SOURCE = re.compile(r"^(oracle|asr:[\w.\-/]+)$")
FORMATS = (".parquet", ".jsonl", ".csv")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message lists every problem found."""


class Manifest:
    """A table of utterances with the columns of :data:`COLUMNS`.

    Args:
        df: a DataFrame with at least ``id`` and ``audio``; missing columns are added empty.
    """

    def __init__(self, df: pd.DataFrame, reported: list[str] | None = None, *, source: str | None = None):
        missing_required = [c for c in ("id", "audio") if c not in df.columns]
        if missing_required:
            raise ManifestError(f"manifest lacks required column(s) {missing_required}; columns are {list(df.columns)}")
        df = df.copy()
        self.reported: list[str] = list(reported or [])
        """Problems the loader found in the corpus files (each names the file and line)."""
        for col in COLUMNS:
            if col not in df.columns:
                df[col] = np.nan if col in _FLOAT else None
        for col in _FLOAT:
            numbers = pd.to_numeric(df[col], errors="coerce")
            text = df[col].notna() & numbers.isna()
            if text.any():  # never silently NaN: a value that is not a number is reported
                i = int(np.flatnonzero(text.to_numpy())[0])
                where = f"{source}: " if source else ""
                self.reported.append(f"{where}{int(text.sum())} {col} value(s) are not numbers, e.g. "
                                     f"{df['id'].iloc[i]}: {df[col].iloc[i]!r} (they count as missing)")
            df[col] = numbers.astype("float64")
        df["turn_index"] = pd.to_numeric(df["turn_index"], errors="coerce").astype("Int64")
        for col in set(COLUMNS) - set(_FLOAT) - set(_INT):
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        df["id"] = df["id"].astype(str)
        extra = [c for c in df.columns if c not in COLUMNS]
        self.df = df[list(COLUMNS) + extra].reset_index(drop=True)

    # -- basic access ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        corpora = sorted({str(c) for c in self.df["corpus"].dropna()})
        return f"Manifest({len(self)} utterances, corpora={corpora})"

    @property
    def ids(self) -> list[str]:
        """Utterance ids in row order."""
        return self.df["id"].tolist()

    def subset(self, ids) -> "Manifest":
        """The rows with the given ids, in the given order.

        Raises:
            KeyError: an id not in the manifest.
        """
        index = pd.Index(self.df["id"])
        pos = index.get_indexer(list(ids))
        if (pos < 0).any():
            missing = [i for i, p in zip(ids, pos) if p < 0][:5]
            raise KeyError(f"ids not in the manifest: {missing}")
        return Manifest(self.df.iloc[pos])

    def where(self, mask) -> "Manifest":
        """The rows where the boolean ``mask`` is true."""
        return Manifest(self.df[np.asarray(mask, dtype=bool)])

    def ratings(self, i: int) -> list[dict]:
        """The per-annotator ratings of row ``i`` as a list of dicts."""
        raw = self.df.at[i, "ratings"]
        return json.loads(raw) if raw else []

    def dimensions(self) -> np.ndarray:
        """``(n, 3)`` float array of arousal, valence, dominance on the corpus scale (NaN = missing)."""
        return self.df[list(DIMENSIONS)].to_numpy(dtype=np.float64)

    @staticmethod
    def concat(manifests: list["Manifest"]) -> "Manifest":
        """Rows of several manifests in one (ids must stay unique across them)."""
        return Manifest(pd.concat([m.df for m in manifests], ignore_index=True),
                        [r for m in manifests for r in m.reported])

    # -- validation -----------------------------------------------------------------
    def problems(self, *, check_audio: bool = True) -> list[str]:
        """Every problem that makes the manifest unsafe to use, as readable lines: those its loader
        reported in the corpus files (:attr:`reported`), then those of its rows."""
        df = self.df
        out: list[str] = list(self.reported)
        dup = df["id"][df["id"].duplicated(keep=False)]
        if len(dup):
            out.append(f"{dup.nunique()} duplicate id(s), e.g. {sorted(set(dup))[:5]}")
        for dim in DIMENSIONS:
            vals = df[dim]
            lo, hi = df["scale_min"], df["scale_max"]
            has = vals.notna()
            no_scale = has & (lo.isna() | hi.isna())
            if no_scale.any():
                out.append(f"{int(no_scale.sum())} row(s) have {dim} but no scale_min/scale_max, e.g. {df['id'][no_scale].iloc[0]}")
            bad = has & ~no_scale & ((vals < lo - 1e-9) | (vals > hi + 1e-9))
            if bad.any():
                i = bad.idxmax()
                out.append(f"{int(bad.sum())} {dim} label(s) outside the corpus scale, e.g. {df.at[i, 'id']}: "
                           f"{df.at[i, dim]} not in [{df.at[i, 'scale_min']}, {df.at[i, 'scale_max']}]")
        src = df["transcript_source"].dropna()
        bad_src = src[~src.astype(str).str.match(_TRANSCRIPT_SOURCE)]
        if len(bad_src):
            out.append(f"transcript_source must be 'oracle' or 'asr:<engine>', found {sorted(set(bad_src))[:3]}")
        seg = df["start"].notna() & df["end"].notna() & (df["end"] <= df["start"])
        if seg.any():
            out.append(f"{int(seg.sum())} segment(s) end before they start, e.g. {df['id'][seg].iloc[0]}")
        if check_audio:
            # a row without audio is a text-only utterance (with a transcript), not a problem
            missing = [(i, a) for i, a, t in zip(df["id"], df["audio"], df["transcript"])
                       if (a is None and t is None) or (a is not None and not os.path.isfile(str(a)))]
            if missing:
                shown = "; ".join(f"{i}: {a}" + (" (a broken symbolic link)" if a and os.path.islink(str(a)) else "")
                                  for i, a in missing[:5])
                out.append(f"{len(missing)} audio file(s) do not exist, e.g. {shown}")
        return out

    def validate(self, *, check_audio: bool = True) -> "Manifest":
        """Raise :class:`ManifestError` listing every problem; return ``self`` when there is none."""
        probs = self.problems(check_audio=check_audio)
        if probs:
            raise ManifestError("invalid manifest:\n  - " + "\n  - ".join(probs))
        return self

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the manifest atomically as parquet, JSONL or CSV (by the file's suffix)."""
        p = Path(path)
        fmt = _format_of(p)
        with atomic_path(p) as tmp:
            if fmt == ".parquet":
                self.df.to_parquet(tmp, index=False)
            elif fmt == ".jsonl":
                self.df.to_json(tmp, orient="records", lines=True, force_ascii=False)
            else:
                self.df.to_csv(tmp, index=False)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Read a manifest written by :meth:`save` (or any table with its columns).

        Raises:
            ManifestError: the file is missing, of an unknown format, or unreadable.
        """
        p = Path(path)
        fmt = _format_of(p)
        if not p.is_file():
            raise ManifestError(f"{p}: manifest file does not exist")
        try:
            if fmt == ".parquet":
                df = pd.read_parquet(p)
            elif fmt == ".jsonl":
                df = pd.read_json(p, orient="records", lines=True, dtype=False)
            else:
                df = pd.read_csv(p, dtype={"id": str, "speaker": str, "session": str, "dialog": str,
                                           "category": str, "partition": str, "gender": str})
        except Exception as exc:  # pandas raises many types for a broken file
            raise ManifestError(f"{p}: cannot read manifest ({exc})") from None
        return cls(df, source=str(p))


def _format_of(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix == ".json":
        suffix = ".jsonl"
    if suffix not in FORMATS:
        raise ManifestError(f"{p}: unknown manifest format {p.suffix!r}; use one of {', '.join(FORMATS)}")
    return suffix
