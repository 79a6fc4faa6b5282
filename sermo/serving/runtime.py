"""Predictions from an exported model folder (``sermo export``), without torch: onnxruntime,
numpy, soundfile and soxr only (a test imports this module in a process without torch).

>>> from sermo.serving.runtime import OnnxPredictor  # doctest: +SKIP
>>> OnnxPredictor("exported/").predict_file("speech.wav").valence  # doctest: +SKIP

The runtime repeats what sermo's feature path does between the two graphs: Whisper's 30 s
windows joined, a speech SSL model's samples zero-padded to the quarter second its features were
computed on, the features rounded to their storage dtype and averaged over ``pool`` frames, the
model's frame cap. So its outputs equal the torch :class:`~sermo.serving.predictor.Predictor`'s
(a test holds them within 1e-4).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from sermo.data.audio import SAMPLE_RATE
from sermo.data.frames import bucket_length, pool_frames
from sermo.serving.core import BasePredictor, ExportError, outputs_to_result

WHISPER_WINDOW = 30 * SAMPLE_RATE
"""Samples of one Whisper window (its encoder reads at most 30 s at once)."""
WHISPER_HOP = 160


class OnnxPredictor(BasePredictor):
    """An exported model (a folder ``sermo export`` wrote) with the predictor's methods:
    ``predict_signal``, ``predict_file``, ``predict_files``, ``predict_folder`` (and
    :class:`~sermo.serving.segment.Segmenter` for long recordings).

    Args:
        folder: the exported folder (``encoder.onnx``, ``head.onnx``, ``sermo.json``).
        threads: onnxruntime's intra-op threads (0: its default).

    Raises:
        ExportError: a missing or unreadable part, or another format version.
    """

    def __init__(self, folder: str | Path, *, threads: int = 0):
        import onnxruntime as ort

        self.folder = Path(folder)
        meta_path = self.folder / "sermo.json"
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ExportError(f"{meta_path}: not a sermo export ({exc}); make one with `sermo export`") from None
        if self.meta.get("format") != 1:
            raise ExportError(f"{meta_path}: export format {self.meta.get('format')!r}; this runtime reads 1")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.encoder = ort.InferenceSession(str(self.folder / "encoder.onnx"), options,
                                                providers=["CPUExecutionProvider"])
            self.head = ort.InferenceSession(str(self.folder / "head.onnx"), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for missing or damaged graphs
            raise ExportError(f"{self.folder}: a graph cannot be loaded ({str(exc).splitlines()[0][:200]})") \
                from None
        enc = self.meta["encoder"]
        self.kind, self.dtype, self.pool = enc["kind"], np.dtype(enc["dtype"]), int(enc["pool"])
        self.padding = enc.get("padding")
        self.max_frames = int(self.meta["max_frames"])
        scale = self.meta.get("scale")
        self.scale = (float(scale[0]), float(scale[1])) if scale else None
        self.classes = list(self.meta["classes"])
        self.modalities = list(self.meta["modalities"])
        self.outputs = list(self.meta["outputs"])
        self.trained_on = dict(self.meta.get("trained_on") or {})
        self.caveat = self.meta.get("caveat")
        if self.caveat:
            warnings.warn(f"{self.folder}: {self.caveat}", stacklevel=2)

    @property
    def window_seconds(self) -> float | None:
        """The most audio the model reads at once (``None``: no limit)."""
        value = self.meta.get("window_seconds")
        return float(value) if value else None

    def features(self, wave: np.ndarray) -> np.ndarray:
        """``(layers, frames, dim)`` float32: the model's input for 16 kHz samples, as the feature
        store would hold and hand them over."""
        wave = np.asarray(wave, dtype=np.float32)
        if self.kind == "whisper":
            hidden = self._whisper(wave)
        elif self.kind == "ssl":
            padded = bucket_length(len(wave)) if self.padding == "bucket" else len(wave)
            x = np.zeros(padded, dtype=np.float32)
            x[: len(wave)] = wave
            hidden, frames = self.encoder.run(None, {"samples": x, "length": np.array([len(wave)], dtype=np.int64)})
            hidden = hidden[:, : int(frames[0])]
        else:
            hidden = self.encoder.run(None, {"samples": wave})[0][0][None]
        stored = np.asarray(hidden, dtype=np.float32).astype(self.dtype)
        return pool_frames(stored, self.pool)[:, : self.max_frames].astype(np.float32)

    def _whisper(self, wave: np.ndarray) -> np.ndarray:
        """Whisper's hidden states of every 30 s window, joined (a window shorter than one
        encoder frame left out; audio shorter than one frame padded to one)."""
        if len(wave) < 2 * WHISPER_HOP:
            wave = np.pad(wave, (0, 2 * WHISPER_HOP - len(wave)))
        parts = [self.encoder.run(None, {"samples": wave[i:i + WHISPER_WINDOW]})[0]
                 for i in range(0, len(wave), WHISPER_WINDOW) if len(wave[i:i + WHISPER_WINDOW]) >= 2 * WHISPER_HOP]
        return np.concatenate(parts, axis=1)

    def _run(self, waves: list[np.ndarray], transcripts: list[str | None]) -> tuple[list[dict], list[tuple]]:
        results = []
        for wave in waves:
            x = self.features(wave)[None]
            mask = np.ones((1, x.shape[2]), dtype=bool)
            out = dict(zip(self.outputs, self.head.run(None, {"audio": x, "mask": mask})))
            dims = out["dims"][0] if "dims" in out else None
            probs = out["probs"][0] if "probs" in out else None
            results.append(outputs_to_result(dims, probs, self.scale, self.classes))
        return results, [(None, None)] * len(waves)
