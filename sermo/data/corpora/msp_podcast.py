"""MSP-Podcast: the only code in sermo that knows its layout.

Layout read::

    Audios/<FileName>                 (older releases: Audio/, possibly nested)
    Labels/labels_consensus.csv       (older releases spell it labels_concensus.csv)
    Labels/labels_detailed.csv        (optional: one row per annotator)
    Partitions.txt                    (older releases: the split of each file)
    Transcripts/<id>.txt              (where present)

``labels_consensus.csv`` has the columns FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID,
Gender, Split_Set. EmoClass codes are A S H U F D C N O X; SpkrID may be ``Unknown``, which
becomes a missing speaker. Split_Set is one of Train, Development, Test1, Test2, Test3;
where the label file has no Split_Set column the splits come from ``Partitions.txt``
(lines ``Train; MSP-PODCAST_0001_0008.wav``; either order of the two fields is accepted).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from sermo.data.audio import AudioError, audio_info
from sermo.data.manifest import Manifest

SCALE = (1.0, 7.0)
SPLITS = ("Train", "Development", "Test1", "Test2", "Test3")
LABEL_FILES = ("labels_consensus.csv", "labels_concensus.csv")
_EPISODE = re.compile(r"^(?P<podcast>.+?)_(?P<segment>\d+)$")
_GENDER = {"male": "male", "m": "male", "female": "female", "f": "female"}


class MspLayoutError(ValueError):
    """The folder does not look like an MSP-Podcast release; the message says what is missing."""


def prepare_msp_podcast(root: str | Path) -> Manifest:
    """Read an MSP-Podcast release folder into a manifest.

    Returns:
        A manifest with corpus ``msp-podcast``, speakers ``msp_<SpkrID>`` (missing where the
        label file says ``Unknown``), the podcast as ``dialog`` with segments in order as
        ``turn_index``, ``partition`` from Split_Set or Partitions.txt, V/A/D on the 1-7 scale,
        the EmoClass code, transcripts where ``Transcripts/`` has them, and the per-annotator
        ratings of ``labels_detailed.csv`` when it exists.

    Raises:
        MspLayoutError: no label file, or it lacks a required column.
    """
    root = Path(root)
    labels_path = next((root / "Labels" / n for n in LABEL_FILES if (root / "Labels" / n).is_file()), None)
    if labels_path is None:
        raise MspLayoutError(f"{root}: no Labels/labels_consensus.csv (or labels_concensus.csv); "
                             "point sermo at the MSP-Podcast release folder")
    try:
        # every cell as written: only an empty one is missing ('n/a', 'NA' in a label are reported)
        labels = pd.read_csv(labels_path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise MspLayoutError(f"{labels_path}: cannot be read as a CSV table ({str(exc).strip().splitlines()[-1]})") from None
    labels.columns = [c.strip() for c in labels.columns]
    required = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom"]
    lacking = [c for c in required if c not in labels.columns]
    if lacking:
        raise MspLayoutError(f"{labels_path}: missing column(s) {lacking}; found {list(labels.columns)}")
    problems: list[str] = []
    splits = _splits(root, labels, labels_path, problems)
    audio_index = _audio_index(root)
    detailed = _detailed_ratings(root / "Labels" / "labels_detailed.csv", problems)

    rows = []
    for line, rec in enumerate(labels.to_dict("records"), start=2):  # line 1 is the header
        num = _reader(labels_path, line, problems)
        name = str(rec["FileName"]).strip()
        utt = name[:-4] if name.lower().endswith(".wav") else name
        wav = audio_index.get(name) or audio_index.get(f"{utt}.wav") or (root / "Audios" / f"{utt}.wav")
        try:
            duration = audio_info(wav).duration
        except AudioError as exc:
            duration = float("nan")
            if Path(wav).is_file() or Path(wav).is_symlink():  # a missing file is reported by Manifest.problems()
                problems.append(f"{exc}; utterance {utt} has no usable audio")
        spk = str(rec.get("SpkrID", "") or "").strip()
        ep = _EPISODE.match(utt)
        text_file = root / "Transcripts" / f"{utt}.txt"
        text = _read_text(text_file, problems) if text_file.is_file() else None
        rows.append({
            "id": utt,
            "corpus": "msp-podcast",
            "audio": str(Path(wav).resolve()),
            "duration": duration,
            "speaker": None if spk in ("", "Unknown", "nan") else f"msp_{spk}",
            "gender": _GENDER.get(str(rec.get("Gender", "")).strip().lower()),
            "dialog": ep["podcast"] if ep else None,
            "_segment": int(ep["segment"]) if ep else 0,
            "transcript": text,
            "transcript_source": "oracle" if text is not None else None,
            "partition": splits.get(name) or splits.get(utt),
            "arousal": num(rec, "EmoAct"),
            "valence": num(rec, "EmoVal"),
            "dominance": num(rec, "EmoDom"),
            "category": str(rec["EmoClass"]).strip() if pd.notna(rec["EmoClass"]) else None,
            "scale_min": SCALE[0],
            "scale_max": SCALE[1],
            "ratings": json.dumps(detailed.get(utt, []), ensure_ascii=False),
        })
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["dialog", "_segment", "id"], na_position="last", kind="stable")
        df["turn_index"] = df.groupby("dialog", dropna=False).cumcount()
        df = df.drop(columns="_segment").sort_index()
    return Manifest(df, problems)


def _reader(path: Path, line: int, problems: list[str]):
    """A reader of a label file row's numeric fields: empty is missing; anything else that is not a
    finite number is missing and reported with the file and line."""

    def num(rec: dict, column: str) -> float:
        x = rec.get(column)
        if x is None or (isinstance(x, float) and np.isnan(x)) or (isinstance(x, str) and not x.strip()):
            return float("nan")
        try:
            v = float(x)
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v):
            problems.append(f"{path} line {line}: {column} {x!r} is not a number (counted as missing)")
        return v if np.isfinite(v) else float("nan")

    return num


def _read_text(path: Path, problems: list[str]) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({exc.strerror or exc}); the utterance has no transcript")
        return None


def _splits(root: Path, labels: pd.DataFrame, labels_path: Path, problems: list[str]) -> dict[str, str]:
    if "Split_Set" in labels.columns:
        return {str(f).strip(): str(s).strip() for f, s in zip(labels["FileName"], labels["Split_Set"]) if pd.notna(s)}
    part = root / "Partitions.txt"
    if not part.is_file():
        raise MspLayoutError(f"{labels_path} has no Split_Set column and {part} does not exist; "
                             "one of them must give the partitions")
    out: dict[str, str] = {}
    for number, line in enumerate(part.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = [f.strip() for f in re.split(r"[;,\t]", line) if f.strip()]
        if not fields:
            continue
        if len(fields) != 2:
            problems.append(f"{part} line {number}: expected 'Split; FileName', got {line.strip()!r}")
            continue
        a, b = fields
        split, name = (a, b) if b.lower().endswith(".wav") or a in SPLITS else (b, a)
        out[name] = split
    return out


def _audio_index(root: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for folder in ("Audios", "Audio"):
        base = root / folder
        if base.is_dir():
            for p in base.rglob("*.wav"):
                index.setdefault(p.name, p)
    return index


def _detailed_ratings(path: Path, problems: list[str]) -> dict[str, list[dict]]:
    if not path.is_file():
        return {}
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        problems.append(f"{path}: cannot be read ({str(exc).strip().splitlines()[-1]}); no per-annotator ratings")
        return {}
    df.columns = [c.strip() for c in df.columns]
    worker = next((c for c in df.columns if "worker" in c.lower() or "annotator" in c.lower()), None)
    out: dict[str, list[dict]] = {}
    for line, rec in enumerate(df.to_dict("records"), start=2):
        name = str(rec.get("FileName", "")).strip()
        utt = name[:-4] if name.lower().endswith(".wav") else name
        num = _reader(path, line, problems)
        values = {d: num(rec, c) for d, c in (("arousal", "EmoAct"), ("valence", "EmoVal"), ("dominance", "EmoDom"))}
        out.setdefault(utt, []).append({
            "rater": rec.get(worker) if worker else None,
            "category": rec.get("EmoClass"),
            **{d: None if np.isnan(v) else v for d, v in values.items()},  # ratings are JSON: no NaN there
        })
    return out
