"""What every sermo predictor shares, without torch: the :class:`Prediction` type, one method per
input kind (:class:`BasePredictor`: ``predict_signal``, ``predict_file``, ``predict_files``,
``predict_folder``, each with one return type), windows for audio longer than a model reads at
once, and the duration-weighted means that join windows and segments.

The torch :class:`~sermo.serving.predictor.Predictor` and the exported-model runtime
(:mod:`sermo.serving.runtime`) implement one method, ``_run`` (model outputs for a list of 16 kHz
waveforms); everything else here is theirs alike, so both answer the same inputs the same way.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sermo.data.audio import SAMPLE_RATE, AudioError, load_audio, prepare_waveform


class ExportError(ValueError):
    """A bundle sermo cannot export, an output folder it will not write into, or an exported
    folder the runtime cannot read (the message names it and what to do)."""


@dataclass
class Prediction:
    """Emotion predicted for one input (a file, an array, or a segment of a recording).

    Attributes:
        source: the file path, ``signal`` for an array (``array[i]`` in the old ``predict``).
        arousal, valence, dominance: on ``scale`` (``None`` when the model predicts no dimensions);
            a model output beyond the scale is clipped to its ends.
        scale: ``(min, max)`` of the label scale the model was trained on (the corpus's).
        categories: class -> probability (``None`` when the model predicts no categories).
        category: the most probable class.
        modalities: what the model read (``audio``, ``text``).
        transcript: the transcript used (``None`` for audio-only models).
        transcript_source: ``given`` or ``asr:<engine>`` (``None`` for audio-only models).
        start, end: seconds within the recording for segments (``None`` for whole inputs).
        duration: seconds of audio.
        windows: the windows the audio was read in: audio longer than the model reads at once
            (its ``max_frames``) is cut into equal windows, predicted each, and their outputs
            averaged weighted by duration (1: read whole).
    """

    source: str
    arousal: float | None = None
    valence: float | None = None
    dominance: float | None = None
    scale: tuple[float, float] | None = None
    categories: dict[str, float] | None = None
    category: str | None = None
    modalities: list[str] = field(default_factory=list)
    transcript: str | None = None
    transcript_source: str | None = None
    start: float | None = None
    end: float | None = None
    duration: float = 0.0
    windows: int = 1

    def to_dict(self) -> dict:
        """JSON-ready form."""
        d = asdict(self)
        d["scale"] = list(self.scale) if self.scale else None
        return d

    def flat(self) -> dict:
        """One flat row (categories as ``p_<class>`` columns) for tables and CSV."""
        d = self.to_dict()
        cats = d.pop("categories") or {}
        d["scale"] = f"{self.scale[0]:g}-{self.scale[1]:g}" if self.scale else None
        d["modalities"] = "+".join(self.modalities)
        d.update({f"p_{k}": v for k, v in cats.items()})
        return d


MIN_SECONDS = 0.25
"""The shortest audio a prediction is made for: below it there is no utterance to judge."""


def check_duration(source: str, wave: np.ndarray) -> None:
    """Raise :class:`AudioError` for audio shorter than :data:`MIN_SECONDS`."""
    if len(wave) < MIN_SECONDS * SAMPLE_RATE:
        raise AudioError(source, f"is {len(wave) / SAMPLE_RATE:.3f} s long; a prediction needs at least "
                                 f"{MIN_SECONDS:g} s of audio")


def combine(results: list[dict], weights) -> dict:
    """The outputs of a recording's windows as one: dimensions and category probabilities
    averaged weighted by the windows' lengths."""
    if len(results) == 1:
        return results[0]
    w = np.asarray(weights, dtype=float)
    out: dict = {}
    for d in ("arousal", "valence", "dominance"):
        if d in results[0]:
            out[d] = float(np.average([r[d] for r in results], weights=w))
    if "categories" in results[0]:
        classes = list(results[0]["categories"])
        probs = np.average([[r["categories"][c] for c in classes] for r in results], axis=0, weights=w)
        out["categories"] = {c: float(v) for c, v in zip(classes, probs)}
        out["category"] = classes[int(np.argmax(probs))]
    return out


def summarise(preds: list[Prediction]) -> dict:
    """Duration-weighted means over segments, the dominant category, counts."""
    if not preds:
        return {"segments": 0, "speech_seconds": 0.0}
    out: dict = {"segments": len(preds), "speech_seconds": round(float(sum(p.duration for p in preds)), 2)}
    fields = ("arousal", "valence", "dominance", "categories", "category")
    outputs = [{k: getattr(p, k) for k in fields if getattr(p, k) is not None} for p in preds]
    out.update(combine(outputs, [p.duration for p in preds]))
    out["scale"] = list(preds[0].scale) if preds[0].scale else None
    return out


def outputs_to_result(dims: np.ndarray | None, probs: np.ndarray | None, scale: tuple[float, float] | None,
                      classes: Sequence[str]) -> dict:
    """One window's model outputs as a result: A/V/D from [0, 1] to ``scale`` (clipped: never off
    the stated scale), class probabilities by name and the most probable class."""
    r: dict = {}
    if dims is not None and len(dims) == 3:
        lo, hi = scale or (0.0, 1.0)
        r.update(zip(("arousal", "valence", "dominance"),
                     (float(lo + float(v) * (hi - lo)) for v in np.clip(dims, 0.0, 1.0))))
    if probs is not None:
        r["categories"] = {c: float(v) for c, v in zip(classes, probs)}
        r["category"] = classes[int(np.argmax(probs))]
    return r


class BasePredictor:
    """A trained model's predictions, one method per kind of input (as audinterface's
    ``process_signal`` / ``process_file`` / ``process_files`` / ``process_folder``), each with one
    return type. Long recordings go through a :class:`~sermo.serving.segment.Segmenter`.

    A subclass sets ``scale``, ``modalities`` and ``window_seconds`` and implements
    ``_run(waves, transcripts) -> (results, transcripts used)``.
    """

    scale: tuple[float, float] | None = None
    modalities: list[str]

    @property
    def window_seconds(self) -> float | None:  # pragma: no cover - every predictor defines it
        raise NotImplementedError

    def _run(self, waves: list[np.ndarray], transcripts: list[str | None]) -> tuple[list[dict], list[tuple]]:
        raise NotImplementedError  # pragma: no cover

    # -- one method per input kind ----------------------------------------------------------

    def predict_signal(self, signal: np.ndarray, sampling_rate: int, transcript: str | None = None, *,
                       source: str = "signal") -> Prediction:
        """Emotion for an in-memory signal (``(samples,)`` or ``(samples, channels)`` at
        ``sampling_rate``; resampled to 16 kHz mono).

        Raises:
            AudioError: an empty, non-finite or too short signal (named ``source``).
        """
        wave = prepare_waveform(np.asarray(signal), int(sampling_rate), name=source)
        check_duration(source, wave)
        return self._predictions([source], [wave], [_given(transcript)])[0]

    def predict_file(self, path: str | Path, transcript: str | None = None) -> Prediction:
        """Emotion for one audio file (read whole; see :class:`~sermo.serving.segment.Segmenter`
        for long recordings).

        Raises:
            AudioError: the file is unreadable, empty or too short (the message names it).
        """
        wave = load_audio(path)
        check_duration(str(path), wave)
        return self._predictions([str(path)], [wave], [_given(transcript)])[0]

    def predict_files(self, paths: Sequence[str | Path], transcripts: Sequence[str | None] | None = None, *,
                      batch_size: int = 8, skip_errors: bool = False) -> list[Prediction]:
        """Emotion for several files, in their order, ``batch_size`` per model call.

        Args:
            transcripts: one per file (``None`` or blank: transcribed, for models that read text).
            skip_errors: a file that cannot be read is reported (a warning naming it and the
                problem) and left out instead of raising.

        Raises:
            AudioError: a file that cannot be read (unless ``skip_errors``).
        """
        texts = list(transcripts) if transcripts is not None else [None] * len(paths)
        if len(texts) != len(paths):
            raise ValueError(f"{len(texts)} transcripts for {len(paths)} files")
        out: list[Prediction] = []
        sources: list[str] = []
        waves: list[np.ndarray] = []
        given: list[str | None] = []
        for k, (path, text) in enumerate(zip(paths, texts)):
            try:
                wave = load_audio(path)
                check_duration(str(path), wave)
                sources.append(str(path))
                waves.append(wave)
                given.append(_given(text))
            except AudioError as exc:
                if not skip_errors:
                    raise
                warnings.warn(f"skipped {exc}", stacklevel=2)
            if len(sources) == batch_size or (k == len(paths) - 1 and sources):  # memory: one batch of audio
                out += self._predictions(sources, waves, given, batch_size=batch_size)
                sources, waves, given = [], [], []
        return out

    def predict_folder(self, folder: str | Path, *, batch_size: int = 8, skip_errors: bool = True) -> list[Prediction]:
        """Emotion for every audio file in a folder (recursively, sorted); a file that cannot be
        read is reported and left out (``skip_errors``).

        Raises:
            AudioError: ``folder`` is not a folder.
        """
        from sermo.serving.files import audio_files

        if not Path(folder).is_dir():
            raise AudioError(folder, "is not a folder")
        return self.predict_files(audio_files([str(folder)]), batch_size=batch_size, skip_errors=skip_errors)

    def predict_segments(self, source: str, segments: Sequence[tuple[float, float, np.ndarray]], *,
                         batch_size: int = 8) -> list[Prediction]:
        """Emotion for segments ``(start s, end s, 16 kHz samples)`` of one recording (what a
        :class:`~sermo.serving.segment.Segmenter` hands over)."""
        return self._predictions([source] * len(segments), [w for _, _, w in segments], [None] * len(segments),
                                 spans=[(round(s, 3), round(e, 3)) for s, e, _ in segments], batch_size=batch_size)

    # -- shared machinery -------------------------------------------------------------------

    def _windows(self, source: str, wave: np.ndarray, transcript: str | None) -> list[np.ndarray]:
        """``wave`` in equal windows the model reads whole (one when it fits)."""
        limit = self.window_seconds
        if limit is None or len(wave) <= limit * SAMPLE_RATE:
            return [wave]
        if transcript is not None:
            raise AudioError(source, f"{len(wave) / SAMPLE_RATE:.1f} s of audio is longer than the {limit:g} s the "
                                     "model reads at once, and one transcript cannot be split across windows: leave "
                                     "the transcript out (each window is transcribed) or cut the audio (sermo predict "
                                     "--segment)")
        return list(np.array_split(wave, int(np.ceil(len(wave) / (limit * SAMPLE_RATE)))))

    def _predictions(self, sources: list[str], waves: list[np.ndarray], texts: list[str | None], spans=None,
                     batch_size: int = 8) -> list[Prediction]:
        """Predictions for whole inputs: each cut into windows, the windows run ``batch_size`` at
        a time, their outputs joined per input."""
        pieces = [(j, x) for j, (src, w, t) in enumerate(zip(sources, waves, texts)) for x in self._windows(src, w, t)]
        results: list[dict] = []
        used: list[tuple] = []
        for k in range(0, len(pieces), batch_size):
            part = pieces[k:k + batch_size]
            r, u = self._run([x for _, x in part], [texts[j] for j, _ in part])
            results += r
            used += u
        out = []
        for j, (src, w) in enumerate(zip(sources, waves)):
            mine = [i for i, (owner, _) in enumerate(pieces) if owner == j]
            joined = combine([results[i] for i in mine], [len(pieces[i][1]) for i in mine])
            words = [used[i][0] for i in mine if used[i][0]]
            start, end = spans[j] if spans else (None, None)
            out.append(Prediction(source=src, scale=self.scale, modalities=list(self.modalities),
                                  transcript=" ".join(words) if words else used[mine[0]][0],
                                  transcript_source=used[mine[0]][1], start=start, end=end,
                                  duration=len(w) / SAMPLE_RATE, windows=len(mine), **joined))
        return out


def _given(transcript: str | None) -> str | None:
    """A transcript as given, or ``None`` when missing or blank (then transcribed)."""
    return transcript if isinstance(transcript, str) and transcript.strip() else None
