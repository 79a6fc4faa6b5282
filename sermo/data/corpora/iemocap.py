"""IEMOCAP (``IEMOCAP_full_release/``): the only code in sermo that knows its layout.

Layout read::

    Session{1..5}/sentences/wav/<dialog>/<utt>.wav
    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt
    Session{1..5}/dialog/transcriptions/<dialog>.txt

An EmoEvaluation block starts with a tab-separated line
``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`` (note the
order: valence, activation, dominance) followed by per-evaluator lines such as
``C-E2:<TAB>Neutral;<TAB>()`` (categorical) and ``A-E3:<TAB>val 3; act 2; dom  2;<TAB>()``
(dimensional). All of them are kept in ``ratings``. Transcription lines read
``Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.``; lines that are not utterances of the
EmoEvaluation file are ignored, and utterances missing from it get no transcript.

Nothing is lost silently: an utterance line that cannot be parsed exactly (a ``;`` among the
V/A/D values, ``-`` for a value, a malformed time) is left out and reported with its file and
line (its evaluator lines are not attached to another utterance); an EmoEvaluation or
transcription file that is missing or unreadable is reported with what it costs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from sermo.data.audio import AudioError, audio_info
from sermo.data.manifest import Manifest

SCALE = (1.0, 5.0)
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_TURN = re.compile(
    rf"^\[\s*(?P<start>{_NUM})\s*-\s*(?P<end>{_NUM})\s*\]\s+(?P<id>\S+)\s+(?P<cat>\S+)\s+"
    rf"\[\s*(?P<v>{_NUM})\s*,\s*(?P<a>{_NUM})\s*,\s*(?P<d>{_NUM})\s*\]\s*$"
)
_TURN_LIKE = re.compile(r"^\[[^\]]*\]\s+(?P<id>\S+)")  # what an utterance line starts with
_EVAL = re.compile(r"^(?P<rater>[A-Z]-[A-Z]+\d*)\s*:\s*(?P<body>[^\t(]*)\t?\s*(?:\((?P<comment>.*)\))?\s*$")
_DIM = re.compile(rf"(val|act|dom)\s+({_NUM})")
_TRANSCRIPT = re.compile(r"^(?P<id>\S+)\s+\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]\s*:\s?(?P<text>.*)$")
_SUFFIX = re.compile(r"_(?P<gender>[FM])\d+$")
_SESSION = re.compile(r"^Ses(?P<n>\d+)")


class IemocapLayoutError(ValueError):
    """The folder does not look like IEMOCAP_full_release; the message says what is missing."""


def prepare_iemocap(root: str | Path) -> Manifest:
    """Read an IEMOCAP release folder into a manifest (one row per evaluated utterance).

    Args:
        root: the ``IEMOCAP_full_release`` folder (or a folder with the same layout).

    Returns:
        A manifest with corpus ``iemocap``, speakers ``Ses01_F`` ... ``Ses05_M``, sessions
        ``Ses01`` ... ``Ses05``, dialogs, turn indices, oracle transcripts, V/A/D on the 1-5
        scale, the category code and every evaluator's rating.

    Raises:
        IemocapLayoutError: no ``Session*/dialog/EmoEvaluation`` folder under ``root``.
    """
    root = Path(root)
    sessions = sorted(p for p in root.glob("Session*") if (p / "dialog" / "EmoEvaluation").is_dir())
    if not sessions:
        raise IemocapLayoutError(
            f"{root}: no Session*/dialog/EmoEvaluation/ folders; point sermo at IEMOCAP_full_release/"
        )
    rows: list[dict] = []
    problems: list[str] = []
    for session_dir in sessions:
        for eval_file in sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt")):
            dialog = eval_file.stem
            turns = parse_emo_evaluation(eval_file, problems)
            text_file = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
            words = parse_transcriptions(text_file, problems)
            if not text_file.is_file() and turns:
                problems.append(f"{text_file}: does not exist; the {len(turns)} utterance(s) of {dialog} have no "
                                "transcript")
            elif words is not None and turns:
                untold = [t["id"] for t in turns if t["id"] not in words]
                if untold:
                    problems.append(f"{text_file}: no line 'ID [start-end]: words' for {len(untold)} of the "
                                    f"{len(turns)} utterance(s) of {dialog} (e.g. {untold[0]}); they have no transcript")
            turns.sort(key=lambda t: (t["dialog_start"], t["id"]))
            for index, turn in enumerate(turns):
                rows.append(_row(session_dir, dialog, index, turn, (words or {}).get(turn["id"]), problems))
        # a dialog with audio but no EmoEvaluation file has no labels: its utterances are not in the manifest
        labelled = {p.stem for p in (session_dir / "dialog" / "EmoEvaluation").glob("*.txt")}
        for wav_dir in sorted(p for p in (session_dir / "sentences" / "wav").glob("*") if p.is_dir()):
            if wav_dir.name not in labelled:
                n = sum(1 for _ in wav_dir.glob("*.wav"))
                problems.append(f"{session_dir / 'dialog' / 'EmoEvaluation' / (wav_dir.name + '.txt')}: does not "
                                f"exist; the {n} wav file(s) of {wav_dir.name} have no labels and are left out")
    if not rows:
        raise IemocapLayoutError(f"{root}: no utterance could be read from its EmoEvaluation files ("
                                 + "; ".join(problems[:3] or ["they hold no utterance lines"]) + ")")
    df = pd.DataFrame(rows)
    return Manifest(df, problems)


def _row(session_dir: Path, dialog: str, turn_index: int, turn: dict, text: str | None,
         problems: list[str]) -> dict:
    utt = turn["id"]
    gender = _SUFFIX.search(utt)
    ses = _SESSION.match(utt)
    session = f"Ses{int(ses['n']):02d}" if ses else session_dir.name
    wav = session_dir / "sentences" / "wav" / dialog / f"{utt}.wav"
    try:
        duration = audio_info(wav).duration
    except AudioError as exc:
        duration = float("nan")  # the row is kept (its labels and transcript stay usable); its audio is reported
        link = _link_problem(wav)
        if link:
            problems.append(f"{wav}: {link}; utterance {utt} has no audio")
        elif wav.is_file():  # a missing file is reported by Manifest.problems()
            problems.append(f"{exc}; utterance {utt} has no usable audio")
    return {
        "id": utt,
        "corpus": "iemocap",
        "audio": _resolved(wav),
        "duration": duration,
        "speaker": f"{session}_{gender['gender']}" if gender else None,
        "gender": {"F": "female", "M": "male"}[gender["gender"]] if gender else None,
        "session": session,
        "dialog": dialog,
        "turn_index": turn_index,
        "dialog_start": turn["dialog_start"],
        "dialog_end": turn["dialog_end"],
        "transcript": text,
        "transcript_source": "oracle" if text is not None else None,
        "arousal": turn["arousal"],
        "valence": turn["valence"],
        "dominance": turn["dominance"],
        "category": turn["category"],
        "scale_min": SCALE[0],
        "scale_max": SCALE[1],
        "ratings": json.dumps(turn["ratings"], ensure_ascii=False),
    }


def _resolved(wav: Path) -> str:
    """The absolute path of an utterance's audio (a symbolic-link loop stays as it is named)."""
    try:
        return str(wav.resolve())
    except (RuntimeError, OSError):  # a loop of symbolic links: reported by _row
        return str(wav.absolute())


