"""``sermo synth``: write the built-in corpus in the real IEMOCAP or MSP-Podcast layout.

The files are exactly the real corpora's formats, so the real loaders read them; beside
them ``ground_truth.parquet`` holds the latent values and ``SERMO_SYNTH.json`` the
parameters (written last: its presence means the corpus is complete). The same seed and
size give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sermo.data.io import atomic_path, write_text_atomic
from sermo.data.synth.annotate import Annotation, annotate, rater_biases
from sermo.data.synth.emotions import code_of
from sermo.data.synth.plan import Utterance, plan_corpus
from sermo.data.synth.render import render_all

MARKER = "SERMO_SYNTH.json"
PARTIAL = ".sermo-synth-partial"
GROUND_TRUTH = "ground_truth.parquet"
DEFAULT_SIZE = {"iemocap": 1000, "msp-podcast": 1000}
SYNTH_VERSION = 1


class SynthError(ValueError):
    """The output folder cannot take the corpus; the message says why."""


@dataclass(frozen=True)
class SynthResult:
    """What :func:`synthesize_corpus` made."""

    root: Path
    layout: str
    utterances: int
    hours: float
    reused: bool


def synthesize_corpus(layout: str, out: str | Path, *, utterances: int | None = None, seed: int = 0,
                      incongruent_share: float = 0.15, workers: int | None = None,
                      progress: bool = True) -> SynthResult:
    """Write a synthetic corpus to ``out`` (reused as is when the same one is already there).

    Args:
        layout: ``iemocap`` or ``msp-podcast``.
        out: the corpus root (``IEMOCAP_full_release``-like or MSP-Podcast-like folder).
        utterances: corpus size (default 1,000).
        seed: random seed; everything follows from it.
        incongruent_share: share of utterances whose words disagree with their emotion.
        workers: synthesis processes (default: all cores).
        progress: show a progress bar.

    Raises:
        SynthError: ``out`` holds other files, or a different sermo corpus.
    """
    n = int(utterances or DEFAULT_SIZE.get(layout, 1000))
    root = Path(out)
    params = {"layout": layout, "utterances": n, "seed": int(seed),
              "incongruent_share": float(incongruent_share), "version": SYNTH_VERSION}
    marker = root / MARKER
    if root.exists() and not root.is_dir():
        raise SynthError(f"{root} is a file; give a new or empty folder for the corpus")
    if marker.is_file():
        existing = json.loads(marker.read_text())
        if {k: existing.get(k) for k in params} == params:
            return SynthResult(root, layout, n, existing.get("hours", float("nan")), reused=True)
        raise SynthError(f"{root} already holds a different sermo corpus ({existing}); choose another --out")
    if root.exists() and any(root.iterdir()) and not (root / PARTIAL).exists():
        raise SynthError(f"{root} is not empty; sermo synth writes only into a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    (root / PARTIAL).write_text("sermo synth in progress; rerun the same command to finish\n")

    utts = plan_corpus(layout, n, seed, incongruent_share)
    durations = render_all(utts, seed, root, workers=workers, progress=progress)
    biases = rater_biases(layout, seed)
    notes = [annotate(u, layout, seed, biases) for u in utts]
    if layout == "iemocap":
        _write_iemocap(root, utts, notes, durations, seed)
    else:
        _write_msp(root, utts, notes, seed)
    _write_ground_truth(root, layout, utts, notes, durations)
    hours = sum(durations.values()) / 3600
    write_text_atomic(root / "README.txt", _readme(layout, n, seed))
    write_text_atomic(marker, json.dumps({**params, "hours": round(hours, 4)}, indent=2) + "\n")
    (root / PARTIAL).unlink()
    return SynthResult(root, layout, n, hours, reused=False)


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _write_iemocap(root: Path, utts: list[Utterance], notes: list[Annotation], durations: dict, seed: int) -> None:
    rng = np.random.default_rng([seed, 40_004])
    dialogs: dict[str, list[int]] = {}
    for i, u in enumerate(utts):
        dialogs.setdefault(u.group, []).append(i)
    for dialog, members in dialogs.items():
        session = f"Session{int(dialog[3:5])}"
        t = float(rng.uniform(1.0, 5.0))
        evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        words = []
        for i in members:
            u, note = utts[i], notes[i]
            start, end = t, t + durations[u.id]
            t = end + float(rng.uniform(0.1, 1.2))
            utts[i].extra.update(dialog_start=round(start, 4), dialog_end=round(end, 4))
            evaluation.append(f"[{_fmt(start)} - {_fmt(end)}]\t{u.id}\t{note.code}\t"
                              f"[{_fmt(note.valence)}, {_fmt(note.arousal)}, {_fmt(note.dominance)}]")
            for r in note.ratings:
                cats = "; ".join(c.iemocap_word for c in r.categories)
                evaluation.append(f"C-{r.rater}:\t{cats};\t()")
            for r in note.ratings:
                evaluation.append(f"A-{r.rater}:\tval {r.valence}; act {r.arousal}; dom  {r.dominance};\t()")
            evaluation.append("")
            words.append(f"{u.id} [{start:08.4f}-{end:08.4f}]: {u.text}")
            if rng.random() < 0.04:  # real transcription files hold lines that are not utterances
                words.append(f"{dialog}_{u.speaker.gender}XX0 [{end:08.4f}-{end + 0.3:08.4f}]: [BREATHING]")
        write_text_atomic(root / session / "dialog" / "EmoEvaluation" / f"{dialog}.txt", "\n".join(evaluation) + "\n")
        write_text_atomic(root / session / "dialog" / "transcriptions" / f"{dialog}.txt", "\n".join(words) + "\n")


def _write_msp(root: Path, utts: list[Utterance], notes: list[Annotation], seed: int) -> None:
    rng = np.random.default_rng([seed, 50_005])
    consensus, detailed = [], []
    for u, note in zip(utts, notes):
        unknown = u.partition == "Train" and rng.random() < 0.05
        u.extra["speaker_unknown"] = bool(unknown)
        consensus.append({
            "FileName": f"{u.id}.wav", "EmoClass": note.code, "EmoAct": round(note.arousal, 4),
            "EmoVal": round(note.valence, 4), "EmoDom": round(note.dominance, 4),
            "SpkrID": "Unknown" if unknown else u.speaker.id,
            "Gender": "Unknown" if unknown else ("Female" if u.speaker.gender == "F" else "Male"),
            "Split_Set": u.partition,
        })
        for r in note.ratings:
            detailed.append({"FileName": f"{u.id}.wav", "WorkerID": r.rater,
                             "EmoClass": code_of(r.categories[0], "msp-podcast"),
                             "EmoAct": r.arousal, "EmoVal": r.valence, "EmoDom": r.dominance})
        write_text_atomic(root / "Transcripts" / f"{u.id}.txt", u.text + "\n")
    for name, rows in (("labels_consensus.csv", consensus), ("labels_detailed.csv", detailed)):
        with atomic_path(root / "Labels" / name) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)


def _write_ground_truth(root: Path, layout: str, utts: list[Utterance], notes: list[Annotation],
                        durations: dict) -> None:
    rows = [{
        "id": u.id, "speaker": u.speaker.id, "gender": u.speaker.gender, "voice": u.speaker.voice,
        "group": u.group, "partition": u.partition, "emotion": u.emotion.name,
        "code": code_of(u.emotion, layout), "consensus_code": note.code,
        "latent_valence": u.latent[0], "latent_arousal": u.latent[1], "latent_dominance": u.latent[2],
        "incongruent": u.incongruent or "", "text": u.text, "rate": u.prosody.rate, "pitch": u.prosody.pitch,
        "pitch_range": u.prosody.pitch_range, "word_gap": u.prosody.word_gap, "gain_db": u.gain_db,
        "snr_db": u.snr_db, "duration": durations[u.id],
    } for u, note in zip(utts, notes)]
    with atomic_path(root / GROUND_TRUTH) as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)


def _readme(layout: str, n: int, seed: int) -> str:
    return (f"Synthetic emotional speech corpus written by `sermo synth` in the {layout} layout\n"
            f"({n} utterances, seed {seed}). Speech from espeak-ng; labels from simulated annotators.\n"
            "It is not IEMOCAP or MSP-Podcast and its numbers say nothing about them.\n"
            f"{GROUND_TRUTH} holds each utterance's latent emotion, valence, arousal and dominance.\n")
