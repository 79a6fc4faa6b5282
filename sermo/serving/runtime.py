"""Predictions from an exported model folder (``sermo export``), without torch: onnxruntime,
numpy, soundfile and soxr only (a test imports this module in a process without torch).

>>> from sermo.serving.runtime import OnnxPredictor  # doctest: +SKIP
>>> OnnxPredictor("exported/").predict_file("speech.wav").valence  # doctest: +SKIP
>>> OnnxPredictor("exported-fusion/").predict_file("speech.wav", transcript="the words").valence  # doctest: +SKIP

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

from sermo.data.frames import bucket_length, pool_frames
from sermo.serving.core import BasePredictor, ExportError, outputs_to_result


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
        enc, text = self.meta.get("encoder"), self.meta.get("text")

        def session(name: str):
            return ort.InferenceSession(str(self.folder / name), options, providers=["CPUExecutionProvider"])

        try:
            self.encoder = session("encoder.onnx") if enc else None
            self.text_encoder = session("text_encoder.onnx") if text else None
            self.head = session("head.onnx")
            self.tokenizer = _tokenizer(self.folder / "tokenizer.json", int(text["max_tokens"])) if text else None
        except Exception as exc:  # onnxruntime and tokenizers raise their own types for missing or damaged parts
            raise ExportError(f"{self.folder}: a part cannot be loaded ({str(exc).splitlines()[0][:200]}); export "
                              "the bundle again") from None
        self.kind = enc["kind"] if enc else None
        self.dtype = np.dtype(enc["dtype"]) if enc else None
        self.pool = int(enc["pool"]) if enc else 1
        self.padding = enc.get("padding") if enc else None
        # Whisper's windows, as the export says sermo's encoder cuts them
        self.window, self.min_samples = (int(enc["window_samples"]), int(enc["min_samples"])) \
            if enc and self.kind == "whisper" else (0, 0)
        self.text_dtype = np.dtype(text["dtype"]) if text else None
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

    def text_features(self, transcript: str) -> tuple[np.ndarray, np.ndarray]:
        """``(layers, tokens, dim)`` float32 and each token's word index (-1: a special token) of
        a transcript, as the feature store would hold them."""
        assert self.tokenizer is not None and self.text_encoder is not None and self.text_dtype is not None
        enc = self.tokenizer.encode(str(transcript).split(), is_pretokenized=True)
        ids = np.asarray([enc.ids], dtype=np.int64)
        hidden = self.text_encoder.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        words = np.asarray([-1 if w is None else int(w) for w in enc.word_ids], dtype=np.int64)
        return np.asarray(hidden, dtype=np.float32).astype(self.text_dtype).astype(np.float32), words

    def features(self, wave: np.ndarray) -> np.ndarray:
        """``(layers, frames, dim)`` float32: the model's input for 16 kHz samples, as the feature
        store would hold and hand them over."""
        wave = np.asarray(wave, dtype=np.float32)
        if self.encoder is None:
            raise ExportError(f"{self.folder}: this exported model reads no audio features")
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
        assert self.encoder is not None
        if len(wave) < self.min_samples:
            wave = np.pad(wave, (0, self.min_samples - len(wave)))
        step = self.window
        parts = [self.encoder.run(None, {"samples": wave[i:i + step]})[0]
                 for i in range(0, len(wave), step) if len(wave[i:i + step]) >= self.min_samples]
        return np.concatenate(parts, axis=1)

    def _run(self, waves: list[np.ndarray], transcripts: list[str | None]) -> tuple[list[dict], list[tuple]]:
        if self.text_encoder is not None and any(t is None for t in transcripts):
            raise ExportError(f"{self.folder}: this exported model reads a transcript and the runtime has no speech "
                              "recogniser: give each input's transcript (transcript=..., sermo predict --transcript)")
        results = []
        for wave, transcript in zip(waves, transcripts):
            inputs: dict[str, np.ndarray] = {}
            if self.encoder is not None:
                x = self.features(wave)[None]
                inputs.update(audio=x, audio_mask=np.ones((1, x.shape[2]), dtype=bool))
            if self.text_encoder is not None:
                t, words = self.text_features(str(transcript))
                inputs.update(text=t[None], text_mask=np.ones((1, t.shape[1]), dtype=bool), text_words=words[None])
            out = dict(zip(self.outputs, self.head.run(None, inputs)))
            dims = out["dims"][0] if "dims" in out else None
            probs = out["probs"][0] if "probs" in out else None
            results.append(outputs_to_result(dims, probs, self.scale, self.classes))
        used = [(t, "given") if self.text_encoder is not None else (None, None) for t in transcripts]
        return results, used


def _tokenizer(path: Path, max_tokens: int):
    """The text encoder's own tokenizer (the ``tokenizers`` library: no torch), truncating as
    sermo's text encoder does and never padding (one transcript at a time)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    return tok
