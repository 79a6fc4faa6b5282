"""Voice-activity segmentation of long recordings, streamed so memory does not grow with the file:
:class:`Segmenter` cuts a recording and hands its segments to any predictor (the torch
:class:`~sermo.serving.predictor.Predictor` or an exported model's
:class:`~sermo.serving.runtime.OnnxPredictor`).

The file is read in blocks, resampled to 16 kHz as a stream (soxr), and cut by webrtcvad on
30 ms frames into speech segments: voiced runs, closed after ``min_pause`` seconds of
silence, at most ``max_seconds`` long (a longer run is cut), each padded by ``pad`` seconds
of context. Only the current segment and one block are ever held.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from sermo.data.audio import SAMPLE_RATE, AudioError, stream_audio

if TYPE_CHECKING:
    from sermo.serving.core import BasePredictor, Prediction

FRAME = 480  # 30 ms at 16 kHz, one of webrtcvad's frame sizes


def speech_segments(path: str | Path, *, max_seconds: float = 10.0, min_seconds: float = 0.5,
                    min_pause: float = 0.3, pad: float = 0.15, aggressiveness: int = 2
                    ) -> Iterator[tuple[float, float, np.ndarray]]:
    """``(start s, end s, 16 kHz samples)`` of each speech segment of a recording, in order.

    Raises:
        AudioError: the file is not readable audio.
    """
    from sermo.data.vad import pkg_resources_shim

    pkg_resources_shim()  # webrtcvad imports pkg_resources
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    max_frames = max(1, int(max_seconds * SAMPLE_RATE / FRAME))
    pause_frames = max(1, int(min_pause * SAMPLE_RATE / FRAME))
    pad_frames = int(pad * SAMPLE_RATE / FRAME)
    before: deque = deque(maxlen=pad_frames)  # the unvoiced frames before a segment (context)
    seg: list[np.ndarray] = []
    seg_start = 0
    silent = 0
    index = 0  # frame index in the recording
    rest = np.zeros(0, dtype=np.float32)

    def emit(frames: list[np.ndarray], start: int):
        samples = np.concatenate(frames)
        if len(samples) >= min_seconds * SAMPLE_RATE:
            yield start * FRAME / SAMPLE_RATE, (start * FRAME + len(samples)) / SAMPLE_RATE, samples

    for block in stream_audio(path):
        x = np.concatenate([rest, block])
        usable = len(x) // FRAME * FRAME
        rest = x[usable:]
        for k in range(0, usable, FRAME):
            frame = x[k:k + FRAME]
            pcm = (np.clip(frame, -1, 1) * 32767).astype("<i2").tobytes()
            voiced = vad.is_speech(pcm, SAMPLE_RATE)
            if seg:
                seg.append(frame)
                silent = 0 if voiced else silent + 1
                if silent >= pause_frames or len(seg) >= max_frames:
                    # end of the utterance: drop trailing silence beyond the padding
                    keep = len(seg) - max(0, silent - pad_frames)
                    yield from emit(seg[:keep], seg_start)
                    seg, silent = [], 0
                    before.clear()
            elif voiced:
                seg = list(before) + [frame]
                seg_start = index - len(before)
                silent = 0
            else:
                before.append(frame)
            index += 1
    if seg:
        keep = len(seg) - max(0, silent - pad_frames)
        yield from emit(seg[:keep], seg_start)
    if index == 0:
        raise AudioError(path, "has no samples (0 s of audio)")


@dataclass
class Segmented:
    """A long recording's predictions.

    Attributes:
        segments: one :class:`~sermo.serving.core.Prediction` per speech segment, with its
            ``start`` and ``end`` in seconds.
        summary: duration-weighted means of the dimensions and category probabilities over the
            segments, the dominant category, the number of segments and the speech seconds.
    """

    segments: list["Prediction"]
    summary: dict


class Segmenter:
    """Cuts long recordings into speech segments by voice activity (webrtcvad), streamed so memory
    stays bounded by a segment, not the file; composes with any predictor.

    >>> Segmenter(max_seconds=8).predict_file(predictor, "meeting.flac").summary  # doctest: +SKIP

    Args:
        max_seconds: the longest segment (a longer voiced run is cut).
        min_seconds: shorter segments are left out.
        min_pause: seconds of silence that close a segment.
        pad: seconds of context kept around each segment.
        aggressiveness: webrtcvad's 0 (keeps most) to 3 (keeps least).
        batch_size: segments per model call.
    """

    def __init__(self, max_seconds: float = 10.0, *, min_seconds: float = 0.5, min_pause: float = 0.3,
                 pad: float = 0.15, aggressiveness: int = 2, batch_size: int = 8):
        if max_seconds <= 0 or not 0 <= aggressiveness <= 3 or batch_size < 1:
            raise ValueError("Segmenter needs max_seconds > 0, aggressiveness 0-3 and batch_size >= 1")
        self.max_seconds, self.min_seconds, self.min_pause, self.pad = max_seconds, min_seconds, min_pause, pad
        self.aggressiveness, self.batch_size = aggressiveness, batch_size

    def segments(self, path: str | Path) -> Iterator[tuple[float, float, np.ndarray]]:
        """``(start s, end s, 16 kHz samples)`` of each speech segment of a recording, in order.

        Raises:
            AudioError: the file is not readable audio.
        """
        return speech_segments(path, max_seconds=self.max_seconds, min_seconds=self.min_seconds,
                               min_pause=self.min_pause, pad=self.pad, aggressiveness=self.aggressiveness)

    def predict_file(self, predictor: "BasePredictor", path: str | Path) -> Segmented:
        """Each speech segment of a recording through ``predictor``, and their summary.

        Raises:
            AudioError: the file is not readable audio.
        """
        from sermo.serving.core import summarise

        preds: list = []
        pending: list[tuple[float, float, np.ndarray]] = []
        for seg in self.segments(path):
            pending.append(seg)
            if len(pending) == self.batch_size:
                preds += predictor.predict_segments(str(path), pending, batch_size=self.batch_size)
                pending = []
        if pending:
            preds += predictor.predict_segments(str(path), pending, batch_size=self.batch_size)
        return Segmented(preds, summarise(preds))