def _link_problem(wav: Path) -> str | None:
    """What is wrong with a symbolic link that leads to no file, or ``None``."""
    if not wav.is_symlink():
        return None
    try:
        wav.resolve(strict=True)
    except RuntimeError:
        return "a symbolic link loop"
    except OSError:
        return f"a broken symbolic link (to {wav.readlink()})"
    return None


def parse_emo_evaluation(path: str | Path, problems: list[str] | None = None) -> list[dict]:
    """Parse one EmoEvaluation file into turns with consensus labels and evaluator ratings.

    Args:
        path: the file.
        problems: where to report what cannot be parsed (``file line N: ...``); ``None``: raise.

    Returns:
        One dict per turn: ``id, dialog_start, dialog_end, category, valence, arousal,
        dominance, ratings`` where ``ratings`` is a list of
        ``{"rater": "C-E2", "categories": [...], "comment": ...}`` and
        ``{"rater": "A-E3", "valence": 3.0, "arousal": 2.0, "dominance": 2.0, "comment": ...}``.

    Raises:
        IemocapLayoutError: with ``problems=None``, the first problem.
    """
    def report(text: str) -> None:
        if problems is None:
            raise IemocapLayoutError(text)
        problems.append(text)

    turns: list[dict] = []
    current: dict | None = None
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        report(f"{path}: cannot be read ({exc.strerror or exc}); its utterances are missing")
        return []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        m = _TURN.match(line)
        if not m and _TURN_LIKE.match(line):
            like = _TURN_LIKE.match(line)
            assert like is not None
            report(f"{path} line {number}: utterance line of {like['id']} cannot be parsed ({line[:80]!r}); "
                   "the utterance is left out")
            current = None  # its evaluator lines belong to it, not to the utterance before
            continue
        if m:
            current = {
                "id": m["id"],
                "dialog_start": float(m["start"]),
                "dialog_end": float(m["end"]),
                "category": m["cat"],
                "valence": float(m["v"]),
                "arousal": float(m["a"]),
                "dominance": float(m["d"]),
                "ratings": [],
            }
            turns.append(current)
            continue
        e = _EVAL.match(raw.rstrip())
        if e and current is not None:
            current["ratings"].append(_rating(e["rater"], e["body"], e["comment"]))
    if not turns and any(x.strip() and not x.lstrip().startswith("%") for x in lines):
        report(f"{path}: no utterance line ([START - END] ID CATEGORY [V, A, D]) in it; is it an EmoEvaluation "
               "file? Its dialog's utterances are missing")
    return turns


def _rating(rater: str, body: str, comment: str | None) -> dict:
    rating: dict = {"rater": rater}
    dims = dict(_DIM.findall(body))
    if rater.startswith("A-") or dims:
        names = {"val": "valence", "act": "arousal", "dom": "dominance"}
        for short, name in names.items():
            rating[name] = float(dims[short]) if short in dims else None
    else:
        rating["categories"] = [c.strip() for c in body.split(";") if c.strip()]
    rating["comment"] = (comment or "").strip()
    return rating


def parse_transcriptions(path: str | Path, problems: list[str] | None = None) -> dict[str, str] | None:
    """Map utterance id -> words for one dialog's transcription file (missing file: empty; an
    unreadable one: ``None``, reported in ``problems``)."""
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        if problems is None:
            raise IemocapLayoutError(f"{p}: cannot be read ({exc.strerror or exc})") from None
        problems.append(f"{p}: cannot be read ({exc.strerror or exc}); its utterances have no transcript")
        return None
    out: dict[str, str] = {}
    for line in lines:
        m = _TRANSCRIPT.match(line.strip())
        if m:
            out[m["id"]] = m["text"].strip()
    return out
